"""Oversight of what `seal adapt` learns: a faithfulness filter on self-edits, and review.

Faithfulness. A self-edit line the document does not support would teach the model something
nobody wrote. Each line (a training item) is scored by the model itself, as the pointwise
mutual information between the line and the document, per token:

    gain(line) = mean log p(line | title, document) - mean log p(line | title)

both as the training sequence reads (`<title>\\n<line>`). A line that restates or follows from
the document is much likelier once the model has read it (copying and paraphrase raise every
token); an invented one gains little. Lines with gain < `adapt.faithfulness_min_gain` are
dropped before training and recorded with their gains (shown by `seal history`). The score is
a heuristic of the model's own reading, not a judgement of truth: a weak model passes fluent
restatements and may drop a correct but distant implication. On the default 135M model the
signal is weak (scripts/faithfulness_calibration.py: AUROC 0.67 between 6 supported and 6
invented hand-written lines; a copied name lends every line a large gain), so the filter
catches lines that drift far from the document, not a single wrong word. A yes/no judgement
prompt was tried and gave the same log-odds to every line at 135M; it is not offered.

Review. With `--review`, `seal adapt` prints each document's self-edit (kept and dropped
lines), its probe figures and the gate's, and commits only on a `y` typed on stdin.
"""

from __future__ import annotations

import sys

from seal import knowledge as K
from seal.training.inner_loop import answer_logprobs


def faithfulness_gains(model, tok, passage: K.Passage, items: list[str]) -> list[float]:
    """gain(line) for each self-edit item (see the module docstring), under the model as it is."""
    if not items:
        return []
    head = f"{passage.title}\n" if passage.title else ""
    with_doc = f"{head}{passage.context}\n\n{head}"
    lp_doc = answer_logprobs(model, tok, [with_doc] * len(items), items, [-1] * len(items))
    lp_alone = answer_logprobs(model, tok, [head or "\n"] * len(items), items, [-1] * len(items))
    return [a - b for a, b in zip(lp_doc, lp_alone)]


def filter_items(model, tok, passage: K.Passage, items: list[str], min_gain: float) -> tuple[list[str], list[dict]]:
    """(items kept, [{"line", "gain"} for every item, with `kept`]) under the threshold."""
    gains = faithfulness_gains(model, tok, passage, items)
    scored = [{"line": it, "gain": g, "kept": g >= min_gain} for it, g in zip(items, gains)]
    return [s["line"] for s in scored if s["kept"]], scored


def ask_yes(prompt: str, stream=None) -> bool:
    """Print `prompt`, read one line from stdin: True only for `y` / `yes` (EOF: no)."""
    print(prompt, end="", flush=True)
    line = (stream or sys.stdin).readline()
    if not line:
        print()
    return line.strip().lower() in ("y", "yes")
