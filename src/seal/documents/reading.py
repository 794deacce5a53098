"""Your own documents for `seal adapt`: reading them, and cutting long ones into chunks.

A document is a plain-text or Markdown file (its title: the first Markdown heading, else the
file name), or one passage of a SQuAD-style JSON file (either layout of
`tasks.knowledge.parse_squad`; questions, if any, are kept beside it but never needed). Every
file is checked before any model loads, and a file that cannot be a document is refused with
one line naming it: missing, a folder, empty, binary (a NUL byte), or not UTF-8 text.

A document longer than one update can hold (the model's context window, `inner.max_seq_len`,
`adapt.chunk_tokens`: see `adapt.chunk_budget`) is split into chunks of at most that many
tokens, at paragraph boundaries where it can, else at sentence boundaries, else between words,
and each chunk gets its own adapter under the document's title.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from seal import knowledge as K
from seal.config import RunConfig, special_file
from seal.knowledge.probes import IN_CONTEXT_PROMPT, PROBE_PROMPT
from seal.training.models import format_prompt

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text", ".rst", "")


@dataclass
class Document:
    source: str
    """The file, and for a SQuAD file the record (`notes.json#3`)."""
    title: str
    text: str
    sha256: str
    """sha256 of the source file's bytes."""
    questions: list[K.QA] = field(default_factory=list)
    """Labelled questions a SQuAD file carries (optional; `seal adapt` records how the update does on them)."""


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_documents(paths: list[str], max_bytes: int | None = None) -> list[Document]:
    """Every document in `paths`, in order; K.DataError naming the first file that is not usable
    (files over `max_bytes` are refused before they are read)."""
    if not paths:
        raise K.DataError("seal adapt needs at least one FILE (plain text, Markdown, or a SQuAD JSON file)")
    docs: list[Document] = []
    for name in paths:
        docs.extend(read_document(Path(name), max_bytes))
    return docs


def read_document(path: Path, max_bytes: int | None = None) -> list[Document]:
    raw = _read_bytes(path, max_bytes)
    sha = hashlib.sha256(raw).hexdigest()
    text = _decode(path, raw)
    if path.suffix.lower() == ".json":
        return _squad_documents(path, text, sha)
    title, body = split_title(text, path)
    if not body.strip():
        raise K.DataError(f"{path}: empty document (a title and no text)")
    return [Document(str(path), title, body.strip(), sha)]


def _read_bytes(path: Path, max_bytes: int | None = None) -> bytes:
    if not path.exists():
        raise K.DataError(f"{path}: no such file")
    if path.is_dir():
        raise K.DataError(f"{path}: is a folder; give text, Markdown or SQuAD JSON files")
    if kind := special_file(path):
        raise K.DataError(f"{path}: is {kind}, not a regular file; give text, Markdown or SQuAD JSON files")
    if max_bytes is not None and (size := path.stat().st_size) > max_bytes:
        raise K.DataError(f"{path}: {size / 2**20:.1f} MiB, larger than adapt.max_document_mb "
                          f"({max_bytes / 2**20:g} MiB); split the file or raise the setting")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise K.DataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not raw.strip():
        raise K.DataError(f"{path}: empty document")
    return raw


def _decode(path: Path, raw: bytes) -> str:
    if b"\x00" in raw[:65536]:
        raise K.DataError(f"{path}: a binary file, not text (it holds NUL bytes)")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise K.DataError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); "
                          "convert it, e.g. iconv -f latin1 -t utf-8") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_title(text: str, path: Path) -> tuple[str, str]:
    """(title, body): the first Markdown heading (`# Title`, removed from the body) when the text
    starts with one, else the file name without suffix (`harbor_notes.md` -> `harbor notes`)."""
    lines = text.strip().split("\n")
    m = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", lines[0])
    if m:
        return m.group(1).strip(), "\n".join(lines[1:]).strip()
    return re.sub(r"[_\-]+", " ", path.stem).strip() or path.name, text.strip()


def _squad_documents(path: Path, text: str, sha: str) -> list[Document]:
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise K.DataError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except ValueError as e:
        raise K.DataError(f"{path}: not valid JSON ({e})") from None
    passages, _ = K.parse_squad(data, str(path), require_questions=False)
    if not passages:
        raise K.DataError(f"{path}: no passage in this SQuAD-style file")
    return [Document(f"{path}#{i}", p.title or f"{path.stem} {i}", p.context, sha, p.questions)
            for i, p in enumerate(passages)]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


# ----------------------------------------------------------------------------- chunks

def chunk_text(text: str, n_tokens: Callable[[str], int], budget: int) -> list[str]:
    """`text` cut into chunks of at most `budget` tokens (as `n_tokens` counts them), in order,
    losing no word: whole paragraphs packed together while they fit; a paragraph longer than
    the budget by sentences; a sentence longer than it by words (a single word longer than the
    budget stays whole)."""
    if budget < 1:
        raise ValueError(f"chunk budget must be >= 1 token, got {budget}")
    text = text.strip()
    if n_tokens(text) <= budget:
        return [text]
    pieces: list[tuple[str, str]] = []  # (joiner before it, piece) at the finest level needed
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if n_tokens(para) <= budget:
            pieces.append(("\n\n", para))
            continue
        for k, sent in enumerate(s for s in K.SENTENCE_END.split(para) if s.strip()):
            joiner = "\n\n" if k == 0 else " "
            if n_tokens(sent) <= budget:
                pieces.append((joiner, sent))
                continue
            runs = _pack([(" ", w) for w in sent.split()], n_tokens, budget)  # a sentence too long: by words
            pieces += [(joiner if j == 0 else " ", run) for j, run in enumerate(runs)]
    return _pack(pieces, n_tokens, budget)


def _pack(pieces: list[tuple[str, str]], n_tokens: Callable[[str], int], budget: int) -> list[str]:
    """Consecutive (joiner, piece) pairs joined greedily into runs of at most `budget` tokens
    (a piece longer than the budget on its own stays a run of its own)."""
    runs: list[str] = []
    cur = ""
    for joiner, piece in pieces:
        candidate = f"{cur}{joiner}{piece}" if cur else piece
        if cur and n_tokens(candidate) > budget:
            runs.append(cur)
            cur = piece
        else:
            cur = candidate
    if cur:
        runs.append(cur)
    return runs


def chunk_budget(cfg: RunConfig, tok, chat: bool, window: int, title: str) -> tuple[int, str]:
    """(tokens of document text one update can hold, the setting that limits it): the training
    sequence (`inner.max_seq_len`), and within the context window the prompts that carry the
    whole chunk (self-edit, probe writing, in-context answers) with what they generate."""
    def n(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    empty = K.Passage("", title, "", [])
    limits = [(cfg.inner.max_seq_len - n(f"{title}\n") - 2, "inner.max_seq_len")]
    if window:
        se = K.selfedit_input(tok, empty, cfg.selfedit, chat) if cfg.selfedit.template != "none" else ""
        limits += [
            (window - n(se) - cfg.selfedit.max_new_tokens, "the context window with selfedit.max_new_tokens"),
            (window - n(format_prompt(tok, PROBE_PROMPT.format(n=cfg.adapt.probes, title=title, passage=""), chat))
             - cfg.adapt.probe_max_new_tokens, "the context window with adapt.probe_max_new_tokens"),
            (window - n(format_prompt(tok, IN_CONTEXT_PROMPT.format(title=title, passage="", question=""), chat))
             - cfg.adapt.probe_max_new_tokens - cfg.eval.max_answer_tokens, "the context window with an in-context answer"),
            (window - 2 * n(f"{title}\n") - cfg.selfedit.max_new_tokens - 4, "the context window with a self-edit line"),
        ]
    if cfg.adapt.chunk_tokens:
        limits.append((cfg.adapt.chunk_tokens, "adapt.chunk_tokens"))
    return min(limits)


@dataclass
class Chunk:
    doc: Document
    text: str
    index: int
    count: int
    key: str = field(init=False)

    def __post_init__(self):
        self.key = doc_key(self.doc.title, self.text)


def chunk_documents(cfg: RunConfig, tok, chat: bool, window: int, docs: list[Document]) -> list[Chunk]:
    """Every document as chunks one update can hold, saying which were split and why;
    K.DataError naming a document that would need more than `adapt.max_chunks`."""
    out = []
    for d in docs:
        budget, why = chunk_budget(cfg, tok, chat, window, d.title)
        if budget < 16:
            raise K.DataError(f"{d.source}: one update can hold only {budget} tokens of text ({why}); "
                              "raise it or shorten the title")

        def n(text: str) -> int:
            return len(tok(text, add_special_tokens=False)["input_ids"])
        parts = chunk_text(d.text, n, budget)
        if len(parts) > cfg.adapt.max_chunks:
            raise K.DataError(f"{d.source}: {n(d.text)} tokens would need {len(parts)} chunks of <= {budget} tokens, "
                              f"more than adapt.max_chunks={cfg.adapt.max_chunks}; split the file or raise it")
        if len(parts) > 1:
            print(f"{d.source}: {n(d.text)} tokens, longer than one update can hold ({budget} tokens, limited by {why}); "
                  f"split into {len(parts)} chunks, one adapter each")
        out += [Chunk(d, t, i, len(parts)) for i, t in enumerate(parts)]
    return out


def doc_key(title: str, text: str) -> str:
    return text_sha256(f"{title}\n{text}")
