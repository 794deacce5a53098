"""Collect `seal continual` runs into results/: per guard its config, manifest and continual.json,
one Markdown table comparing the guards, the side-by-side forgetting heatmaps (`seal report`),
and the when-to-adapt curve of a probed mixed-stream run.

    .venv/bin/python scripts/continual_table.py --runs results-runs/continual-{merge,replay,gate,per-doc,kl} \
        [--mixed results-runs/continual-mixed] [--out results/continual]

The table's target check is the issue's: a guard's mean over the 8 passages after the 8th edit
above the never-edited model's, while its just-edited score keeps >= 80% of the baseline's
(merge). For containment / F1 the ratio is of the scores; for gold-answer log-prob (negative) it
is of the gains over the never-edited model on the same passages.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

METRICS = ("containment", "f1", "logprob")


def ci(x: dict | None, digits: int = 3) -> str:
    if not x or x.get("mean") is None:
        return "n/a"
    return f"{x['mean']:.{digits}f} [{x['lo']:.{digits}f}, {x['hi']:.{digits}f}]"


def guard_rows(runs: dict[str, dict], metric: str) -> list[str]:
    base = runs.get("merge")
    header = ("| guard | sequences | mean after 8 edits | never edited | gain over never edited "
              "| first passage: after its edit / after 8 | just edited | just edited vs merge "
              "| forgetting (diag - final) | unrelated change | s / sequence | kept / rejected |")
    lines = [f"### {metric}", "", header, "|---" * 12 + "|"]
    for guard, c in runs.items():
        s = c["summary"].get(metric)
        if s is None:
            continue
        first = s["first_retention"]
        je = s["just_edited"]["mean"]
        ratio = "n/a"
        if base is not None and je is not None:
            bje = base["summary"][metric]["just_edited"]["mean"]
            if metric == "logprob":  # gains over the never-edited model on the same passages
                b0 = s["final_mean_base"]["mean"]
                if bje is not None and bje - b0 != 0:
                    ratio = f"{(je - b0) / (bje - b0):.2f} (of the gain)"
            elif bje:
                ratio = f"{je / bje:.2f}"
        comp = c["compute"]
        lines.append(
            f"| {guard} | {c['sequences_done']} | {ci(s['final_mean'])} | {ci(s['final_mean_base'])} | "
            f"{ci(s['final_gain_over_base'])} | {first[0]['mean']:.3f} / {first[-1]['mean']:.3f} | {ci(s['just_edited'])} | "
            f"{ratio} | {ci(s['forgetting'])} | {ci(s['unrelated_change'])} | {comp['seconds_per_sequence']['mean']:.0f} | "
            f"{comp['updates_kept']} / {comp['updates_rejected']} |")
    return lines + [""]


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def curve_lines(w: dict) -> list[str]:
    lines = ["## When to adapt (mixed stream)", "",
             f"{w['items']} updates, {w['repeats']} of them re-presenting a passage already adapted. Rule: {w['rule']}.", "",
             "| signal | AUROC repeat vs new | mean on repeats | mean on new | total gain (containment / logprob) |",
             "|---|---|---|---|---|"]
    for sig, d in w["signals"].items():
        tg = d["total_gain"]
        lines.append(f"| {sig} | {d['auroc_repeat_vs_new']:.3f} | {d['mean_repeat']:.3f} | {d['mean_new']:.3f} | "
                     f"{tg.get('containment', float('nan')):.3f} / {tg.get('logprob', float('nan')):.3f} |")
    lines.append("")
    for sig, d in w["signals"].items():
        lines += [f"### {sig}", "", "| skip when >= | updates skipped | repeats / new skipped | containment gain kept | logprob gain kept |",
                  "|---|---|---|---|---|"]
        for p in d["curve"]:
            k = p["gain_kept"]
            lines.append(f"| {fmt(p['threshold'])} | {p['skipped']:.3f} | {p['repeats_skipped']} / {p['new_skipped']} | "
                         f"{fmt(k.get('containment'))} | {fmt(k.get('logprob'))} |")
        lines.append("")
    return lines


def plot_curve(w: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("logprob", "containment")):
        for sig, d in w["signals"].items():
            pts = [(p["skipped"], p["gain_kept"][metric]) for p in d["curve"] if p["gain_kept"].get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts), marker=".", label=sig)
        share = w["repeats"] / w["items"]
        ax.axvline(share, color="grey", ls=":", lw=1)
        ax.set_xlabel("share of updates skipped")
        ax.set_ylabel(f"share of the {metric} gain kept")
        ax.set_title(f"{metric} (dotted: share of repeats)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--mixed", default="")
    ap.add_argument("--out", default=str(ROOT / "results" / "continual"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict] = {}
    for r in map(Path, args.runs):
        c = json.loads((r / "continual.json").read_text())
        runs[c["guard"]] = c
        dest = out / c["guard"]
        dest.mkdir(exist_ok=True)
        for f in ("config.yaml", "manifest.json", "continual.json", "forgetting.json"):
            if (r / f).exists():
                shutil.copy(r / f, dest / f)
    manifest = json.loads((Path(args.runs[0]) / "manifest.json").read_text())
    intro = (f"Data: `{manifest['data']['path']}` (sha256 `{manifest['data']['sha256']}`), seed {manifest['seed']}; "
             "configs and manifests beside this file, one folder per guard. Each cell: mean over sequences "
             "[95% bootstrap interval over sequences].")
    lines = ["# Continual self-adaptation: forgetting under each guard", "", intro, ""]
    for m in METRICS:
        lines += guard_rows(runs, m)
    if args.mixed:
        mixed = Path(args.mixed)
        c = json.loads((mixed / "continual.json").read_text())
        dest = out / "mixed"
        dest.mkdir(exist_ok=True)
        for f in ("config.yaml", "manifest.json", "continual.json"):
            shutil.copy(mixed / f, dest / f)
        if "when_to_adapt" in c:
            lines += curve_lines(c["when_to_adapt"])
            plot_curve(c["when_to_adapt"], out / "when_to_adapt.png")
    from seal.report import build_report
    build_report([Path(r) for r in args.runs], out / "report")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
