"""Tables (JSON + Markdown) and a plot from `scripts/inner_sweep.py` runs.

    .venv/bin/python scripts/inner_sweep_report.py results-runs/sweep --out results/inner_sweep
    .venv/bin/python scripts/inner_sweep_report.py results-runs/rewards --out results/reward_table

Every mean is over passages (each passage's mean over its questions), with a 95% bootstrap
interval over passages. The reward study correlates each candidate reward measured at one
inner-loop seed with the accuracy gain measured at the *other* seed (so a candidate cannot win by
sharing the same update's noise with the target), and reports the noise floor: the correlation of
each candidate with itself across the two seeds, and the mean absolute seed-to-seed difference.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from seal.runs import read_jsonl
from seal.stats import bootstrap_mean, sd, spearman

METRICS = ("containment", "f1", "logprob")


def candidates(rec: dict) -> dict[str, float]:
    """Candidate rewards of one update, all gains over the unadapted model on the passage's questions."""
    g = rec["gain"]
    return {"logprob": g["logprob"], "f1": g["f1"], "containment": g["containment"],
            # a mix: the dense log-prob gain, plus a bonus for answers that became right
            "logprob+2*containment": g["logprob"] + 2 * g["containment"]}


def arm_table(recs: list[dict]) -> dict:
    by_arm = defaultdict(list)
    for r in recs:
        by_arm[r["arm"]].append(r)
    out = {}
    for arm, rs in by_arm.items():
        rs.sort(key=lambda r: r["passage_id"])
        row = {"n_updates": len(rs), "seconds_per_update": sum(r["seconds"] for r in rs) / len(rs),
               "train_seconds_per_update": sum(r["train_seconds"] for r in rs) / len(rs),
               "train_tokens_per_update": sum(r["train"]["tokens"] for r in rs) / len(rs),
               "items_per_update": sum(r["n_items"] for r in rs) / len(rs)}
        for m in METRICS:
            row[f"{m}_gain"] = bootstrap_mean([r["gain"][m] for r in rs])
            row[m] = sum(r["metrics"][m] for r in rs) / len(rs)
        out[arm] = row
    return out


def reward_study(recs: list[dict]) -> dict:
    """Candidates at seed s vs accuracy gains at seed 1-s, over the same (template, passage)."""
    by = {(r["data"], r["passage_id"], r["seed"]): r for r in recs if not r.get("alone")}
    pairs = [(by[(d, p, 0)], by[(d, p, 1)]) for (d, p, s) in by if s == 0 and (d, p, 1) in by]
    if not pairs:
        return {}
    table = {}
    for cand in candidates(pairs[0][0]):
        row = {}
        for target in ("containment", "f1"):
            # both directions (seed 0 -> 1 and 1 -> 0), pooled
            x = [candidates(a)[cand] for a, b in pairs] + [candidates(b)[cand] for a, b in pairs]
            y = [b["gain"][target] for a, b in pairs] + [a["gain"][target] for a, b in pairs]
            row[f"spearman_vs_{target}_gain_other_seed"] = spearman(x, y)
        c0 = [candidates(a)[cand] for a, _ in pairs]
        c1 = [candidates(b)[cand] for _, b in pairs]
        # within a passage (what ReSTEM's best-of-k needs): rank the passage's updates (passage
        # only and each template) by the candidate at one seed, against accuracy at the other
        within = []
        for pid in sorted({a["passage_id"] for a, _ in pairs}):
            pp = [(a, b) for a, b in pairs if a["passage_id"] == pid]
            for s_from, s_to in ((0, 1), (1, 0)):
                rho = spearman([candidates(x[s_from])[cand] for x in pp], [x[s_to]["gain"]["containment"] for x in pp])
                if rho is not None:  # undefined when accuracy ties across the passage's updates
                    within.append(rho)
        row["within_passage_spearman_vs_containment_gain_other_seed"] = sum(within) / len(within) if within else None
        row["within_passage_n"] = len(within)
        row["test_retest_spearman"] = spearman(c0, c1)
        row["mean_abs_seed_difference"] = sum(abs(u - v) for u, v in zip(c0, c1)) / len(pairs)
        row["sd_across_updates"] = sd(c0 + c1)
        table[cand] = row
    # the same-update correlation (what `seal evaluate` reports as reward_tracking)
    same = {cand: spearman([candidates(r)[cand] for r in recs], [r["gain"]["containment"] for r in recs])
            for cand in candidates(recs[0])}
    out = {"n_pairs": len(pairs), "n_updates": len(recs), "candidates": table,
           "same_update_spearman_vs_containment_gain": same}
    # batch composition: the same implications updates alone vs in batches of 5
    alone = {r["passage_id"]: r for r in recs if r.get("alone")}
    mates = {r["passage_id"]: r for r in recs if r["data"] == "implications" and r["seed"] == 0 and not r.get("alone")}
    common = sorted(set(alone) & set(mates))
    if common:
        lp = [abs(alone[p]["metrics"]["logprob"] - mates[p]["metrics"]["logprob"]) for p in common]
        flips = sum(qa["answer"] != qb["answer"] for p in common
                    for qa, qb in zip(alone[p]["questions"], mates[p]["questions"]))
        nq = sum(len(alone[p]["questions"]) for p in common)
        out["batch_composition"] = {"n_passages": len(common), "mean_abs_logprob_difference": sum(lp) / len(lp),
                                    "max_abs_logprob_difference": max(lp), "answers_changed": flips,
                                    "questions": nq}
    return out


def markdown(manifest: dict, arms: dict, study: dict) -> str:
    lines = [f"# {manifest['plan']}: {len(manifest['passage_ids'])} dev passages "
             f"(data sha256 {manifest['data_sha256'][:12]}, offset {manifest['argv']['offset']}, seed "
             f"{manifest['argv']['seed']}, dtype {manifest['dtype']})", "",
             "Gains over no adaptation, mean over passages [95% bootstrap interval]. s/update: wall "
             "seconds of training + grading with answer generation, one torch thread, taken while other "
             "runs shared the 2 CPU cores (compare within a table only).", "",
             "| arm | containment gain | F1 gain | log-prob gain | s/update | train tokens |", "|---|---|---|---|---|---|"]
    for arm, r in arms.items():
        cells = [f"{r[f'{m}_gain']['mean']:+.3f} [{r[f'{m}_gain']['lo']:+.3f}, {r[f'{m}_gain']['hi']:+.3f}]"
                 for m in METRICS]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {r['seconds_per_update']:.1f} | "
                     f"{r['train_tokens_per_update']:.0f} |")
    if study:
        lines += ["", f"## Reward candidates ({study['n_pairs']} self-edit x passage pairs, two seeds each)", "",
                  "| candidate | Spearman vs containment gain (other seed) | vs F1 gain (other seed) | "
                  "within-passage Spearman vs containment gain (other seed) | "
                  "test-retest Spearman | mean abs seed difference |", "|---|---|---|---|---|---|"]
        for cand, r in study["candidates"].items():
            w = r["within_passage_spearman_vs_containment_gain_other_seed"]
            lines.append(f"| {cand} | {r['spearman_vs_containment_gain_other_seed']:.3f} | "
                         f"{r['spearman_vs_f1_gain_other_seed']:.3f} | "
                         f"{'n/a' if w is None else f'{w:.3f}'} (n={r['within_passage_n']}) | "
                         f"{r['test_retest_spearman']:.3f} | {r['mean_abs_seed_difference']:.3f} |")
        if "batch_composition" in study:
            b = study["batch_composition"]
            lines += ["", f"Batch composition (same update alone vs in a batch of 5, {b['n_passages']} passages): "
                          f"mean |log-prob difference| {b['mean_abs_logprob_difference']:.4f} "
                          f"(max {b['max_abs_logprob_difference']:.4f}), greedy answers changed on "
                          f"{b['answers_changed']}/{b['questions']} questions."]
    return "\n".join(lines) + "\n"


def plot(arms: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, m in zip(axes, ("containment", "logprob")):
        for arm, r in arms.items():
            g = r[f"{m}_gain"]
            marker = "o" if arm.endswith("passage") or "/passage" in arm else "s"
            ax.errorbar(r["seconds_per_update"], g["mean"], yerr=[[g["mean"] - g["lo"]], [g["hi"] - g["mean"]]],
                        fmt=marker, capsize=3)
            ax.annotate(arm, (r["seconds_per_update"], g["mean"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_xlabel("seconds per update (train + grade)")
        ax.set_ylabel(f"{m} gain over no adaptation")
    fig.suptitle("Inner-loop settings: accuracy gained vs compute (o passage only, s implications)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--out", required=True, help="path prefix: writes .json, .md (and .png for a sweep)")
    args = ap.parse_args(argv)
    run = Path(args.run)
    manifest = json.loads((run / "manifest.json").read_text())
    recs = read_jsonl(run / "updates.jsonl")
    arms = arm_table(recs)
    study = reward_study(recs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"manifest": manifest, "arms": arms, "reward_study": study,
               "command": f"python scripts/inner_sweep.py --plan {manifest['plan']} --data {manifest['data']} "
                          f"--offset {manifest['argv']['offset']} --limit {manifest['argv']['limit']} --out {run}"}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    out.with_suffix(".md").write_text(markdown(manifest, arms, study))
    plot(arms, out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
