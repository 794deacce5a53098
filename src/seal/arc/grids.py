"""Grid <-> text for a byte-level BPE tokenizer, ARC prompts and a token-budget filter.

Format: one line per row, one digit per cell, no separators, rows joined by ``\\n``::

    input:
    0120
    0340
    output:
    21
    43

Why: the default model (SmolLM2-135M, a GPT2-style byte-level BPE) splits digit runs into
one token per digit and never merges a digit with ``\\n``, so this is exactly one token per
cell plus one per row break: a 10x10 grid is 109 tokens (100 digits + 9 newlines). Separating
cells by spaces (``0 1 2``) costs about twice as many tokens (199 for 10x10) and buys nothing
with this tokenizer. The SEAL paper's Llama-3 tokenizer merges up to three digits into one
token, which is why ARC TTT code written for Llama separates cells; the tokenizer tests check
the one-token-per-cell property for SmolLM2.

A task prompt is the demonstrations, each ``format_pair``, separated by a blank line, then the
test input and ``output:\\n``; the model's answer (and the TTT completion, see
``answer_text``) is the output grid followed by ``\\n``. ``text_to_grid`` reads an answer
back, stopping at the first blank line or ``label:`` line, so a model that runs on into the
next ``input:`` still parses; generation can also stop on the string ``"\\n\\n"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from seal.arc.data import MAX_SIDE, ArcTask, Grid, Pair

INPUT_LABEL = "input:"
OUTPUT_LABEL = "output:"
PAIR_SEPARATOR = "\n\n"
ANSWER_END = "\n"
STOP_STRINGS = ("\n\n",)
"""Strings after which generation of an answer can stop."""

_LABEL_LINE = re.compile(r"^[A-Za-z_][A-Za-z_ ]*:")
_MAX_PARSE_CHARS = 4 * (MAX_SIDE + 1) * MAX_SIDE
"""text_to_grid only looks at this many characters (a 30x30 grid with generous spacing)."""


class Tokenizer(Protocol):
    def encode(self, text: str, /, *args, **kwargs) -> list[int]: ...


def grid_to_text(grid: Grid | Sequence[Sequence[int]]) -> str:
    """Rows of digits joined by newlines, no trailing newline: ``((1, 2), (3, 4))`` -> ``"12\\n34"``."""
    return "\n".join("".join(str(int(c)) for c in row) for row in grid)


def text_to_grid(text: str) -> Grid | None:
    """Parse a model's answer into a Grid, or None when it is not one; never raises.

    Leading whitespace and one leading ``output:`` line are skipped; the grid ends at the
    first blank line, at a ``label:`` line (e.g. the next ``input:``) or at the end of the
    text. Spaces and tabs inside a row are ignored (``0 1 2`` reads as 012); any other
    non-digit makes the answer malformed. Rows must all have the same length and the grid be
    at most 30 x 30.
    """
    try:
        if not isinstance(text, str):
            return None
        text = text[:_MAX_PARSE_CHARS].replace("\r\n", "\n").replace("\r", "\n")
        rows: list[tuple[int, ...]] = []
        for line in text.lstrip().split("\n"):
            stripped = line.strip()
            if not rows and stripped == OUTPUT_LABEL:
                continue
            if not stripped or _LABEL_LINE.match(stripped):
                break
            cells = re.sub(r"[ \t]", "", stripped)
            if not cells.isascii() or not cells.isdigit():
                return None
            if (rows and len(cells) != len(rows[0])) or len(cells) > MAX_SIDE or len(rows) >= MAX_SIDE:
                return None
            rows.append(tuple(int(c) for c in cells))
        return tuple(rows) if rows else None
    except Exception:  # noqa: BLE001 - parsing model output must never crash a run
        return None


def format_grid_block(label: str, grid: Grid) -> str:
    return f"{label}\n{grid_to_text(grid)}"


def format_pair(pair: Pair) -> str:
    """``input:\\n<grid>\\noutput:\\n<grid>``; a pair with no output ends with ``output:\\n``
    (where the model is to write its answer)."""
    head = f"{format_grid_block(INPUT_LABEL, pair.input)}\n{OUTPUT_LABEL}\n"
    return head if pair.output is None else head + grid_to_text(pair.output)


def task_prompt(train_pairs: Iterable[Pair], test_input: Grid) -> str:
    """The demonstrations then the test input, ending with ``output:\\n`` so that the model's
    continuation is the output grid (see ``answer_text``)."""
    parts = [format_pair(p) for p in train_pairs]
    parts.append(format_pair(Pair(test_input, None)))
    return PAIR_SEPARATOR.join(parts)


def answer_text(grid: Grid) -> str:
    """What the model should write after ``task_prompt``: the grid and a final newline."""
    return grid_to_text(grid) + ANSWER_END


def count_tokens(task: ArcTask, tokenizer: Tokenizer) -> int:
    """Tokens of the longest prompt+answer sequence the task produces (one per test pair).

    A test pair without a known output is counted with its input grid standing in for the
    answer (most ARC outputs are no larger than their inputs). Leave-one-out TTT sequences are
    shorter than this (one fewer demonstration); size/repeat augmentations can be longer and
    are filtered separately when training data is built.
    """
    best = 0
    for pair in task.test:
        answer = pair.output if pair.output is not None else pair.input
        text = task_prompt(task.train, pair.input) + answer_text(answer)
        best = max(best, len(token_ids(tokenizer, text)))
    return best


def fits_budget(task: ArcTask, tokenizer: Tokenizer, max_tokens: int) -> bool:
    """Whether every prompt+answer of ``task`` is at most ``max_tokens`` tokens."""
    return count_tokens(task, tokenizer) <= max_tokens


def token_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without BOS/EOS (for tokenizers whose encode takes the keyword)."""
    try:
        return list(tokenizer.encode(text, add_special_tokens=False))
    except TypeError:  # plain callables / tokenizers without the keyword
        return list(tokenizer.encode(text))
