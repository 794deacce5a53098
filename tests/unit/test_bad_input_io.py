"""Failures of the machine and of unusual input, each one line (exit 2, no traceback), bounded in
seconds, losing nothing and leaving nothing behind: full disks (mocked ENOSPC), a full SQLite
database, special files, version numbers past 64 bits, questions longer than the context
window, refused first starts, leftover `.partial` folders, and control characters in what
`seal history` / `seal ask` print."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from test_registry import FAST, _adapt, _refused, committed, docs  # noqa: F401 (committed, docs: fixtures)

from seal.cli import main
from seal.documents import registry as R
from seal.documents.registry import Registry
from seal.documents.versions import parse_version


@contextlib.contextmanager
def within(seconds: int):
    """Fail instead of hanging (a FIFO read blocks forever)."""
    def stop(*_):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _adapters(reg: Path) -> list[str]:
    return sorted(p.name for p in (reg / "adapters").iterdir())


# ----------------------------------------------------------------------------- numbers and special files

def test_a_version_past_64_bits_is_one_line(tmp_path, capsys):
    reg = Registry.open(tmp_path / "reg", create=True, model="m", lock_wait=0)
    reg.close()
    huge = str(2**64)
    _refused(["rollback", huge, "--registry", str(tmp_path / "reg")], capsys, f"VERSION {huge} is past the largest")
    _refused(["ask", "Who?", "--version", "v" + "9" * 5000, "--registry", str(tmp_path / "reg")], capsys,
             "is past the largest version number")
    assert parse_version(str(2**63 - 1)) == 2**63 - 1
    with pytest.raises(Exception, match="must be a version number"):
        parse_version("\u00b2")  # a digit to str.isdigit, not to int()


@pytest.mark.parametrize("special", ["fifo", "/dev/zero", "/dev/null"])
def test_special_files_are_refused_at_once_and_make_no_registry(special, tmp_path, capsys):
    if special == "fifo":
        path = tmp_path / "pipe.txt"
        os.mkfifo(path)  # nobody writes to it: reading would block forever
        kind = "a FIFO (named pipe)"
    else:
        path = Path(special)
        if not path.exists():
            pytest.skip(f"{special} is not on this machine")
        kind = "a character device"
    with within(20):
        _refused(["adapt", str(path), "--registry", str(tmp_path / "reg"), *FAST], capsys,
                 f"{path}: is {kind}, not a regular file")
    assert not (tmp_path / "reg").exists()


@pytest.mark.parametrize("flag", ["--data", "--config", "--data.completions"])
def test_special_files_as_data_config_or_completions_are_refused_at_once(flag, tiny_model_dir, squad_tiny, tmp_path,
                                                                         capsys):
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)
    out = tmp_path / "run"
    data = pipe if flag == "--data" else squad_tiny
    argv = ["evaluate", "--data", str(data), "--model", str(tiny_model_dir), "--limit", "1", "--out", str(out)]
    if flag != "--data":
        argv += [flag, str(pipe)]
    with within(20):
        _refused(argv, capsys, f"{pipe}: is a FIFO (named pipe), not a ")
    assert not out.exists()


def test_a_huge_document_is_refused_before_it_is_read(tmp_path, capsys, monkeypatch):
    import seal.documents.reading

    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:  # 100 MiB, sparse: no disk used
        f.truncate(100 * 2**20)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self} was read"))
    with within(20):
        _refused(["adapt", str(huge), "--registry", str(tmp_path / "reg")], capsys,
                 f"{huge}: 100.0 MiB, larger than adapt.max_document_mb (64 MiB)")
    monkeypatch.undo()
    small = tmp_path / "small.txt"
    small.write_text("The ferry crosses the Sorrel River at dawn.")
    assert seal.documents.reading.read_documents([str(small)], max_bytes=small.stat().st_size)[0].text.startswith("The ferry")
    assert not (tmp_path / "reg").exists()


# ----------------------------------------------------------------------------- refused first starts

@pytest.mark.parametrize("folder_existed", [False, True])
def test_a_refused_first_adapt_leaves_no_registry(folder_existed, tiny_model_dir, tmp_path, capsys):
    reg = tmp_path / "reg"
    if folder_existed:
        reg.mkdir()
    long = tmp_path / "long.txt"
    long.write_text(" ".join(f"The ferry carries {i} crates of green salt every morning." for i in range(200)))
    _refused(["adapt", str(long), "--registry", str(reg), "--model", str(tiny_model_dir), *FAST,
              "--adapt.max_chunks", "1"], capsys, "chunks")  # refused after the model loaded
    assert (list(reg.iterdir()) == []) if folder_existed else not reg.exists()


def test_a_refused_adapt_on_a_registry_keeps_it(committed, tiny_model_dir, tmp_path, capsys):
    long = tmp_path / "long.txt"
    long.write_text(" ".join(f"The ferry carries {i} crates of green salt every morning." for i in range(200)))
    _refused(["adapt", str(long), "--registry", str(committed), *FAST, "--adapt.max_chunks", "1"], capsys, "chunks")
    r = Registry.open(committed)
    assert r.current == 1 and r.verify() == []
    r.close()


# ----------------------------------------------------------------------------- full disks


def test_a_full_disk_under_the_registry_is_one_line_and_loses_nothing(committed, tiny_model_dir, docs, capsys,
                                                                     monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    before = _adapters(committed)
    real = safetensors.torch.save_file

    def full(*a, **k):  # what safetensors raises on a full disk
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    _refused(["adapt", str(docs["drosk.txt"]), "--registry", str(committed), *FAST], capsys,
             "adapter_model.safetensors: No space left on device; free space, then run the same command again")
    assert _adapters(committed) == before  # no .tmp-, no half-written adapter
    r = Registry.open(committed)
    assert r.current == 1 and r.verify() == [] and r.db.execute("SELECT COUNT(*) FROM inflight").fetchone() == (0,)
    r.close()
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert _adapt(tiny_model_dir, committed, docs["drosk.txt"]) == 0  # the same command, once there is room


def _full_at(file: Path, monkeypatch) -> None:
    """fsync of `file` fails with ENOSPC (and no file name, as the kernel reports it): the disk
    fills up in the middle of a run."""
    real = os.fsync

    def fsync(fd):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name == str(file):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="finds the file of a descriptor in /proc")
def test_a_full_disk_under_out_is_one_line_and_the_same_command_resumes(tiny_model_dir, squad_tiny, tmp_path, capsys,
                                                                       monkeypatch):
    out = tmp_path / "run"
    argv = ["evaluate", "--data", str(squad_tiny), "--limit", "1", "--model", str(tiny_model_dir), "--out", str(out),
            "--selfedit.max_new_tokens", "8", "--inner.epochs", "1", "--eval.max_answer_tokens", "4", "--threads", "1"]
    _full_at(out / "results.jsonl", monkeypatch)  # the first inner-loop result
    _refused(argv, capsys, f"{out / 'results.jsonl'}: No space left on device; free space, then run the same "
                           "command again (finished results are saved; rerun with the same --out to resume)")
    monkeypatch.undo()
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file survives the failure
    assert main(argv) == 0 and (out / "summary.json").exists()


def test_rollback_on_a_full_database_names_the_cause(committed, capsys, monkeypatch):
    class FullDisk(sqlite3.Connection):
        """SQLITE_FULL on the rollback's event row, after which SQLite has rolled back by itself."""

        def execute(self, sql, *args):
            if sql.startswith("INSERT INTO events"):
                super().execute("ROLLBACK")
                raise sqlite3.OperationalError("database or disk is full")
            return super().execute(sql, *args)
    monkeypatch.setattr(R, "_connect", lambda f: sqlite3.connect(str(f), isolation_level=None, factory=FullDisk))
    _refused(["rollback", "0", "--registry", str(committed)], capsys,
             "registry.sqlite: database or disk is full; nothing was changed")
    monkeypatch.undo()
    r = Registry.open(committed)
    assert r.current == 1
    r.close()


def test_a_partial_model_folder_is_cleared_and_a_failed_save_leaves_none(tiny_model_dir, tmp_path):
    from safetensors import SafetensorError

    from seal.config import ModelConfig
    from seal.training.models import load_model, save_model

    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    folder = tmp_path / "round_1" / "model"
    partial = tmp_path / "round_1" / "model.partial"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"half of a killed save")
    (partial / "stray.bin").write_bytes(b"x" * 1000)
    save_model(model, tok, folder)
    assert not partial.exists() and not (folder / "stray.bin").exists()
    assert load_model(ModelConfig(name=str(folder)))[0].config.hidden_size == model.config.hidden_size

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    model.save_pretrained = full
    with pytest.raises(OSError) as e:
        save_model(model, tok, tmp_path / "round_2" / "model")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "round_2" / "model.partial")
    assert not (tmp_path / "round_2" / "model.partial").exists() and not (tmp_path / "round_2" / "model").exists()


# ----------------------------------------------------------------------------- endless input, unsafe output

def test_a_question_longer_than_the_context_window_is_refused_in_seconds(committed, capsys):
    question = "Who founded the harbor town of Velmora and when? " * 400  # ~4000 tokens, window 1024
    with within(60):
        _refused(["ask", question, "--registry", str(committed), *FAST], capsys,
                 "and the model reads at most 1024 (its context window) with the 4-token answer")


def test_control_characters_are_escaped_when_printed(tiny_model_dir, tmp_path, capsys):
    from seal.documents.adapt import printable
    assert printable("a\x1b[2Jb\rc\x07\x7f\u202e") == "a\\x1b[2Jb\\rc\\x07\\x7f\\u202e"
    assert printable("two\nlines\tok", keep="\n\t") == "two\nlines\tok" and printable("x\ny") == "x\\ny"
    doc = tmp_path / "evil.md"
    doc.write_text("# Velm\x1b]0;owned\x07ora\n\nVelmora is a harbor town \x1b[2J founded by salt traders in 1742.\n")
    reg = tmp_path / "reg"
    assert _adapt(tiny_model_dir, reg, doc) == 0
    capsys.readouterr()
    assert main(["history", "--registry", str(reg)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and '"Velm\\x1b]0;owned\\x07ora"' in out
    assert main(["ask", "Who founded the harbor town Velmora?", "--registry", str(reg), *FAST]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "Velm\\x1b]0;owned\\x07ora" in out


def test_the_gguf_cache_clears_a_killed_writers_partial_folder(tiny_model_dir, tmp_path, monkeypatch):
    """Dequantizing a .gguf file writes its cache through `<cache>.partial`: a folder a killed
    run left there is cleared, never reused, and the cache then loads."""
    import transformers

    from seal.config import ModelConfig
    from seal.training import models

    model, tok = models.load_model(ModelConfig(name=str(tiny_model_dir)))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")  # read by the stand-ins below, not parsed
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: model if k.get("gguf_file") else real(*a, **k))
    cache = tmp_path / "cache" / "gguf-tiny"
    partial = tmp_path / "cache" / "gguf-tiny.partial"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"x" * 4096)  # half of a killed write
    (partial / "model-00002-of-00002.safetensors").write_bytes(b"x" * 4096)  # a shard of another layout
    loaded, _ = models._load_gguf(gguf, cache, False)
    assert not partial.exists() and (cache / "model.safetensors").stat().st_size > 4096
    assert not (cache / "model-00002-of-00002.safetensors").exists()
    assert loaded.config.hidden_size == model.config.hidden_size


def test_a_full_disk_saving_a_continual_update_is_named(tmp_path, monkeypatch):
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from seal.training.lora import save_adapter

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    path = tmp_path / "adapters" / "seq_1" / "step_1.safetensors"
    with pytest.raises(OSError) as e:
        save_adapter(path, {"w": torch.zeros(2)})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert list(path.parent.iterdir()) == []


def test_a_write_error_without_a_file_name_names_the_output_folder(tmp_path, capsys, monkeypatch):
    """An OSError from a write deep in a library often carries no file name: the one line then
    names the folder the command writes (--registry, --out)."""
    import seal.documents.versions

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(seal.documents.versions, "rollback", read_only)
    _refused(["rollback", "1", "--registry", str(tmp_path / "reg")], capsys, f"{tmp_path / 'reg'}: Read-only file system")
