"""Knowledge passages: the SQuAD-style data file (parsed and checked record by record) and the
seeded selection of passages a run uses."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from seal.config import special_file


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
