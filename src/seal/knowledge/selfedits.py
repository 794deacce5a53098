"""Self-edits of a passage: the prompt templates, parsing a completion into training items (one
per line, as the paper's code, with the departures in seal/knowledge/__init__.py), and the
training sequences an update uses (the items, the passage, sentence-shuffled copies)."""

from __future__ import annotations

import random
import re

from seal.config import SelfEditConfig
from seal.knowledge.passages import DataError, Passage
from seal.training.inner_loop import TrainExample

TEMPLATES = {
    "implications": (
        "Read the following passage and list several implications that follow from it, directly or "
        "indirectly. Write each implication as a complete, self-contained sentence on its own line.\n\n"
        "Title: {title}\nPassage: {passage}"
    ),
    "implications-long": (
        "Read the following passage and write a long, detailed list of the facts and implications it "
        "contains. Restate every name, number and date explicitly. Write each one as a complete, "
        "self-contained sentence on its own line.\n\nTitle: {title}\nPassage: {passage}"
    ),
    "rewrite": (
        "Rewrite the following passage in your own words, keeping every fact, name, number and date. "
        "Write a few different versions, separated by blank lines.\n\nTitle: {title}\nPassage: {passage}"
    ),
    "self-qa": (
        "Read the following passage and write questions about its facts, each followed by its answer. "
        "Use the format:\nQuestion: ...\nAnswer: ...\n\nTitle: {title}\nPassage: {passage}"
    ),
    "none": "",
}

# A list marker at the start of a line: "-", "*", "•", "1.", "2)", "3:", "(4)", "a.", "b)", "(c)", "D)".
# An uppercase letter followed by a period ("A. ") is deliberately NOT a marker: in generated facts
# it is far more often an initial ("A. J. Smith founded ...") than an "A./B./C." list, and
# stripping it would corrupt the fact. Lowercase "a. " and any letter with ")" stay markers.
BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):]|\(?[a-z][.)]|\(?[A-Z]\))\s+")
_PREAMBLE = re.compile(r"^(here (are|is)|sure|certainly|okay|ok\b|the following|below are|implications?:?$)", re.I)

# A self-QA label at the start of a line (after any list marker or heading "#"): "Question:", "Q:",
# "Question 1:", "Q1.", "Q #2)", "Answer:", "A1:", with markdown emphasis around or inside it
# ("**Question:**", "**Q1**:", "*A:*", "__Answer:__"); group 3 is empty when the label is the whole
# line ("**Question 1**"). Which delimiter each spelling may use is decided in _qa_label.
# (Lines are whitespace-normalised first, so "\s?" is enough and cannot backtrack badly.)
_QA_LABEL = re.compile(r"^[*_]*(question|answer|q|a)\s?#?\s?(\d{1,3})?\s?[*_]*\s?([:.)]|$)[*_]*\s?", re.I)
# An answer label inside a question line ("Q: Who? A: x", "**Question:** Who? **Answer:** x"): it
# needs a colon and a space before it, and the short form must be a capital "A", so that
# "a:" inside ordinary text is not mistaken for one.
_QA_INLINE_ANSWER = re.compile(r"\s[*_]*(?:(?i:answer)|A)\s?#?\s?\d{0,3}\s?[*_]*\s?:[*_]*(?:\s|$)")


# What a plain (non-chat) prompt ends with, so that a base model starts the self-edit instead of
# continuing the passage (a chat model gets the assistant turn instead).
CUES = {"implications": "Implications:\n", "implications-long": "Facts and implications:\n",
        "rewrite": "Rewritten passage:\n", "self-qa": "Questions and answers:\n", "custom": ""}


def selfedit_input(tok, passage: Passage, cfg: SelfEditConfig, chat: bool) -> str:
    """The full text the generator continues to write a self-edit (sampling and SFT share it)."""
    from seal.training.models import format_prompt

    return format_prompt(tok, selfedit_prompt(passage, cfg), chat, cue=CUES.get(cfg.template, ""))


def selfedit_prompt(passage: Passage, cfg: SelfEditConfig) -> str:
    """The user message asking for a self-edit (before any chat template)."""
    # the template name and a custom template's placeholders were checked when the config was built
    tpl = cfg.custom_template if cfg.template == "custom" else TEMPLATES[cfg.template]
    return tpl.format(title=passage.title, passage=passage.context) if tpl else ""


def _qa_label(line: str):
    """("q" | "a", text after the label, is_bare_letter_dot) for a labelled line, else None."""
    m = _QA_LABEL.match(line)
    if not m:
        return None
    word, num, delim = m.group(1).lower(), m.group(2), m.group(3)
    short = len(word) == 1
    if delim == ":" or (num and delim in ".)"):
        pass  # "Q:", "Answer:", "Q1.", "Question 2)"
    elif not delim and (num or not short):
        pass  # the label is the whole line: "**Question 1**", "### Answer", "Q1"
    elif short and delim == ".":
        pass  # "Q. ..." / "A. ...": the caller accepts "A." only as the answer to a "Q." question
    else:
        return None  # "Question. ...", "A) ...", a lone "Q"
    return word[0], line[m.end():].strip(), short and delim == "." and not num


def _unwrap(s: str) -> str:
    """Drop markdown emphasis left around a question or answer ("**Green and white.**")."""
    return s.strip().strip("*_").strip()


def _parse_self_qa(text: str) -> list[str]:
    """Pair questions with answers in a self-QA completion, whatever the labels look like.

    A line-by-line state machine: a labelled question waits for the next answer label; a bare
    label ("Answer:" alone) takes the next non-empty line as its text; an answer with no pending
    question takes the unlabelled line just before it if that looks like a question (ends with
    "?" or was a numbered list item: "1. Who ...?" then "Answer: ..."). Anything else is skipped.
    """
    items: list[str] = []
    q = None          # the question waiting for its answer
    q_dotted = False  # it was labelled "Q." -- so an "A." line answers it (rather than being an initial)
    waiting = None    # "q" / "a": a bare label was seen; its text is the next non-empty line
    candidate = None  # an unlabelled line that may be the question of a following answer label

    def emit(question: str, answer: str) -> None:
        question, answer = _unwrap(question), _unwrap(answer)
        if question and answer:
            items.append(f"Question: {question}\nAnswer: {answer}")

    for raw in text.split("\n"):
        line = re.sub(r"^#+\s?", "", " ".join(raw.split()))  # collapse whitespace; drop a "###" heading
        marker = BULLET.match(line)
        numbered = bool(marker and any(c.isdigit() for c in marker.group()))
        if marker:
            line = line[marker.end():]
        if not line:
            continue
        label = _qa_label(line)
        if label and label[0] == "a" and label[2] and not (q is not None and q_dotted):
            label = None  # "A. J. Smith ...": an initial, not an answer label
        if label is None:
            if waiting == "q":
                q, waiting = line, None
            elif waiting == "a":
                emit(q, line)
                q, waiting = None, None
            else:
                candidate = line if numbered or line.endswith("?") else None
            continue
        kind, rest, dotted = label
        if kind == "q":
            inline = _QA_INLINE_ANSWER.search(rest)
            if inline:  # "Q: Who founded it? A: salt traders"
                emit(rest[:inline.start()], rest[inline.end():])
                q, waiting = None, None
            else:
                q, waiting = (rest, None) if _unwrap(rest) else (None, "q")
            q_dotted = dotted
        else:
            if q is None:
                q = candidate
            if q is None:
                waiting = None  # an answer to nothing
            elif _unwrap(rest):
                emit(q, rest)
                q, waiting = None, None
            else:
                waiting = "a"
        candidate = None
    return items


def parse_selfedit(completion: str, template: str) -> list[str]:
    """Split a completion into training items (without title or passage). Never raises."""
    if not isinstance(completion, str):
        return []
    text = completion.replace("\r\n", "\n").strip()
    if not text:
        return []
    if template == "rewrite":
        parts = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
        if len(parts) == 1:
            parts = [line.strip() for line in text.split("\n") if line.strip()]
        items = [" ".join(p.split()) for p in parts]
    elif template == "self-qa":
        items = _parse_self_qa(text)
    else:
        items = []
        for line in text.split("\n"):
            line = BULLET.sub("", line.strip()).strip()
            if not line:
                continue
            items.append(line)
    out = []
    for i, item in enumerate(items):
        if i == 0 and (_PREAMBLE.match(item) or (item.endswith(":") and len(item.split()) < 12)):
            continue
        if len(item.split()) < 3:
            continue
        out.append(item)
    return out


def training_examples(passage: Passage, items: list[str], include_passage: bool) -> list[TrainExample]:
    """Title-prefixed items, plus the passage itself (as the paper trains on both). The passage
    weighs as much as the items together under `inner.steps packed-weighted` (its weight is the
    number of items; each item's is 1)."""
    seqs = [TrainExample(f"{passage.title}\n{item}" if passage.title else item) for item in items]
    if include_passage:
        seqs.append(passage_example(passage, weight=max(1, len(items))))
    return seqs


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
"""Where one sentence ends and the next begins (permuted passages here; chunking in seal/documents/reading.py)."""


def permuted_passages(passage: Passage, n: int, seed: int) -> list[str]:
    """`n` restatements of the passage with its sentences in seeded random orders (a passage of
    one sentence is returned as it is)."""
    sentences = [x for x in SENTENCE_END.split(passage.context.strip()) if x.strip()]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        order = list(range(len(sentences)))
        for _ in range(3):  # a different order from the passage's own, where a few shuffles find one
            rng.shuffle(order)
            if order != sorted(order):
                break
        out.append(" ".join(sentences[i] for i in order))
    return out


def selfedit_examples(passage: Passage, items: list[str], cfg: SelfEditConfig, seed: int) -> list[TrainExample]:
    """A self-edit update's training sequences: `training_examples` (the items and, with
    `cfg.include_passage`, the passage) plus `cfg.permutations` sentence-shuffled passages."""
    out = training_examples(passage, items, cfg.include_passage)
    title = f"{passage.title}\n" if passage.title else ""
    return out + [TrainExample(title + text) for text in permuted_passages(passage, cfg.permutations, seed)]


def pooled_items(completions: list[str], template: str) -> list[str]:
    """The items of several self-edits of one passage as one update's data (`selfedit.pool`):
    in order, a repeated item once."""
    return list(dict.fromkeys(item for c in completions for item in parse_selfedit(c, template)))


def passage_example(passage: Passage, weight: float = 1.0) -> TrainExample:
    """The passage as one title-prefixed training sequence."""
    return TrainExample(f"{passage.title}\n{passage.context}" if passage.title else passage.context, weight=weight)


def fit_to_context(passages: list[Passage], tok, max_len: int, cfg: SelfEditConfig, chat: bool,
                   where: str) -> tuple[list[Passage], list[str]]:
    """Leave out passages whose self-edit prompt plus `cfg.max_new_tokens` does not fit the
    model's context window (`max_len` tokens): past it a model's positions are untrained, and a
    huge passage would run for minutes before producing anything. Returns (kept, titles left out);
    raises DataError when none fits. (`seal adapt` chunks long documents instead.)"""
    if not max_len:
        return passages, []
    kept, left = [], []
    for p in passages:
        text = selfedit_input(tok, p, cfg, chat) if cfg.template != "none" else p.context
        n = len(tok(text, add_special_tokens=False)["input_ids"]) + (cfg.max_new_tokens if cfg.template != "none" else 0)
        (kept if n <= max_len else left).append(p)
    if not kept:
        raise DataError(f"{where}: every passage is too long for the model's context window ({max_len} tokens, "
                        f"with {cfg.max_new_tokens} new tokens of self-edit); nothing to run")
    return kept, [p.title or p.id for p in left]
