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

Atomic creation. A new registry's database is written as `registry.sqlite.new` and renamed
into place once version 0 is in it, so a `registry.sqlite` that exists always held a registry:
one that is empty (0 bytes, a user's `: >`, a sync tool) or unreadable is refused, never taken
for a new registry.

Atomic commits. Nothing of a version is visible before one SQLite transaction makes it so:
`commit` first records the new adapters' names as in flight (table `inflight`, one
transaction), writes each adapter to `adapters/.tmp-<id>/`, fsyncs its files and the folder,
renames it to `adapters/<id>/` and fsyncs `adapters/`; only then does one transaction insert
the version, its documents and each adapter file's size and sha256 (table `adapter_files`),
clear the in-flight names and flip `current`. A process killed at any moment (SIGKILL
included) leaves either the old state or the new one; at worst adapter folders the database
records as in flight, which the next writer removes (`sweep`). A folder the database does not
record as in flight is never deleted (a damaged or replaced database cannot cause a committed
adapter's loss), so a reader (`seal ask`) needs no lock.

Self-check (as git's object hashes and restic's `check`). An adapter is checked against its
recorded size and sha256 each time it is loaded: a damaged one is a one-line error naming the
document and the file, and questions routed to other documents still answer. `damaged()`
checks them all, `seal history --verify` says which versions still serve. Registries
committed before checksums were recorded (no `adapter_files` rows) get the files' presence and
readability checked.

One writer at a time. `seal adapt` and `seal rollback` hold an exclusive `flock` on `lock` for
their whole run; a second one is refused at once with one line naming the holder's pid, or
waits up to `adapt.lock_wait` seconds. The lock goes with the process, however it ends.

Format. `meta.format_version` is written at creation; a registry of a newer format than
`FORMAT_VERSION` is refused (one line), never misread.
"""

from __future__ import annotations

import contextlib
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

from seal.training.peft_folder import (
    PEFT_CONFIG,
    PEFT_WEIGHTS,
    file_digest,
    fsync_path,
    peft_config,
    write_adapter_folder,
)

FORMAT_VERSION = 1
DB_NAME = "registry.sqlite"
LOCK_NAME = "lock"
ADAPTERS = "adapters"

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
SELF_CHECK_SCHEMA = """
CREATE TABLE IF NOT EXISTS adapter_files (
    adapter TEXT NOT NULL, name TEXT NOT NULL, bytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    PRIMARY KEY (adapter, name));
CREATE TABLE IF NOT EXISTS inflight (adapter TEXT PRIMARY KEY, started TEXT NOT NULL);
"""
"""Tables added after format 1 (an older seal ignores them); a writer adds them to an older registry."""
NEW_DB = DB_NAME + ".new"


class RegistryError(RuntimeError):
    """A registry that cannot be used as asked; the message names its folder and the version."""


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

def seal_state(peft: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `peft_folder.peft_state`."""
    out = {}
    for key, w in peft.items():
        if not (key.startswith("base_model.model.") and key.endswith(".weight")):
            raise RegistryError(f"unexpected key {key!r} in a PEFT adapter")
        out[key[len("base_model.model."):-len(".weight")]] = w
    return out


def read_adapter_folder(folder: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(seal-named weights, adapter_config) of a PEFT adapter folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = json.loads((folder / PEFT_CONFIG).read_text())
        weights = seal_state(load_file(str(folder / PEFT_WEIGHTS)))
    except (OSError, ValueError, SafetensorError) as e:
        raise RegistryError(f"{folder}: cannot read the adapter ({_one_line(e)})") from None
    return weights, config


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


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
        before anything is read or created (so two creators never race). An existing database
        that is empty or not a registry's is refused, never re-created."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise RegistryError(f"{path}: is a file, not a registry folder")
        db_file = path / DB_NAME
        if not create and not db_file.exists():
            raise RegistryError(f"{path}: no registry here (no {DB_NAME}); `seal adapt FILE --registry {path}` makes one")
        if create and not db_file.exists():
            _check_new_folder(path)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise RegistryError(f"{path}: cannot create the registry folder ({e.strerror or e})") from None
        reg = cls(path, None)
        if lock_wait is not None:
            reg.lock(lock_wait)
        try:
            if not db_file.exists():  # (re-checked under the lock: another creator may have finished it)
                if reg._lock_fd is None:
                    raise RuntimeError("creating a registry needs its lock")
                _check_new_folder(path)
                _create_database(path, model)
            reg.db = _connect(db_file)
            reg._check_readable()
            reg._check_format()
            if reg._lock_fd is not None:  # an older registry gets the self-check tables
                with reg._transaction():
                    _execute_script(reg.db, SELF_CHECK_SCHEMA)
        except BaseException:
            reg.close()
            raise
        return reg

    def _check_readable(self) -> None:
        db_file = self.path / DB_NAME
        if db_file.stat().st_size == 0:
            raise RegistryError(f"{db_file}: empty (0 bytes); this registry's versions are lost from it, so it is "
                                f"not re-created: restore {DB_NAME} from a backup (the adapters/ folder is untouched)")
        try:
            row = self.db.execute("SELECT value FROM meta WHERE key = 'format_version'").fetchone()
        except sqlite3.DatabaseError as e:
            raise RegistryError(f"{db_file}: not a readable registry database ({_one_line(e)}); "
                                "it is left as it is") from None
        if row is None:
            raise RegistryError(f"{db_file}: not a readable registry database (no format version); it is left as it is")

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
        if self.db is not None:
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

    def _has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    def recorded_files(self, adapter: str) -> dict[str, tuple[int, str]]:
        """(size, sha256) of each of an adapter's files as recorded at commit (empty: committed
        before checksums were recorded)."""
        if not self._has_table("adapter_files"):
            return {}
        return {n: (b, h) for n, b, h in self.db.execute(
            "SELECT name, bytes, sha256 FROM adapter_files WHERE adapter = ?", (adapter,))}

    def adapter_damage(self, adapter: str, checksums: bool = True) -> str | None:
        """What is wrong with an adapter folder's files, naming the file (None: intact): a file
        missing or unreadable, or its size or (with `checksums`) sha256 not what was recorded."""
        folder = self.adapter_path(adapter)
        recorded = self.recorded_files(adapter)
        for name in (PEFT_WEIGHTS, PEFT_CONFIG):
            path = folder / name
            try:
                if not path.is_file():
                    return f"{path}: missing"
                size = path.stat().st_size
                if name not in recorded:
                    continue
                want_size, want_sha = recorded[name]
                if size != want_size:
                    return f"{path}: damaged ({size} bytes, {want_size} recorded at commit)"
                if checksums and (got := file_digest(path)[1]) != want_sha:
                    return f"{path}: damaged (sha256 {got[:12]}..., {want_sha[:12]}... recorded at commit)"
            except OSError as e:
                return f"{path}: unreadable ({e.strerror or e})"
        return None

    def read_adapter(self, adapter: str) -> tuple[dict[str, torch.Tensor], dict]:
        """An adapter's weights and config, checked against what was recorded at commit first;
        RegistryError naming the file when it is damaged."""
        if problem := self.adapter_damage(adapter):
            raise RegistryError(problem)
        return read_adapter_folder(self.adapter_path(adapter))

    def load_adapter(self, doc: DocumentRow) -> tuple[dict[str, torch.Tensor], dict]:
        return self.read_adapter(doc.adapter)

    def damaged(self, checksums: bool = True) -> dict[int, str]:
        """Every damaged document's adapter: {document id: what is wrong, naming the file}. Without
        recorded checksums (an older registry) an adapter is also read in full, to catch a
        truncated or garbled safetensors file."""
        out = {}
        for doc, adapter in self.db.execute("SELECT id, adapter FROM documents ORDER BY id").fetchall():
            problem = self.adapter_damage(adapter, checksums)
            if problem is None and checksums and not self.recorded_files(adapter):
                try:
                    read_adapter_folder(self.adapter_path(adapter))
                except RegistryError as e:
                    problem = str(e)
            if problem:
                out[doc] = problem
        return out

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
        names = [uuid.uuid4().hex[:16] for _ in new]
        with self._transaction():  # recorded before any file exists: the only folders a sweep may remove
            self.db.executemany("INSERT INTO inflight VALUES (?, ?)", [(n, _now()) for n in names])
        sums = {}
        try:
            for doc, name in zip(new, names):
                sums[name] = write_adapter_folder(
                    self.adapter_path(name), doc.weights,
                    peft_config(doc.rank, doc.alpha, doc.targets, base_model_path or self.model))
        except BaseException:
            with contextlib.suppress(Exception):  # a full disk may refuse this too: the next writer sweeps
                self.sweep()
            raise
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
                self.db.executemany("INSERT INTO adapter_files VALUES (?, ?, ?, ?)",
                                    [(name, f, b, h) for f, (b, h) in sums[name].items()])
            self.db.executemany("DELETE FROM inflight WHERE adapter = ?", [(n,) for n in names])
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

    def sweep(self) -> tuple[list[str], list[str]]:
        """Remove what a killed or failed writer left behind: the adapter folders (and their
        `.tmp-` folders) the database records as in flight. Returns (the removed names, the names
        of other entries in adapters/ that no document names: left alone, never deleted)."""
        self._require_lock()
        folder = self.path / ADAPTERS
        named = {r[0] for r in self.db.execute("SELECT adapter FROM documents")}
        removed = []
        for (name,) in self.db.execute("SELECT adapter FROM inflight").fetchall():
            if name not in named:
                for p in (folder / name, folder / f".tmp-{name}"):
                    if p.exists():
                        shutil.rmtree(p)
                        removed.append(p.name)
            with self._transaction():
                self.db.execute("DELETE FROM inflight WHERE adapter = ?", (name,))
        unknown = sorted(p.name for p in folder.iterdir() if p.name not in named) if folder.is_dir() else []
        return removed, unknown

    def verify(self) -> list[str]:
        """What is wrong with the registry (empty when it is consistent): SQLite's integrity
        check, the current version exists, every version's documents exist, and every document's
        adapter folder holds both PEFT files at their recorded sizes (`damaged()` also checks
        their sha256)."""
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
        for doc, problem in self.damaged(checksums=False).items():
            problems.append(f"document {doc}: {problem}")
        return problems

    def _transaction(self):
        return _Transaction(self.db, self.path / DB_NAME)


def discard_new_registry(path: Path, folder_existed: bool) -> bool:
    """Remove a registry this process has just created, when it holds nothing but version 0 and
    an empty adapters/ (checked here: never anything committed); the folder itself too unless it
    existed before. Returns whether it was removed."""
    try:
        db = sqlite3.connect(f"file:{path / DB_NAME}?mode=ro", uri=True)
        try:
            versions = [r[0] for r in db.execute("SELECT id FROM versions")]
        finally:
            db.close()
        adapters = path / ADAPTERS
        if versions != [0] or (adapters.is_dir() and any(adapters.iterdir())):
            return False
        if not folder_existed:
            shutil.rmtree(path)
            return True
        for name in (DB_NAME, LOCK_NAME):
            (path / name).unlink(missing_ok=True)
        adapters.rmdir()
    except (OSError, sqlite3.Error):
        return False
    return True


def _check_new_folder(path: Path) -> None:
    """A registry is made only in a new or empty folder (a lock file, a leftover `registry.sqlite.new`
    and an empty adapters/ allowed): never over adapters whose database is gone."""
    if not path.is_dir():
        return
    if any(p.name not in (LOCK_NAME, ADAPTERS, NEW_DB, NEW_DB + "-journal") for p in path.iterdir()):
        raise RegistryError(f"{path}: exists and is not a seal registry (no {DB_NAME}); name a new or empty folder")
    adapters = path / ADAPTERS
    if adapters.is_dir() and (held := sum(1 for _ in adapters.iterdir())):
        raise RegistryError(f"{path}: no {DB_NAME} but {ADAPTERS}/ holds {held} entr{'y' if held == 1 else 'ies'}: "
                            f"refusing to make a new registry over them; restore {DB_NAME} or move the folder away")


def _execute_script(db: sqlite3.Connection, script: str) -> None:
    """Each statement of `script` (sqlite3's executescript would commit the open transaction)."""
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _create_database(path: Path, model: str) -> None:
    """Version 0 (the base model, no adapters) written to `registry.sqlite.new`, fsynced and
    renamed into place: a process killed here leaves no `registry.sqlite` (the leftover `.new`
    is written again by the next creator)."""
    tmp = path / NEW_DB
    for leftover in (tmp, path / (NEW_DB + "-journal")):
        leftover.unlink(missing_ok=True)
    (path / ADAPTERS).mkdir(exist_ok=True)
    db = _connect(tmp)
    try:
        with _Transaction(db, tmp):
            _execute_script(db, SCHEMA + SELF_CHECK_SCHEMA)
            now = _now()
            db.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("format_version", str(FORMAT_VERSION)), ("model", model), ("created", now), ("current", "0")])
            db.execute("INSERT INTO versions VALUES (0, NULL, ?, ?)", (now, json.dumps({"note": "the base model, no adapters"})))
            db.execute("INSERT INTO events (time, kind, version, detail) VALUES (?, 'create', 0, ?)",
                       (now, json.dumps({"model": model})))
    finally:
        db.close()
    fsync_path(tmp)
    os.rename(tmp, path / DB_NAME)
    fsync_path(path)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception (the connection is in autocommit
    mode, so nothing else ever opens a transaction behind our back). An SQLite error (disk full,
    read-only file system...) becomes a RegistryError naming the database and SQLite's own cause:
    SQLite may already have rolled the transaction back itself, and the ROLLBACK that would then
    fail ("no transaction is active") must not hide that cause."""

    def __init__(self, db: sqlite3.Connection, db_file: Path):
        self.db = db
        self.db_file = db_file

    def __enter__(self):
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self._error(e) from None
        return self.db

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return False
            except sqlite3.Error as e:
                exc = e
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise self._error(exc) from None
        return False

    def _error(self, e: sqlite3.Error) -> RegistryError:
        return RegistryError(f"{self.db_file}: {_one_line(e)}; nothing was changed")


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
