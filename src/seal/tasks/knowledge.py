"""Knowledge incorporation (paper section 4.1): passages -> self-edits -> LoRA -> closed-book QA.

A *context* is a passage (title, text) with its questions. The model writes a self-edit (by
default a list of implications of the passage); the self-edit becomes training sequences; a
LoRA update on them is the inner loop; the updated model answers the passage's questions with
no passage in its prompt.

Parsing a completion into training sequences follows the paper's code: one sequence per line
(per item), the title prefixed to each, and the passage itself appended as one more sequence.
Departures: bullets and list numbers are stripped, a preamble line ("Here are some
implications:") is dropped, lines under 3 words are dropped, `self-qa` pairs a question line
with its answer line into one item, `rewrite` splits on blank lines (or lines if none).

Grading. The paper grades answers with GPT-4.1. We grade locally with SQuAD exact match, F1 and
gold-answer containment on greedy answers, plus the mean per-token log-probability of the gold
answer's own tokens (`logprob`). The question names the passage's title (`Topic: ...`), as the
reference code does. The default reward is the gain in `containment` over the unadapted model:
in the reward study on dev updates (results/reward_table.md) it ranked the accuracy gain of an
independent re-run of the same update best, while the `logprob` gain, smooth and nearly
noise-free, did not track accuracy. `seal evaluate` reports how the log-prob gain tracks
containment on its own passages (`reward_tracking`).

This module is the domain's pieces (data, prompts, parsing, grading, and `QAInnerLoop`: how one
batch of jobs trains and is graded); tasks/knowledge_task.py assembles them into the seal Task
that `seal train` runs, and seal/evaluate.py builds the table from them. Batching, resume and
execution of jobs are the engine's (seal/engine.py `run_inner_jobs`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import EvalConfig, InnerLoopConfig, SelfEditConfig, special_file
from ..inner_loop import Speedups, TrainExample
from ..racing import Race, make_judge


class DataError(ValueError):
    """A data file or record that cannot be used; the message names the file and record."""


@dataclass
class QA:
    question: str
    answer: str
    title: str = ""
    """The passage's title: the QA prompt names it (`Topic: ...`), as the reference code does,
    since every training sequence starts with it and many questions are ambiguous without it."""


@dataclass
class Passage:
    id: str
    title: str
    context: str
    questions: list[QA]
    completions: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- data

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _passage_id(title: str, context: str) -> str:
    return hashlib.sha1((title + "\n" + context).encode()).hexdigest()[:12]


def parse_squad(data, where: str = "<data>", require_questions: bool = True) -> tuple[list[Passage], dict]:
    """Read SEAL's simplified layout or the official SQuAD v1.1 layout.

    Returns (passages, counts). Nothing is dropped without a count: passages with no usable
    question (`skipped_no_questions`; kept, question-less, when `require_questions` is false, as
    `seal adapt` reads documents), questions with an empty question or answer
    (`skipped_questions`), and repeats of a passage (same title and context:
    `merged_duplicates`, their new questions added to the first, `duplicate_questions` dropped).
    Anything structurally wrong raises DataError naming `where` and the record.
    """
    counts = {"passages": 0, "questions": 0, "skipped_no_questions": 0, "skipped_questions": 0,
              "merged_duplicates": 0, "duplicate_questions": 0}
    records = []
    if isinstance(data, dict) and "data" in data:  # official layout
        if not isinstance(data["data"], list):
            raise DataError(f"{where}: 'data' must be a list of articles")
        for ai, art in enumerate(data["data"]):
            if not isinstance(art, dict) or not isinstance(art.get("paragraphs"), list):
                raise DataError(f"{where}: article {ai}: expected an object with a 'paragraphs' list")
            for pi, para in enumerate(art["paragraphs"]):
                rec_where = f"{where}: article {ai} ({art.get('title', '?')!s}), paragraph {pi}"
                if not isinstance(para, dict):
                    raise DataError(f"{rec_where}: expected an object")
                qs = []
                for qi, qa in enumerate(para.get("qas", []) or []):
                    if not isinstance(qa, dict):
                        raise DataError(f"{rec_where}, question {qi}: expected an object")
                    answers = qa.get("answers") or []
                    text = answers[0].get("text") if answers and isinstance(answers[0], dict) else None
                    qs.append({"question": qa.get("question"), "answer": text})
                records.append((rec_where, {"title": art.get("title", ""), "context": para.get("context"),
                                            "questions": qs, "completions": para.get("completions", [])}))
    elif isinstance(data, list):
        for i, rec in enumerate(data):
            records.append((f"{where}: record {i}", rec))
    else:
        raise DataError(f"{where}: expected a list of passages or an object with 'data' (SQuAD v1.1)")

    passages: list[Passage] = []
    by_id: dict[str, Passage] = {}
    for rec_where, rec in records:
        if not isinstance(rec, dict):
            raise DataError(f"{rec_where}: expected an object, got {type(rec).__name__}")
        context = rec.get("context")
        if not isinstance(context, str) or not context.strip():
            raise DataError(f"{rec_where}: missing or empty 'context'")
        title = rec.get("title") or ""
        if not isinstance(title, str):
            raise DataError(f"{rec_where}: 'title' must be a string")
        raw_qs = rec.get("questions")
        if raw_qs is None:
            raw_qs = []
        if not isinstance(raw_qs, list):
            raise DataError(f"{rec_where}: 'questions' must be a list")
        qs = []
        for qi, q in enumerate(raw_qs):
            if not isinstance(q, dict):
                raise DataError(f"{rec_where}, question {qi}: expected an object with 'question' and 'answer'")
            qq, aa = q.get("question"), q.get("answer")
            if isinstance(qq, str) and qq.strip() and isinstance(aa, str) and aa.strip():
                qs.append(QA(qq.strip(), aa.strip()))
            else:
                counts["skipped_questions"] += 1
        comps = rec.get("completions") or []
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise DataError(f"{rec_where}: 'completions' must be a list of strings")
        if not qs and require_questions:
            counts["skipped_no_questions"] += 1
            continue
        title = title.replace("_", " ")
        for qa in qs:
            qa.title = title
        pid = _passage_id(title, context)
        if pid in by_id:  # the same passage again: one passage, the union of its questions
            first = by_id[pid]
            seen = {(q.question, q.answer) for q in first.questions}
            new = [q for q in qs if (q.question, q.answer) not in seen]
            first.questions.extend(new)
            first.completions.extend(c for c in comps if c not in first.completions)
            counts["merged_duplicates"] += 1
            counts["duplicate_questions"] += len(qs) - len(new)
            counts["questions"] += len(new)
            continue
        by_id[pid] = Passage(pid, title, context.strip(), qs, list(comps))
        passages.append(by_id[pid])
        counts["passages"] += 1
        counts["questions"] += len(qs)
    return passages, counts


def describe_counts(counts: dict) -> str:
    """'4 passages, 9 questions (skipped: 1 passage without questions, ...)': what a data file
    gave, and everything left out of it, for the start of a run."""
    text = f"{counts['passages']} passages, {counts['questions']} questions"
    notes = [f"{n} {what}" for key, what in (
        ("skipped_no_questions", "passage(s) without a usable question, left out"),
        ("skipped_questions", "question(s) with an empty question or answer, left out"),
        ("merged_duplicates", "repeated passage(s) merged into their first copy"),
        ("duplicate_questions", "repeated question(s) dropped"),
        ("too_long", "passage(s) too long for the model's context window, left out"),
        ("beyond_offset", "passage(s) before --data.offset or past --data.limit, not used"),
    ) if (n := counts.get(key, 0))]
    return text + (f" ({'; '.join(notes)})" if notes else "")


def load_passages(path: str | Path, require_questions: bool = True) -> tuple[list[Passage], dict]:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such data file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a SQuAD-style JSON file")
    if kind := special_file(path):  # (reading a FIFO or /dev/zero would never end)
        raise DataError(f"{path}: is {kind}, not a data file")
    try:
        data = json.loads(path.read_text(), parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 text file") from None
    except ValueError as e:  # NaN / Infinity, which JSON does not have
        raise DataError(f"{path}: not valid JSON ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    passages, counts = parse_squad(data, str(path), require_questions)
    if not passages:
        raise DataError(f"{path}: no passage" + (" with at least one question" if require_questions else ""))
    return passages, counts


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def select(passages: list[Passage], limit: int, seed: int, offset: int = 0) -> list[Passage]:
    """A deterministic random subset: shuffle with `seed`, skip `offset`, take `limit` (0 = all)."""
    if limit < 0 or offset < 0:
        raise DataError(f"data.limit and data.offset must be >= 0, got {limit} and {offset}")
    if offset >= len(passages):
        raise DataError(f"data.offset {offset} skips all {len(passages)} passages")
    order = list(range(len(passages)))
    random.Random(seed).shuffle(order)
    order = order[offset:]
    if limit:
        order = order[:limit]
    return [passages[i] for i in order]


def load_selection(data_cfg, seed: int, require_questions: bool = True) -> tuple[list[Passage], dict]:
    """The passages a run uses (`data.path`, shuffled with `seed`, `data.offset` skipped,
    `data.limit` kept) and the counts of everything left out, named by the file."""
    passages, counts = load_passages(data_cfg.path, require_questions)
    try:
        chosen = select(passages, data_cfg.limit, seed, data_cfg.offset)
    except DataError as e:
        raise DataError(f"{data_cfg.path}: {e}") from None
    counts["beyond_offset"] = len(passages) - len(chosen)
    counts["used"] = len(chosen)
    return chosen, counts


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


# ----------------------------------------------------------------------------- self-edits

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
_BULLET = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.):]|\(?[a-z][.)]|\(?[A-Z]\))\s+")
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
    from ..models import format_prompt

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
        marker = _BULLET.match(line)
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
            line = _BULLET.sub("", line.strip()).strip()
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
"""Where one sentence ends and the next begins (permuted passages here; chunking in seal/documents.py)."""


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


# ----------------------------------------------------------------------------- QA grading

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
    from ..models import format_prompt

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


# ----------------------------------------------------------------------------- adapt and score

@dataclass
class Job:
    """One inner-loop run: train an adapter on `examples`, then grade it on `questions`."""

    key: str
    passage_ids: list[str]
    examples: list[TrainExample]
    questions: list[QA]
    seed: int
    group: str = ""
    """Jobs train together (one batched forward, `inner.parallel_adapters` at a time) only with
    jobs of the same group: `seal evaluate` groups by condition, so a condition's updates never
    depend on which other conditions run beside them (batch composition changes float
    summation order, and in bf16 that moved greedy answers)."""
    reward_questions: int | None = None
    """How many leading `questions` make a ReSTEM reward (label-free rewards: the probes; the
    data's questions after them are graded beside, for comparison). None: all of them."""


METRICS = ("logprob", "containment", "f1", "em")


def reward_eval_config(eval_cfg):
    """The grading a reward needs: greedy answers only when the reward is computed from them
    (a log-prob reward needs none, and generation is most of the grading's cost)."""
    return dataclasses.replace(eval_cfg, generate=eval_cfg.generate and eval_cfg.reward != "logprob")


def score_rows(model, tok, gen, chat: bool, questions: list[list[QA]], rows: list[int], eval_cfg,
               progress=None, speed=None) -> list[list[dict]]:
    """Grade adapter rows[i] on questions[i], closed-book; per-question metric dicts.

    Each record has the gold answer's mean token log-probability and, with eval_cfg.generate, the
    greedy answer and its grades. With the in-process generator (fp32) both come from one prefill
    of the prompts (`speed.share_prefill`, the default); otherwise the log-probs take a forward of
    their own (inner_loop.answer_logprobs)."""
    from ..generation import HFGenerator
    from ..inner_loop import Speedups, answer_logprobs

    speed = speed or Speedups()
    flat = [(i, qa) for i, qs in enumerate(questions) for qa in qs]
    prompts = [qa_input(tok, qa, chat) for _, qa in flat]
    flat_rows = [rows[i] for i, _ in flat]
    golds = [qa.answer for _, qa in flat]
    answers = [None] * len(flat)
    kw = dict(n=1, max_new_tokens=eval_cfg.max_answer_tokens, temperature=0.0, rows=flat_rows,
              batch_size=eval_cfg.batch_size, progress=progress)
    if eval_cfg.generate and speed.share_prefill and isinstance(gen, HFGenerator) \
            and gen.dtype == "fp32":
        # greedy answers from the pruned decoder (the same tokens as transformers' generate), which
        # scores the gold answers on the answers' own prefill: one forward over the prompts, not two
        outs, lps = dataclasses.replace(gen, decoder="pruned").generate(prompts, score=golds, **kw)
    else:
        lps = answer_logprobs(model, tok, prompts, golds, flat_rows, mask_free=speed.mask_free)
        outs = gen.generate(prompts, **kw) if eval_cfg.generate else None
    if outs is not None:
        answers = [o[0] for o in outs]
    result: list[list[dict]] = [[] for _ in questions]
    for (i, qa), lp, ans in zip(flat, lps, answers):
        rec = {"question": qa.question, "gold": qa.answer, "logprob": lp}
        if ans is not None:
            rec.update(grade(ans, qa.answer), answer=clean_answer(ans))
        result[i].append(rec)
    return result


def mean_metrics(per_question: list[dict]) -> dict[str, float]:
    out = {}
    for m in METRICS:
        vals = [q[m] for q in per_question if m in q]
        if vals:
            out[m] = sum(vals) / len(vals)
    return out


@dataclass
class QAInnerLoop:
    """The knowledge inner loop (seal.task.InnerLoop): train one LoRA adapter per job on its
    examples (`inner`, all adapters of a batch side by side over the frozen base), then grade
    each adapted model closed-book on the job's questions (`grading`).

    `race` (a racing.Race): the jobs of a batch race (successive halving, seal/racing.py); a job
    stopped at a rung gets a result with `raced_out` true, its rung metrics and no final grades.
    `speed`: implementation switches (inner_loop.Speedups) that change only summation order."""

    inner: InnerLoopConfig
    grading: EvalConfig
    race: Race | None = None
    speed: Speedups | None = None

    @property
    def adapters_per_batch(self) -> int:
        return self.inner.parallel_adapters

    def run_batch(self, model, tok, gen, chat, batch: list[Job], done=frozenset()) -> list[tuple[Job, dict]]:
        return train_and_grade(model, tok, gen, chat, batch, self.inner, self.grading, done, self.speed, self.race)


def train_and_grade(model, tok, gen, chat, group: list[Job], inner_cfg, eval_cfg, done=frozenset(), speed=None,
                    race=None) -> list[tuple[Job, dict]]:
    """One batch of the knowledge inner loop (see QAInnerLoop); (job, result) for the jobs not in
    `done`. Every finished adapter is graded, done or not, so that grading batches as before."""
    import time

    from .. import lora
    from ..inner_loop import train_adapters

    t0 = time.time()
    history: list[list[dict]] = [[] for _ in group]
    judge = None
    if race is not None and len(group) > 1 and race.rungs:
        # a log-prob rung needs no answers: no generation, whatever the final reward's metric
        rung_cfg = eval_cfg if race.score == "reward" else dataclasses.replace(eval_cfg, generate=False,
                                                                                reward="logprob")
        judge = make_judge(lambda qs, rows: [mean_metrics(pq) for pq in score_rows(model, tok, gen, chat, qs, rows,
                                                                                 rung_cfg, speed=speed)],
                           [j.questions for j in group], race.score, eval_cfg.reward, race.eta, history)
    lora.attach(model, inner_cfg.lora, len(group))
    try:
        stats = train_adapters(model, tok, [j.examples for j in group], inner_cfg, [j.seed for j in group],
                               speed=speed, judge=judge, rungs=race.rungs if judge else ())
        t1 = time.time()
        finished = [i for i in range(len(group)) if judge is None or stats["epochs_trained"][i] == inner_cfg.epochs]
        graded = dict(zip(finished, score_rows(model, tok, gen, chat, [group[i].questions for i in finished], finished,
                                               eval_cfg, speed=speed)))
    finally:
        lora.detach(model)
    t2 = time.time()
    out = []
    for i, job in enumerate(group):
        if job.key in done:
            continue
        pq = graded.get(i)
        race_info = {"race": {"rungs": history[i], "stopped_at": None if pq is not None else history[i][-1]["epoch"]}} \
            if judge is not None else {}
        out.append((job, {
            "key": job.key, "metrics": mean_metrics(pq) if pq is not None else history[i][-1]["metrics"],
            "questions": pq, "raced_out": pq is None, **race_info,
            "train": {"steps": stats["steps"], "tokens": stats["tokens"][i], "examples": stats["examples"][i],
                      "final_loss": stats["final_loss"][i], "truncated": stats["n_truncated"][i],
                      # tokens the group actually ran (shared sequences once; sum of squared
                      # lengths for attention), split equally over its adapters
                      "executed_tokens": sum(stats["executed_lens"]) / len(group),
                      "executed_sq_tokens": sum(n * n for n in stats["executed_lens"]) / len(group)},
            # wall time of the group, shared equally by its adapters
            "seconds": (t2 - t0) / len(group), "train_seconds": (t1 - t0) / len(group),
        }))
    return out


def base_scores(model, tok, gen, chat: bool, passages: list[Passage], eval_cfg) -> dict[str, list[dict]]:
    """Per-question grades of the unadapted model, by passage id."""
    graded = score_rows(model, tok, gen, chat, [p.questions for p in passages], [-1] * len(passages), eval_cfg)
    return {p.id: g for p, g in zip(passages, graded)}


def sample_selfedits(gen, tok, chat: bool, passages: list[Passage], cfg: SelfEditConfig, k: int, seed: int,
                     done: dict[str, list[str]], on_sampled, progress=None) -> dict[str, list[str]]:
    """k sampled self-edits per passage (temperature/top-p from cfg); passages already in `done`
    (a resumed run) are not sampled again. on_sampled(passage, completions) saves each."""
    from ..generation import sample_resumable

    def prompt_of(p):
        return None if cfg.template == "none" else selfedit_input(tok, p, cfg, chat)

    return sample_resumable(gen, passages, prompt_of, k, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size, seed=seed,
                            done=done, on_sampled=on_sampled, progress=progress)
