"""Would `restem.confirm logprob` have kept the self-edits whose reward replicates? For the
self-edits a `seal train` run kept (scripts/kept_selfedits.py) and scored again under another
seed (`seal evaluate --data KEPT --data.completions KEPT --seed 1 --eval.controls permutations`):
split them by the confirm test on the run's own records (the gold answer's log-prob after the
update above the control's) and give each group's fresh gain over the permutations control,
containment and log-prob, with 95% bootstrap intervals over self-edits. Train passages only.

    python scripts/confirm_rescore.py RUN_DIR KEPT.json RESCORE_DIR results/NAME.json
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from seal.knowledge.task import is_control, logprob_over_control
from seal.runs import read_jsonl
from seal.stats import bootstrap_mean

EXTERNAL, CONTROL = "external", "passage + permutations"


def main(argv: list[str] | None = None) -> int:
    run, kept_path, rescore, out = (Path(a) for a in (argv or sys.argv[1:]))
    kept = json.loads(kept_path.read_text())
    records: dict[tuple[int, str], list[dict]] = {}
    for rdir in (run / "rounds").glob("round_*"):
        for r in read_jsonl(rdir / "rewards.jsonl"):
            records.setdefault((r["round"], r["passage_id"]), []).append(r)
    fresh = {r["key"]: r["metrics"] for r in read_jsonl(rescore / "results.jsonl")}
    groups: dict[str, list[dict]] = {"confirmed": [], "unconfirmed": []}
    for i, k in enumerate(kept):
        recs = [r for r in records[(k["round"], k["passage_id"])] if is_control(r) or r["sample"] == k["sample"]]
        gain = logprob_over_control(recs)
        ext, ctl = (fresh.get(f"{name}/{k['passage_id']}/0") for name in (EXTERNAL, CONTROL))
        if gain is None or ext is None or ctl is None:
            raise SystemExit(f"{kept_path}: record {i} (passage {k['passage_id']}): no control or no fresh score")
        groups["confirmed" if gain > 0 else "unconfirmed"].append(
            {"round": k["round"], "passage_id": k["passage_id"], "sample": k["sample"], "kept_reward": k["kept_reward"],
             "logprob_over_control": gain, "fresh_containment": ext["containment"] - ctl["containment"],
             "fresh_logprob": ext["logprob"] - ctl["logprob"]})
    summary = {}
    for name, rows in groups.items():
        summary[name] = {"n": len(rows), "mean_kept_reward": sum(r["kept_reward"] for r in rows) / len(rows) if rows else None,
                         **{f"fresh_{m}": bootstrap_mean([r[f"fresh_{m}"] for r in rows]) if rows else None
                            for m in ("containment", "logprob")}}
    res = {"run": str(run), "rescore": str(rescore), "rescore_seed": json.loads((rescore / "summary.json").read_text())["seed"],
           "kept_sha256": hashlib.sha256(kept_path.read_bytes()).hexdigest(),
           "test": "restem.confirm logprob on the run's records: the kept self-edit's gold-answer log-prob after its "
                   "update above its permutations control's (seed of the run)",
           "fresh": "gain of the kept self-edit's update over the passage + the same permuted copies, under the "
                    "rescore's seed (per self-edit, then the group's mean and 95% bootstrap interval)",
           "groups": summary, "rows": groups}
    out.write_text(json.dumps(res, indent=1) + "\n")
    for name, s in summary.items():
        c, lp = s["fresh_containment"], s["fresh_logprob"]
        if not s["n"]:
            print(f"{name}: none kept")
            continue
        print(f"{name}: {s['n']} kept, fresh containment over the control {c['mean']:+.3f} [{c['lo']:+.3f}, "
              f"{c['hi']:+.3f}], log-prob {lp['mean']:+.3f} [{lp['lo']:+.3f}, {lp['hi']:+.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
