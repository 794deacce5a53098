"""Collect a run folder's small, traceable summary into one JSON under results/ (never weights).

    python scripts/collect_result.py RUN_DIR results/NAME.json
"""

import json
import sys
from pathlib import Path

import yaml


def collect(run: Path) -> dict:
    out = {"run": run.name, "manifest": json.loads((run / "manifest.json").read_text()),
           "config": yaml.safe_load((run / "config.yaml").read_text())}
    if (run / "summary.json").exists():
        out["summary"] = json.loads((run / "summary.json").read_text())
    rounds = sorted(run.glob("rounds/round_*/done.json"))
    if rounds:
        out["rounds"] = [json.loads(p.read_text()) for p in rounds]
        out["rewards"] = {p.parent.name: [{k: r[k] for k in ("passage_id", "sample", "seed", "reward", "seconds")}
                                          for r in map(json.loads, (p.parent / "rewards.jsonl").read_text().splitlines())]
                          for p in rounds}
    if (run / "metrics.jsonl").exists():  # how the run was resumed (argv, code revision, settings it grew)
        resumes = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                   if r.get("event") == "resume"]
        if resumes:
            out["resumes"] = resumes
    for sub in ("eval",):
        if (run / sub / "manifest.json").exists():
            out[sub] = collect(run / sub)
    return out


if __name__ == "__main__":
    run, dest = Path(sys.argv[1]), Path(sys.argv[2])
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(collect(run), indent=1))
    print(dest)
