"""The registry checks itself: each adapter file's sha256 recorded at commit and checked on load
(a damaged adapter is one line naming the document and the file; other documents still answer),
`seal history --verify`, a database that is empty or unreadable refused (never re-created),
and cleanup that removes only what the registry records as in flight."""

from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path

import pytest
import torch
from test_registry import FAST, _adapt, _ask, _refused, docs  # noqa: F401 (docs: a fixture)

from seal.cli import main
from seal.documents.registry import PEFT_WEIGHTS, NewDocument, Registry, RegistryError
from seal.training import peft_folder


@pytest.fixture
def two_versions(tiny_model_dir, docs, tmp_path, capsys) -> Path:
    """Version 1: Velmora; version 2 (current): Velmora and Drosk."""
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, docs["velmora.md"]) == 0
    assert _adapt(tiny_model_dir, reg, docs["drosk.txt"]) == 0
    capsys.readouterr()
    return reg


def _weights_file(reg: Path, doc: int) -> Path:
    r = Registry.open(reg)
    try:
        (d,) = [d for d in r.documents(r.current) if d.id == doc]
        return r.adapter_path(d.adapter) / PEFT_WEIGHTS
    finally:
        r.close()


def _truncate_to_zero(f: Path) -> None:
    f.write_bytes(b"")


def _truncate_half(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_a_byte(f: Path) -> None:  # same size: only the sha256 tells
    data = bytearray(f.read_bytes())
    data[-3] ^= 0x55
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate_to_zero, _truncate_half, _flip_a_byte])
def test_a_damaged_adapter_is_one_line_other_documents_answer_and_verify_names_it(damage, two_versions, capsys):
    reg = two_versions
    head, before = _ask(reg, "Who founded the harbor town Velmora?", capsys)
    f = _weights_file(reg, 2)
    damage(f)
    # a question routed to the undamaged document is answered as before
    assert _ask(reg, "Who founded the harbor town Velmora?", capsys) == (head, before)
    # the damaged document's: one line naming it and the file
    _refused(["ask", "What does the Drosk Mining Company extract?", "--registry", str(reg), *FAST], capsys,
             f'document 2 "drosk"')
    _refused(["ask", "What does the Drosk Mining Company extract?", "--registry", str(reg), *FAST], capsys,
             f"{f}: damaged")
    # verify: what is damaged, which versions cannot serve it, which still serve
    capsys.readouterr()
    assert main(["history", "--registry", str(reg), "--verify"]) == 1
    out = capsys.readouterr().out
    assert f'damaged: document 2 "drosk"' in out and str(f) in out
    assert "version 2 (current) cannot serve document(s) 2" in out and "version 1 cannot" not in out
    assert "`seal rollback 1` serves the newest intact version" in out
    assert main(["history", "--registry", str(reg), "--verify", "--json"]) == 1
    v = json.loads(capsys.readouterr().out)["verify"]  # (JSON alone: the text report is left out)
    assert v["damaged_documents"] == [2] and v["intact_versions"] == [0, 1] and v["newest_intact"] == 1
    # rolled back, the registry serves intact again
    assert main(["rollback", "1", "--registry", str(reg)]) == 0
    capsys.readouterr()
    assert main(["history", "--registry", str(reg), "--verify"]) == 1
    assert "the current version 1 is intact and serves" in capsys.readouterr().out


def test_verify_on_an_intact_registry(two_versions, capsys):
    assert main(["history", "--registry", str(two_versions), "--verify"]) == 0
    out = capsys.readouterr().out
    assert "verify: 2 document adapter(s) checked" in out and "every adapter is intact; all 3 version(s) serve" in out


def test_a_registry_from_before_checksums_is_still_checked_by_reading(two_versions, capsys):
    """Adapters committed before sha256s were recorded (no adapter_files table): a truncated one
    is still found, by reading it in full, and named on load."""
    db = sqlite3.connect(two_versions / "registry.sqlite")
    db.execute("DROP TABLE adapter_files")
    db.execute("DROP TABLE inflight")
    db.commit()
    db.close()
    f = _weights_file(two_versions, 2)
    _truncate_half(f)
    _refused(["ask", "What does the Drosk Mining Company extract?", "--registry", str(two_versions), *FAST], capsys,
             f"{f.parent}: cannot read the adapter")
    assert main(["history", "--registry", str(two_versions), "--verify"]) == 1
    assert f'damaged: document 2 "drosk"' in capsys.readouterr().out


# ----------------------------------------------------------------------------- never re-created, never swept


def test_an_empty_or_missing_database_is_refused_and_no_adapter_is_deleted(two_versions, tiny_model_dir, docs, capsys):
    reg = two_versions
    adapters = sorted(p.name for p in (reg / "adapters").iterdir())
    db = reg / "registry.sqlite"
    saved = db.read_bytes()
    db.write_bytes(b"")  # a user's `: > registry.sqlite`, a sync tool, a crashed file system
    for argv in (["adapt", str(docs["frog.txt"]), "--registry", str(reg), "--model", str(tiny_model_dir), *FAST],
                 ["history", "--registry", str(reg)], ["ask", "Who?", "--registry", str(reg)],
                 ["rollback", "1", "--registry", str(reg)]):
        _refused(argv, capsys, f"{db}: empty (0 bytes)")
    assert db.stat().st_size == 0 and sorted(p.name for p in (reg / "adapters").iterdir()) == adapters
    db.unlink()  # gone altogether: no new registry is made over the adapters
    _refused(["adapt", str(docs["frog.txt"]), "--registry", str(reg), "--model", str(tiny_model_dir), *FAST], capsys,
             "no registry.sqlite but adapters/ holds 2 entries")
    assert not db.exists() and sorted(p.name for p in (reg / "adapters").iterdir()) == adapters
    db.write_bytes(saved)  # restored from a backup: everything serves again
    assert main(["history", "--registry", str(reg), "--verify"]) == 0


def test_a_database_without_the_registry_tables_is_refused(tmp_path, capsys):
    reg = tmp_path / "reg"
    reg.mkdir()
    sqlite3.connect(reg / "registry.sqlite").execute("CREATE TABLE other (x)").connection.close()
    _refused(["history", "--registry", str(reg)], capsys, "registry.sqlite: not a readable registry database")
    with pytest.raises(RegistryError, match="not a readable registry database"):
        Registry.open(reg, create=True, model="m", lock_wait=0)
    assert [r[0] for r in sqlite3.connect(reg / "registry.sqlite").execute("SELECT name FROM sqlite_master")] == ["other"]


def test_an_interrupted_creation_is_finished_by_the_next_writer(tmp_path):
    """A creator killed before its database was renamed into place leaves `registry.sqlite.new`
    and no `registry.sqlite`: readers see no registry, the next writer creates it."""
    reg = tmp_path / "reg"
    reg.mkdir()
    (reg / "adapters").mkdir()
    (reg / "registry.sqlite.new").write_bytes(b"half")
    with pytest.raises(RegistryError, match="no registry here"):
        Registry.open(reg)
    made = Registry.open(reg, create=True, model="tiny", lock_wait=0)
    assert made.model == "tiny" and made.current == 0
    made.close()
    assert not (reg / "registry.sqlite.new").exists()


def _new_doc(seed: int) -> NewDocument:
    g = torch.Generator().manual_seed(seed)
    w = {"model.layers.0.self_attn.q_proj.lora_A": torch.randn(2, 8, generator=g),
         "model.layers.0.self_attn.q_proj.lora_B": torch.randn(8, 2, generator=g)}
    return NewDocument("doc.txt", "Doc", "text", "0" * 64, "1" * 64, 0, 1, w, 2, 4.0, ("q_proj",), {"key": str(seed)})


def test_sweep_removes_only_what_is_recorded_in_flight(tmp_path):
    reg = Registry.open(tmp_path / "reg", create=True, model="m", lock_wait=0)
    vid = reg.commit(0, [_new_doc(1)], {})
    (committed,) = [d.adapter for d in reg.documents(vid)]
    folder = tmp_path / "reg" / "adapters"
    (folder / "stranger").mkdir()  # not this registry's: left alone
    with reg._transaction():  # a writer killed after recording its adapters, while writing them
        reg.db.execute("INSERT INTO inflight VALUES ('cafe', 'now'), ('beef', 'now')")
    (folder / "cafe").mkdir()
    (folder / ".tmp-beef").mkdir()
    removed, unknown = reg.sweep()
    assert sorted(removed) == [".tmp-beef", "cafe"] and unknown == ["stranger"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([committed, "stranger"])
    assert reg.db.execute("SELECT COUNT(*) FROM inflight").fetchone()[0] == 0 and reg.verify() == []
    reg.close()


def test_a_full_disk_while_writing_an_adapter_leaves_nothing_behind(tmp_path, monkeypatch):
    reg = Registry.open(tmp_path / "reg", create=True, model="m", lock_wait=0)
    reg.commit(0, [_new_doc(1)], {})
    before = sorted(p.name for p in (tmp_path / "reg" / "adapters").iterdir())
    real = peft_folder.file_digest  # what write_adapter_folder reads each written file back with
    calls = {"n": 0}

    def full(path):
        calls["n"] += 1
        if calls["n"] == 3:  # the second adapter of this commit, after its files were written
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path)
    monkeypatch.setattr(peft_folder, "file_digest", full)
    with pytest.raises(OSError, match="No space left"):
        reg.commit(1, [_new_doc(2), _new_doc(3)], {})
    assert sorted(p.name for p in (tmp_path / "reg" / "adapters").iterdir()) == before  # no .tmp-, no half version
    assert reg.current == 1 and reg.version_ids() == [0, 1] and reg.verify() == []
    assert reg.db.execute("SELECT COUNT(*) FROM inflight").fetchone()[0] == 0
    reg.close()
