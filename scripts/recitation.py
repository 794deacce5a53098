"""How often a knowledge table's closed-book answers recite the passage word for word, row by row.

An answer recites when its first `--words` words (SQuAD-normalized: lower case, no punctuation or
articles) appear in that order in the passage it was trained on. Containment credits a recited
sentence that holds the gold answer as fully as a short answer, so a row can win containment by
making the model say the passage back rather than by teaching the fact in other words; this
script measures that: for each row, the share of answers that recite (mean over passages, 95%
bootstrap interval), containment among reciting and among other answers, and the share of all
answers that contain the gold answer by reciting.

    python scripts/recitation.py RUN_DIR [--data PATH] [--words 6] [--out results/NAME.json]

RUN_DIR is a `seal evaluate` table (results.jsonl, config.yaml); its passages are read again from
the config's data file (or `--data`, the same file elsewhere), chosen as the run chose them.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from seal import knowledge as K
from seal.config import RunConfig, resolve
from seal.knowledge.grading import normalize_answer
from seal.runs import atomic_write_json, read_jsonl
from seal.stats import bootstrap_mean


def recites(answer: str, passage_words: str, n: int) -> bool:
    """Do the answer's first `n` normalized words appear, in order and whole, in the passage
    (`passage_words`: its normalized text)? An answer shorter than `n` words never recites."""
    w = normalize_answer(answer).split()
    return len(w) >= n and f" {' '.join(w[:n])} " in f" {passage_words} "


def answers_by_row(records: list[dict], source: str) -> dict[str, dict[str, list[dict]]]:
    """{row: {passage id: [question records of every update in that row]}} from results.jsonl
    records (each names its row, `condition`, and its `passage_id`)."""
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for i, r in enumerate(records):
        try:
            out[r["condition"]][r["passage_id"]] += r["questions"]
        except (KeyError, TypeError) as e:
            raise SystemExit(f"{source}: record {i + 1}: not a table result ({e})") from None
    return out


def row_recitation(by_passage: dict[str, list[dict]], texts: dict[str, str], n: int, seed: int = 0) -> dict:
    """One row's recitation: the share of answers that recite (mean over passages with an
    interval), containment among them and among the others, and the share of all answers whose
    containment comes from reciting."""
    shares, recited, other = [], [], []
    for pid, questions in by_passage.items():
        if not questions:
            continue
        flags = [recites(q["answer"], texts[pid], n) for q in questions]
        shares.append(sum(flags) / len(flags))
        for q, f in zip(questions, flags):
            (recited if f else other).append(q["containment"])
    n_answers = len(recited) + len(other)
    mean = lambda v: sum(v) / len(v) if v else None  # noqa: E731
    return {"n_passages": len(shares), "n_answers": n_answers, "recite": bootstrap_mean(shares, seed=seed),
            "containment_reciting": mean(recited), "n_reciting": len(recited),
            "containment_other": mean(other), "n_other": len(other),
            "contained_by_reciting": sum(recited) / n_answers if n_answers else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", help="the run's data file, where its config's relative path does not reach")
    ap.add_argument("--words", type=int, default=6, help="leading answer words that must appear in the passage")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.words < 1:
        ap.error(f"--words must be >= 1, got {args.words}")
    results, config = args.run / "results.jsonl", args.run / "config.yaml"
    for f in (results, config):
        if not f.exists():
            raise SystemExit(f"{f}: not found ({args.run} is not a seal evaluate table)")
    cfg = resolve(RunConfig, str(config), {"data.path": args.data} if args.data else {})
    try:
        passages, _ = K.load_selection(cfg.data, cfg.seed)
    except K.DataError as e:
        raise SystemExit(f"{config}: {e} (pass the run's data file with --data)") from None
    texts = {p.id: normalize_answer(p.context) for p in passages}
    rows = answers_by_row(read_jsonl(results), str(results))
    for row, by_passage in rows.items():
        if missing := sorted(set(by_passage) - set(texts)):
            raise SystemExit(f"{results}: row {row!r} has passage {missing[0]}, which {cfg.data.path} with the run's "
                             f"selection does not hold (pass the run's data file with --data)")
    table = {row: row_recitation(by_passage, texts, args.words, cfg.seed) for row, by_passage in rows.items()}
    pct = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    for row, t in table.items():
        r = t["recite"]
        print(f"{row:<40} recite {r['mean']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]  containment: reciting "
              f"{pct(t['containment_reciting'])} ({t['n_reciting']}), other {pct(t['containment_other'])} "
              f"({t['n_other']}); contained by reciting {pct(t['contained_by_reciting'])}")
    if args.out:
        atomic_write_json(args.out, {"run": str(args.run), "data": cfg.data.path, "data_sha256": K.file_sha256(cfg.data.path),
                                     "selection": {"offset": cfg.data.offset, "limit": cfg.data.limit, "seed": cfg.seed},
                                     "words": args.words, "rows": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
