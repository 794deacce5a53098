"""Side by side: `seal evaluate` runs that differ in their inner loop (e.g. `inner.steps`), as one
Markdown table and one JSON file under results/.

    python scripts/inner_steps_table.py --out results/inner_steps runs/steps-sequence runs/steps-packed ...

Per run and condition: closed-book containment and gold-answer log-prob (mean over passages with
95% bootstrap interval), the paired gains over passage-only and over each compute-matched control,
the mean optimizer steps and trained tokens per update, and seconds per update (training +
grading, as the run measured them).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml


def cpu_name() -> str:
    from seal.bench.inner_loop import machine_info

    return machine_info(0)["cpu_model"]


def run_rows(run: Path) -> dict:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    secs: dict[str, list[float]] = {}
    for line in (run / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        secs.setdefault(r["condition"], []).append(r["seconds"])
    rows = {}
    for cond in summary["order"]:
        c = summary["conditions"][cond]
        rows[cond] = {"metrics": {m: c["metrics"].get(m) for m in ("containment", "logprob")},
                      "steps_mean": c.get("steps_mean"), "tokens_mean": c.get("tokens_mean"),
                      "seconds_per_update": sum(secs[cond]) / len(secs[cond]) if cond in secs else None,
                      "n_passages": c["n_passages"],
                      "gains": {key: summary[key][cond] for key in summary
                                if key.startswith("gain_vs_") and cond in summary[key]}}
    return {"run": run.name, "inner": cfg["inner"], "selfedit": cfg["selfedit"], "controls": cfg["eval"]["controls"],
            "data": manifest["data"], "seed": manifest["seed"], "git_rev": manifest.get("git_rev"),
            "data_offset": cfg["data"]["offset"], "data_limit": cfg["data"]["limit"], "rows": rows}


def per_passage(run: Path, condition: str, metric: str) -> dict[str, float]:
    """A condition's metric per passage (mean over its updates), from passages.jsonl."""
    out = {}
    for line in (run / "passages.jsonl").read_text().splitlines():
        p = json.loads(line)
        vals = [m[metric] for k, m in p["updates"].items() if k.rsplit("/", 2)[0] == condition and metric in m]
        if vals:
            out[p["passage_id"]] = sum(vals) / len(vals)
    return out


def paired_across(runs: list[Path], condition: str = "self-edits") -> dict:
    """Each later run's `condition` against the first run's, paired by passage (the same
    self-edits when the runs share seed and writer: only the inner loop differs)."""
    from seal.stats import paired_bootstrap

    out = {}
    for metric in ("containment", "logprob"):
        first = per_passage(runs[0], condition, metric)
        for run in runs[1:]:
            other = per_passage(run, condition, metric)
            ids = sorted(set(first) & set(other))
            out.setdefault(run.name, {})[metric] = paired_bootstrap([other[i] for i in ids], [first[i] for i in ids])
    return out


def fmt(v: dict | None, signed: bool = False, digits: int = 3) -> str:
    if not v or v.get("mean") is None:
        return ""
    s = "+" if signed else ""
    return f"{v['mean']:{s}.{digits}f} [{v['lo']:{s}.{digits}f}, {v['hi']:{s}.{digits}f}]"


def num(x: float | None, digits: int) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def markdown(runs: list[dict]) -> str:
    r0 = runs[0]
    lines = [f"# Inner-loop variants side by side ({r0['data_limit']} passages of {r0['data']['path']}, offset "
             f"{r0['data_offset']}, data sha256 {str(r0['data']['sha256'])[:12]}, seed {r0['seed']}, CPU {cpu_name()})",
             "", "Closed-book containment and gold-answer log-prob per token, mean over passages [95% bootstrap "
             "interval]; gains are paired over the same passages. steps / tokens: mean optimizer steps and trained "
             "tokens per update; s/update: training + grading wall seconds per update as the run measured them "
             "(two single-thread worker processes; other work shared the 2 cores, so compare within a table).", "",
             "| run (inner.steps) | condition | containment | log-prob | vs passage (containment) | "
             "vs steps control | vs tokens control | steps | tokens | s/update |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        label = f"{r['run']} ({r['inner']['steps']})"
        for cond, row in r["rows"].items():
            g = row["gains"]
            gains = [fmt((g.get(k) or {}).get("containment"), True)
                     for k in ("gain_vs_passage", "gain_vs_steps_control", "gain_vs_tokens_control")]
            nums = [num(row["steps_mean"], 1), num(row["tokens_mean"], 0), num(row["seconds_per_update"], 1)]
            lines.append(f"| {label} | {cond} | {fmt(row['metrics']['containment'])} | "
                         f"{fmt(row['metrics']['logprob'], digits=2)} | " + " | ".join(gains + nums) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", required=True, help="results/NAME: writes NAME.md and NAME.json")
    a = ap.parse_args()
    runs = [run_rows(r) for r in a.runs]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    across = paired_across(a.runs)
    out.with_suffix(".json").write_text(json.dumps({"cpu": cpu_name(), "runs": runs,
                                                    f"self-edits_vs_{a.runs[0].name}": across}, indent=1))
    text = markdown(runs) + f"\nThe self-edits row of each run against {a.runs[0].name}'s, paired by passage " \
        "(the same self-edits; only the inner loop differs):\n\n| run | containment | log-prob |\n|---|---|---|\n"
    text += "".join(f"| {name} | {fmt(d['containment'], True)} | {fmt(d['logprob'], True, 2)} |\n" for name, d in across.items())
    out.with_suffix(".md").write_text(text)
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
