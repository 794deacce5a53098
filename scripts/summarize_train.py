"""One small JSON of a `seal train` run for results/: manifest, resolved config, each round's
record (rewards, kept, SFT movement, length and diversity), every reward, and the kept self-edits.

    .venv/bin/python scripts/summarize_train.py results-runs/train-r2 results/squad_restem_cpu.json
"""

import json
import sys
from pathlib import Path

import yaml

from seal.runs import read_jsonl


def main(run: str, out: str) -> None:
    run_dir = Path(run)
    summary = {"run": run_dir.name, "manifest": json.loads((run_dir / "manifest.json").read_text()),
               "config": yaml.safe_load((run_dir / "config.yaml").read_text()), "rounds": [], "rewards": {},
               "kept": {}}
    for rdir in sorted(run_dir.glob("rounds/round_*")):
        if not (rdir / "done.json").exists():
            continue
        summary["rounds"].append(json.loads((rdir / "done.json").read_text()))
        # a control job (restem.reward_against) has no sample, and its copies or permutations
        summary["rewards"][rdir.name] = [{k: r[k] for k in ("passage_id", "sample", "seed", "reward", "control_copies",
                                                            "control_permutations", "seconds") if k in r}
                                         | ({"logprob": r["metrics"]["logprob"]} if "logprob" in r.get("metrics", {})
                                            else {})
                                         for r in read_jsonl(rdir / "rewards.jsonl")]
        samples = {r["passage_id"]: r["completions"] for r in read_jsonl(rdir / "samples.jsonl")}
        summary["kept"][rdir.name] = [{**k, "completion": samples[k["passage_id"]][k["sample"]]}
                                      for k in read_jsonl(rdir / "sft.jsonl")]
    Path(out).write_text(json.dumps(summary, indent=1))
    for r in summary["rounds"]:
        print({k: r.get(k) for k in ("round", "mean_reward", "reward_sd", "n_kept", "n_scored", "n_empty",
                                 "n_unconfirmed_positive",
                                 "kept_logprob_before", "kept_logprob_after", "seconds")},
              {k: r["selfedits"][k] for k in ("mean_tokens", "mean_items", "distinct_2")},
              {"generator_check": r["generator_check"]["after_minus_before"]} if r.get("generator_check") else "")


if __name__ == "__main__":
    main(*sys.argv[1:3])
