"""Closed-book QA grading: the question prompt (naming the passage's title, as the reference
code does) and the SQuAD-style grades of a greedy answer (exact match, F1, gold containment)."""

from __future__ import annotations

import re
import string
from collections import Counter

from seal.knowledge.passages import QA

QA_PROMPT = "Answer the question with a short phrase, from memory.\n{topic}Question: {question}"
QA_CUE = "Answer:"
"""Ends a plain (non-chat) QA prompt, so that a base model answers instead of continuing the question."""


def qa_prompt(question: str, title: str = "") -> str:
    """The closed-book question (user message). Like the reference code it names the passage's
    title (`Topic: ...`): the title starts every training sequence, so it is what ties the
    question to the facts the update taught."""
    return QA_PROMPT.format(topic=f"Topic: {title}\n" if title else "", question=question)


def qa_input(tok, qa: QA, chat: bool) -> str:
    """The full text the adapted model continues to answer `qa`."""
    from seal.training.models import format_prompt

    return format_prompt(tok, qa_prompt(qa.question, qa.title), chat, cue=QA_CUE)


def normalize_answer(s: str) -> str:
    """SQuAD's normalization: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


# Words that carry no content: left out of coverage (continual.BM25) and of the content words
# a probe's answer must share with its document (probes.supported).
STOPWORDS = frozenset("""
a an the of in on at to for from by with about as into onto over under after before during since until
and or but nor not no so than then that this these those there here it its is are was were be been being
am do does did done have has had having can could will would shall should may might must
what which who whom whose when where why how many much most more some any all each every other such
i you he she we they me him her us them my your his our their mine yours s
one also only just very if else between both either neither own same too
""".split())  # noqa: SIM905 (a word list reads best as text)


def exact_match(pred: str, gold: str) -> float:
    return float(normalize_answer(pred) == normalize_answer(gold))


def f1_score(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def containment(pred: str, gold: str) -> float:
    g = normalize_answer(gold)
    return float(bool(g) and f" {g} " in f" {normalize_answer(pred)} ")


def clean_answer(text: str) -> str:
    """First line of a generated answer, without an 'Answer:' label."""
    line = text.strip().split("\n")[0].strip()
    return re.sub(r"^(answer|a)\s*:\s*", "", line, flags=re.I)


def grade(pred: str, gold: str) -> dict[str, float]:
    pred = clean_answer(pred)
    return {"em": exact_match(pred, gold), "f1": f1_score(pred, gold), "containment": containment(pred, gold)}
