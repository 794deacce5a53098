"""Write the self-edits a `seal train` run kept as a passages file, to score them again.

    python scripts/kept_selfedits.py RUN_DIR OUT.json [--rounds 1,2]

Each record is a kept self-edit's passage (title, context, questions) with that self-edit as its
one `completions` entry, plus the round and the reward it was kept for. `seal evaluate` reads the
file as both its data and its external self-edits:

    seal evaluate --data OUT.json --data.completions OUT.json --seed 1 \\
        --eval.controls permutations ...

With another seed than the run's, every source of randomness but the self-edit text is drawn
again (the inner loop's seed and the passage's permuted copies), so the `external` row against
its controls is the kept reward measured afresh: how much of it was selection on noise (the
winner's curse of keeping the best of k noisy rewards). OUT.json holds data from the run's
data file: write it outside the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from seal.knowledge.passages import load_passages
from seal.runs import read_jsonl


def kept_records(run: Path, rounds: list[int] | None = None) -> list[dict]:
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    passages = {p.id: p for p in load_passages(cfg["data"]["path"])[0]}
    out = []
    for rdir in sorted((run / "rounds").glob("round_*"), key=lambda d: int(d.name.split("_")[1])):
        rnd = int(rdir.name.split("_")[1])
        if rounds and rnd not in rounds or not (rdir / "sft.jsonl").exists():
            continue
        samples = {rec["passage_id"]: rec["completions"] for rec in read_jsonl(rdir / "samples.jsonl")}
        for i, kept in enumerate(read_jsonl(rdir / "sft.jsonl")):
            pid = kept["passage_id"]
            if pid not in passages:
                raise SystemExit(f"{rdir / 'sft.jsonl'}: record {i}: passage {pid} is not in {cfg['data']['path']}")
            p = passages[pid]
            out.append({"title": p.title, "context": p.context,
                        "questions": [{"question": q.question, "answer": q.answer} for q in p.questions],
                        "completions": [samples[pid][kept["sample"]]],
                        "round": rnd, "passage_id": pid, "sample": kept["sample"], "kept_reward": kept["reward"]})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--rounds", default="", help="comma-separated rounds (default: every finished round)")
    a = ap.parse_args(argv)
    rounds = [int(r) for r in a.rounds.split(",") if r.strip()] or None
    recs = kept_records(a.run, rounds)
    if not recs:
        print(f"{a.run}: no kept self-edits", file=sys.stderr)
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(recs, indent=1))
    by_round = {}
    for r in recs:
        by_round[r["round"]] = by_round.get(r["round"], 0) + 1
    print(f"{a.out}: {len(recs)} kept self-edits ({', '.join(f'round {k}: {v}' for k, v in by_round.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
