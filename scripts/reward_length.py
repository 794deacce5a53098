"""Does a self-edit's length buy its reward? For a `seal train` run (finished or not): per round,
the rewards scored so far, the Spearman correlation of each self-edit's training sequences (under
`inner.steps sequence` its optimizer steps are sequences x epochs) with its reward, pooled and
within a passage, and the length of the self-edit best-positive would keep against the sampled
ones, over the passages whose k self-edits are all scored (ranked as the round ranks them: by the
reward less its control's when there is one). With restem.reward_against steps-control or
permutations-control, also each self-edit's reward less its control's (mean, 95% interval, share
above it).

    python scripts/reward_length.py RUN_DIR results/NAME.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import yaml

from seal.knowledge.task import control_key, is_control, record_key
from seal.runs import read_jsonl
from seal.stats import bootstrap_mean, spearman


def controls(recs: list[dict]) -> dict[str, float]:
    """The control jobs' rewards (restem.reward_against) by job key (`record_key`)."""
    return {record_key(r): r["reward"] for r in recs if is_control(r)}


def control_stats(recs: list[dict], control: dict[str, float], against: str, perms: int) -> dict:
    """With restem.reward_against steps-control or permutations-control: each self-edit's reward
    less its control's, as the round's selection sees it, with its 95% bootstrap interval over
    self-edits; and the updates' mean length."""
    own = [r for r in recs if not is_control(r) and r.get("reward") is not None]
    gains = [r["reward"] - control[key] for r in own if (key := control_key(r, against, perms)) in control]
    if not gains:
        return {}
    ci = bootstrap_mean(gains)
    kind = against.removesuffix("-control")
    return {"n_paired_with_control": len(gains), f"mean_vs_{kind}_control": ci["mean"],
            f"vs_{kind}_control_lo": ci["lo"], f"vs_{kind}_control_hi": ci["hi"],
            f"frac_above_{kind}_control": sum(g > 0 for g in gains) / len(gains),
            "mean_tokens": sum(r["train"]["tokens"] for r in own) / len(own)}


def round_stats(path: Path, k: int, against: str, perms: int) -> dict:
    recs = read_jsonl(path)
    control = controls(recs)
    paired = control_stats(recs, control, against, perms)

    def selected_by(r: dict) -> float:
        """What best-positive ranks by: the reward, less its control's when the run has them."""
        return r["reward"] - control.get(control_key(r, against, perms) or "", 0.0)

    recs = [r for r in recs if r.get("reward") is not None and not is_control(r)]
    by_passage: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by_passage[r["passage_id"]].append(r)
    length = [r["train"]["examples"] for r in recs]
    reward = [r["reward"] for r in recs]
    within = [rho for v in by_passage.values()
              if (rho := spearman([r["train"]["examples"] for r in v], [r["reward"] for r in v])) is not None]
    complete = [v for v in by_passage.values() if len(v) == k]
    kept = [max(v, key=lambda r: (selected_by(r), r["metrics"].get("logprob", 0.0))) for v in complete]
    kept = [r for r in kept if selected_by(r) > 0]
    return {"n_scored": len(recs), "n_passages": len(by_passage), "n_complete_passages": len(complete),
            "mean_reward": sum(reward) / len(reward) if reward else None,
            "frac_positive": sum(x > 0 for x in reward) / len(reward) if reward else None,
            "spearman_sequences_vs_reward": spearman(length, reward),
            "spearman_within_passage_mean": sum(within) / len(within) if within else None,
            "spearman_within_passage_n": len(within),
            "kept_mean_sequences": sum(r["train"]["examples"] for r in kept) / len(kept) if kept else None,
            "sampled_mean_sequences": (sum(r["train"]["examples"] for v in complete for r in v) / (k * len(complete))
                                       if complete else None),
            "mean_sequences": sum(length) / len(length) if length else None, **paired}


def main() -> None:
    run, dest = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    out = {"run": run.name, "config": cfg, "seed": manifest["seed"], "data": manifest["data"],
           "git_rev": manifest.get("git_rev"), "rounds": {}}
    for f in sorted(run.glob("rounds/round_*/rewards.jsonl")):
        out["rounds"][f.parent.name] = {"finished": (f.parent / "done.json").exists(),
                                        **round_stats(f, cfg["selfedit"]["k"],
                                                      cfg["restem"].get("reward_against", "no-adaptation"),
                                                      cfg["selfedit"].get("permutations", 0))}
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1))
    print(json.dumps(out["rounds"], indent=1))


if __name__ == "__main__":
    main()
