"""The versioned adapter registry behind `seal adapt` / `ask` / `history` / `rollback`.

On disk (one folder, `adapt.registry`):

    registry.sqlite      meta (format version, model, current version), versions, documents
                         (text, source sha256, self-edit, probes, metrics), which documents each
                         version holds, and an event log (commits, rollbacks)
    adapters/<id>/       one LoRA adapter per document, in the PEFT layout:
                         adapter_config.json + adapter_model.safetensors with PEFT key names
                         (base_model.model.<module>.lora_A.weight), so plain `peft` loads it:
                         PeftModel.from_pretrained(base_model, "<registry>/adapters/<id>")
    lock                 held (fcntl.flock) by the one process that may change the registry

A version is a set of documents (each with its adapter) over the frozen base model; version 0
is the base model alone. A new version holds its parent's documents plus the new ones.

Atomic commits. Nothing of a version is visible before one SQLite transaction makes it so:
`commit` first writes each adapter to `adapters/.tmp-<id>/`, fsyncs its files and the folder,
renames it to `adapters/<id>/` and fsyncs `adapters/`; only then does one transaction insert
the version and its documents and flip `current`. A process killed at any moment (SIGKILL
included) leaves either the old state or the new one; at worst an adapter folder no version
names, which the next writer removes (`sweep`). Committed adapter folders are never deleted,
so a reader (`seal ask`) needs no lock.

One writer at a time. `seal adapt` and `seal rollback` hold an exclusive `flock` on `lock` for
their whole run; a second one is refused at once with one line naming the holder's pid, or
waits up to `adapt.lock_wait` seconds. The lock goes with the process, however it ends.

Format. `meta.format_version` is written at creation; a registry of a newer format than
`FORMAT_VERSION` is refused (one line), never misread.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

FORMAT_VERSION = 1
DB_NAME = "registry.sqlite"
LOCK_NAME = "lock"
ADAPTERS = "adapters"
PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE versions (
    id INTEGER PRIMARY KEY, parent INTEGER, created TEXT NOT NULL, summary TEXT NOT NULL);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY, version INTEGER NOT NULL, source TEXT NOT NULL, title TEXT NOT NULL,
    text TEXT NOT NULL, sha256 TEXT NOT NULL, text_sha256 TEXT NOT NULL, chunk INTEGER NOT NULL,
    chunks INTEGER NOT NULL, adapter TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE members (
    version INTEGER NOT NULL, document INTEGER NOT NULL, PRIMARY KEY (version, document));
CREATE TABLE events (
    id INTEGER PRIMARY KEY, time TEXT NOT NULL, kind TEXT NOT NULL, version INTEGER, detail TEXT NOT NULL);
"""


class RegistryError(RuntimeError):
    """A registry that cannot be used as asked; the message names its folder and the version."""


class UnfinishedRegistry(RegistryError):
    """A registry folder whose database has no version yet: never finished, or being created
    right now by a `seal adapt` that holds the lock."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclass
class DocumentFields:
    """What the registry keeps of a document (or of one chunk of a long one)."""

    source: str
    title: str
    text: str
    sha256: str
    """sha256 of the source file's bytes."""
    text_sha256: str
    chunk: int
    chunks: int


@dataclass
class DocumentRow(DocumentFields):
    """A committed document: its row id, the version that added it, its adapter folder's name,
    and its record (self-edits, probes, metrics, the gate's figures)."""

    id: int
    version: int
    adapter: str
    record: dict


@dataclass
class NewDocument(DocumentFields):
    """A document `commit` adds, and the adapter it brings (weights in seal's
    `lora.adapter_state` naming, and the LoRA shape they were trained with)."""

    weights: dict[str, torch.Tensor]
    rank: int
    alpha: float
    targets: tuple[str, ...]
    record: dict


# ----------------------------------------------------------------------------- PEFT files

def peft_state(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """seal's adapter weights (`<module>.lora_A`, `[r, d_in]`) under PEFT's key names
    (`base_model.model.<module>.lora_A.weight`, same shapes): PEFT's LoRA layer computes
    W x + (lora_alpha / r) * lora_B(lora_A(x)), the same update as `lora.LoRALinear`."""
    out = {}
    for key, w in weights.items():
        module, _, part = key.rpartition(".")
        out[f"base_model.model.{module}.{part}.weight"] = w.detach().to("cpu", torch.float32).contiguous()
    return out


def seal_state(peft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `peft_state`."""
    out = {}
    for key, w in peft.items():
        if not (key.startswith("base_model.model.") and key.endswith(".weight")):
            raise RegistryError(f"unexpected key {key!r} in a PEFT adapter")
        out[key[len("base_model.model."):-len(".weight")]] = w
    return out


def peft_config(rank: int, alpha: float, targets: tuple[str, ...], base_model: str) -> dict:
    """adapter_config.json for a plain LoRA (no dropout, no bias) that PEFT reads as ours."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": rank, "lora_alpha": alpha, "target_modules": sorted(targets), "lora_dropout": 0.0,
            "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True, "modules_to_save": None}


def write_adapter_folder(folder: Path, weights: dict[str, torch.Tensor], config: dict) -> None:
    """Write a PEFT adapter folder atomically: into a hidden temporary sibling, each file fsynced,
    then renamed into place (and the parent fsynced). `folder` must not exist."""
    from safetensors.torch import save_file

    tmp = folder.with_name(f".tmp-{folder.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(peft_state(weights), str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
    (tmp / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    for name in (PEFT_WEIGHTS, PEFT_CONFIG):
        _fsync_path(tmp / name)
    _fsync_path(tmp)
    os.rename(tmp, folder)
    _fsync_path(folder.parent)


def read_adapter_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(seal-named weights, adapter_config) of a PEFT adapter folder."""
    from safetensors.torch import load_file

    try:
        config = json.loads((folder / PEFT_CONFIG).read_text())
        weights = seal_state(load_file(str(folder / PEFT_WEIGHTS)))
    except (OSError, ValueError) as e:
        raise RegistryError(f"{folder}: cannot read the adapter ({e})") from None
    return weights, config


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the registry

class Registry:
    """An open registry folder. `Registry.open(path)` reads one; `Registry.open(path, create=True,
    model=...)` makes it on first use. Writers call `lock()` first."""

    def __init__(self, path: Path, db: sqlite3.Connection):
        self.path = path
        self.db = db
        self._lock_fd: int | None = None

    # -- opening

    @classmethod
    def open(cls, path: str | Path, create: bool = False, model: str = "", lock_wait: float | None = None) -> Registry:
        """Open the registry at `path`. With `create`, a missing or empty folder becomes a new
        registry (version 0, the base `model`); with `lock_wait` set, the writer's lock is taken
        before anything is read or created (so two creators never race)."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RegistryError(f"{path}: is a file, not a registry folder")
        db_file = path / DB_NAME
        if not create and not db_file.exists():
            raise RegistryError(f"{path}: no registry here (no {DB_NAME}); `seal adapt FILE --registry {path}` makes one")
        if create:
            if path.is_dir() and not db_file.exists() and any(p.name not in (LOCK_NAME, ADAPTERS) for p in path.iterdir()):
                raise RegistryError(f"{path}: exists and is not a seal registry (no {DB_NAME}); name a new or empty folder")
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RegistryError(f"{path}: cannot create the registry folder ({e.strerror or e})") from None
        reg = cls(path, _connect(db_file))
        if lock_wait is not None:
            reg.lock(lock_wait)
        if not reg._initialized():
            if not create:
                raise UnfinishedRegistry(f"{path}: the registry was never finished (no version yet); run seal adapt")
            if reg._lock_fd is None:
                raise RuntimeError("creating a registry needs its lock")
            reg._initialize(model)
        reg._check_format()
        return reg

    def _initialized(self) -> bool:
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return False
            raise RegistryError(f"{self.path / DB_NAME}: cannot read ({e})") from None
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"{self.path / DB_NAME}: not a readable registry database ({e})") from None
        return row is not None

    def _initialize(self, model: str) -> None:
        """Version 0 (the base model, no adapters) in one transaction with the schema: a process
        killed here leaves an empty database, which the next writer initializes again."""
        (self.path / ADAPTERS).mkdir(exist_ok=True)
        with self._transaction():
            tables = [r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for t in tables:  # a half-made schema cannot exist (DDL is transactional); be safe anyway
                self.db.execute(f"DROP TABLE {t}")
            for stmt in SCHEMA.strip().split(";"):
                if stmt.strip():
                    self.db.execute(stmt)
            now = _now()
            self.db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format_version", str(FORMAT_VERSION)), ("model", model), ("created", now), ("current", "0")])
            self.db.execute("INSERT INTO versions VALUES (0, NULL, ?, ?)",
                            (now, json.dumps({"note": "the base model, no adapters"})))
            self.db.execute("INSERT INTO events (time, kind, version, detail) VALUES (?, 'create', 0, ?)",
                            (now, json.dumps({"model": model})))

    def _check_format(self) -> None:
        raw = self.meta("format_version")
        try:
            version = int(raw)
        except (TypeError, ValueError):
            raise RegistryError(f"{self.path}: unreadable registry format {raw!r}") from None
        if version > FORMAT_VERSION:
            raise RegistryError(f"{self.path}: registry format {version} is newer than this seal reads "
                                f"({FORMAT_VERSION}); upgrade seal to use it")

    def close(self) -> None:
        self.db.close()
        self.unlock()

    # -- the writer's lock

    def lock(self, wait: float = 0.0) -> None:
        """Take the exclusive writer's lock, waiting up to `wait` seconds; RegistryError when
        another process holds it."""
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    os.close(fd)
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    waited = f" after waiting {wait:g} s" if wait else ""
                    raise RegistryError(
                        f"{self.path}: another seal adapt or rollback{holder} is changing this registry{waited}; "
                        "try again when it ends (or wait for it: --adapt.lock_wait SECONDS)") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- reading

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    @property
    def model(self) -> str:
        return self.meta("model") or ""

    @property
    def current(self) -> int:
        return int(self.meta("current"))

    def version_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM versions ORDER BY id")]

    def version(self, vid: int) -> dict:
        row = self.db.execute("SELECT id, parent, created, summary FROM versions WHERE id = ?", (vid,)).fetchone()
        if row is None:
            ids = self.version_ids()
            raise RegistryError(f"{self.path}: no version {vid} (versions: {_ranges(ids)})")
        return {"id": row[0], "parent": row[1], "created": row[2], "summary": json.loads(row[3])}

    def documents(self, vid: int) -> list[DocumentRow]:
        """The documents version `vid` holds, in the order they were added."""
        self.version(vid)  # names a missing version
        rows = self.db.execute(
            "SELECT d.source, d.title, d.text, d.sha256, d.text_sha256, d.chunk, d.chunks, d.id, d.version, d.adapter, "
            "d.record FROM documents d JOIN members m ON m.document = d.id WHERE m.version = ? ORDER BY d.id", (vid,))
        return [DocumentRow(*r[:10], json.loads(r[10])) for r in rows]

    def introduced(self, vid: int) -> list[DocumentRow]:
        """The documents version `vid` added (not inherited from its parent)."""
        return [d for d in self.documents(vid) if d.version == vid]

    def events(self) -> list[dict]:
        return [{"id": r[0], "time": r[1], "kind": r[2], "version": r[3], "detail": json.loads(r[4])}
                for r in self.db.execute("SELECT id, time, kind, version, detail FROM events ORDER BY id")]

    def adapter_path(self, adapter: str) -> Path:
        return self.path / ADAPTERS / adapter

    def load_adapter(self, doc: DocumentRow) -> tuple[dict[str, torch.Tensor], dict]:
        return read_adapter_folder(self.adapter_path(doc.adapter))

    # -- writing (under the lock)

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("changing a registry needs its lock (Registry.lock)")

    def commit(self, parent: int, new: list[NewDocument], summary: dict, base_model_path: str = "") -> int:
        """Add a version: `parent`'s documents plus `new`, made current. Adapter folders first
        (each atomic), then one transaction; returns the new version's id. `base_model_path` goes
        into each adapter_config.json (where plain peft finds the base model; default: the
        registry's model name)."""
        self._require_lock()
        self.version(parent)
        names = []
        for doc in new:
            name = uuid.uuid4().hex[:16]
            write_adapter_folder(self.adapter_path(name), doc.weights,
                                 peft_config(doc.rank, doc.alpha, doc.targets, base_model_path or self.model))
            names.append(name)
        with self._transaction():
            vid = self.db.execute("SELECT MAX(id) FROM versions").fetchone()[0] + 1
            now = _now()
            self.db.execute("INSERT INTO versions VALUES (?, ?, ?, ?)", (vid, parent, now, json.dumps(summary)))
            self.db.execute("INSERT INTO members SELECT ?, document FROM members WHERE version = ?", (vid, parent))
            for doc, name in zip(new, names):
                cur = self.db.execute(
                    "INSERT INTO documents (version, source, title, text, sha256, text_sha256, chunk, chunks, adapter, "
                    "record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (vid, doc.source, doc.title, doc.text, doc.sha256, doc.text_sha256, doc.chunk, doc.chunks, name,
                     json.dumps(doc.record)))
                self.db.execute("INSERT INTO members VALUES (?, ?)", (vid, cur.lastrowid))
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'current'", (str(vid),))
            self.db.execute("INSERT INTO events (time, kind, version, detail) VALUES (?, 'commit', ?, ?)",
                            (now, vid, json.dumps({"parent": parent, "documents": len(new)})))
        return vid

    def rollback(self, vid: int) -> int:
        """Make version `vid` current (nothing is deleted); returns the version current before."""
        self._require_lock()
        self.version(vid)
        with self._transaction():
            before = self.current
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'current'", (str(vid),))
            self.db.execute("INSERT INTO events (time, kind, version, detail) VALUES (?, 'rollback', ?, ?)",
                            (_now(), vid, json.dumps({"from": before})))
        return before

    def sweep(self) -> list[str]:
        """Remove what a killed writer left behind: temporary adapter folders, and adapter folders
        no document names (written, but their transaction never committed). Returns their names."""
        self._require_lock()
        folder = self.path / ADAPTERS
        if not folder.is_dir():
            return []
        named = {r[0] for r in self.db.execute("SELECT adapter FROM documents")}
        removed = []
        for p in folder.iterdir():
            if p.name not in named:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                removed.append(p.name)
        return removed

    def verify(self) -> list[str]:
        """What is wrong with the registry (empty when it is consistent): SQLite's integrity
        check, the current version exists, every version's documents exist, and every document's
        adapter folder holds both PEFT files."""
        problems = []
        check = self.db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            problems.append(f"sqlite integrity check: {check}")
        ids = set(self.version_ids())
        if self.current not in ids:
            problems.append(f"current version {self.current} does not exist")
        for (vid, parent) in self.db.execute("SELECT id, parent FROM versions"):
            if parent is not None and parent not in ids:
                problems.append(f"version {vid}: parent {parent} does not exist")
        for (vid, doc) in self.db.execute("SELECT version, document FROM members"):
            if vid not in ids:
                problems.append(f"members: version {vid} does not exist")
            if self.db.execute("SELECT 1 FROM documents WHERE id = ?", (doc,)).fetchone() is None:
                problems.append(f"version {vid}: document {doc} does not exist")
        for (doc, adapter) in self.db.execute("SELECT id, adapter FROM documents"):
            for name in (PEFT_CONFIG, PEFT_WEIGHTS):
                if not (self.adapter_path(adapter) / name).is_file():
                    problems.append(f"document {doc}: adapter {adapter} lacks {name}")
        return problems

    def _transaction(self):
        return _Transaction(self.db)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (the connection is in autocommit
    mode, so nothing else ever opens a transaction behind our back)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def _connect(db_file: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(str(db_file), isolation_level=None, timeout=30)
        db.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as e:
        raise RegistryError(f"{db_file}: not a readable registry database ({e})") from None
    return db


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "none"
    return f"{ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ", ".join(map(str, ids))
