"""Choose `continual.router_min_coverage`: how much of a question's IDF mass its best-matching seen
passage must hold before the question goes to that passage's adapter (per-doc guard).

    .venv/bin/python scripts/router_coverage.py [--data ../shared/data/squad/dev.json] [--out results/router_coverage.json]

Uses dev passages 100-199 of the seed-0 shuffle, which no continual run draws from (they use
40-87). In groups of 16: the first 1, 2, 4 or 8 passages are "seen" (a stream's first steps to its
eighth) and build the BM25 index; their own questions should be routed to them, the questions of
passages 9-16 (other topics) to the base model. Prints and saves the coverage quantiles of both
and, per threshold and number of seen passages, the share of each that is routed. No model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from seal import knowledge as K
from seal.knowledge.routing import BM25, question_query
from seal.runs import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "squad" / "dev.json"))
    ap.add_argument("--out", default=str(ROOT / "results" / "router_coverage.json"))
    ap.add_argument("--offset", type=int, default=100)
    ap.add_argument("--limit", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    passages, _ = K.load_passages(args.data)
    passages = K.select(passages, args.limit, args.seed, args.offset)

    def q10(xs):
        return [round(x, 3) for x in statistics.quantiles(xs, n=10)] if len(xs) > 2 else xs

    thresholds = [0.1, 0.2, 0.3, 0.4, 0.5]
    out: dict = {"data": {"path": args.data, "sha256": K.file_sha256(args.data), "offset": args.offset,
                          "limit": args.limit, "seed": args.seed}, "by_seen": []}
    for n_seen in (1, 2, 4, 8):
        own, other, other_same_title, right = [], [], [], 0
        for g in range(0, len(passages) - 15, 16):
            seen, rest = passages[g : g + n_seen], passages[g + 8 : g + 16]
            index = BM25([f"{p.title}\n{p.context}" for p in seen])
            for i, p in enumerate(seen):
                for q in p.questions:
                    best, cov = index.best(question_query(q))
                    own.append(cov)
                    right += best == i
            titles = {p.title for p in seen}
            for p in rest:  # passages of the same article as a seen one are reported apart
                (other_same_title if p.title in titles else other).extend(
                    index.best(question_query(q))[1] for q in p.questions)
        out["by_seen"].append({
            "seen": n_seen, "own_questions": len(own), "own_best_is_own_passage": right / len(own),
            "other_questions": len(other), "other_same_article_questions": len(other_same_title),
            "coverage_deciles": {"own": q10(own), "other": q10(other), "other_same_article": q10(other_same_title)},
            "routed_share": [{"min_coverage": t, "own": sum(c >= t for c in own) / len(own),
                              "other": sum(c >= t for c in other) / len(other),
                              "other_same_article": (sum(c >= t for c in other_same_title) / len(other_same_title)
                                                     if other_same_title else None)} for t in thresholds]})
    atomic_write_json(Path(args.out), out)
    for b in out["by_seen"]:
        print(f"{b['seen']} seen passage(s): {b['own_questions']} own questions (best passage is their own: "
              f"{b['own_best_is_own_passage']:.3f}), {b['other_questions']} on other topics, "
              f"{b['other_same_article_questions']} on other passages of a seen article")
        for r in b["routed_share"]:
            same = "n/a" if r["other_same_article"] is None else f"{r['other_same_article']:.3f}"
            print(f"  min_coverage {r['min_coverage']:.2f}: routed to an adapter: own {r['own']:.3f}, "
                  f"other topics {r['other']:.3f}, same article {same}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
