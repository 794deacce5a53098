"""`auto` precision: bf16 where the CPU does it fast, fp32 elsewhere, and fp32 everywhere while
$SEAL_FORCE_FP32 is set (how the suite runs as an AVX2-only machine would, on any machine)."""

from __future__ import annotations

import os

import pytest
import torch

from seal.cli import main
from seal.training import models
from seal.training.models import ModelError, pick_dtype

CPU = torch.device("cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_follows_the_cpu_flags_unless_forced(monkeypatch, fast):
    monkeypatch.setattr(models, "cpu_has_fast_bf16", lambda: fast)
    monkeypatch.delenv("SEAL_FORCE_FP32", raising=False)
    assert pick_dtype("auto", CPU) == (torch.bfloat16 if fast else torch.float32)
    for value in ("1", "true", "YES"):
        monkeypatch.setenv("SEAL_FORCE_FP32", value)
        assert pick_dtype("auto", CPU) == torch.float32
    for value in ("0", "false", "no", ""):
        monkeypatch.setenv("SEAL_FORCE_FP32", value)
        assert pick_dtype("auto", CPU) == (torch.bfloat16 if fast else torch.float32)


def test_an_explicit_dtype_is_honoured_while_forced(monkeypatch):
    monkeypatch.setenv("SEAL_FORCE_FP32", "1")
    assert pick_dtype("bf16", CPU) == torch.bfloat16 and pick_dtype("fp32", CPU) == torch.float32


def test_the_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    real = models.Path

    def fake(flags):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n")
        monkeypatch.setattr(models, "Path", lambda p: info if p == "/proc/cpuinfo" else real(p))

    fake("avx512f")
    assert not models.cpu_has_fast_bf16()
    fake("avx512f avx512_bf16")
    assert models.cpu_has_fast_bf16()
    fake("amx_tile amx_bf16")
    assert models.cpu_has_fast_bf16()
    monkeypatch.setattr(models, "Path", lambda p: tmp_path / "missing")
    assert not models.cpu_has_fast_bf16()


def test_a_bad_value_is_one_line_naming_the_variable(monkeypatch, tiny_model_dir, squad_tiny, tmp_path, capsys):
    monkeypatch.setenv("SEAL_FORCE_FP32", "maybe")
    with pytest.raises(ModelError, match=r"\$SEAL_FORCE_FP32='maybe'"):
        pick_dtype("auto", CPU)
    args = ["evaluate", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--limit", "1",
            "--selfedit.max_new_tokens", "4", "--inner.epochs", "1", "--threads", "1", "--out", str(tmp_path / "run")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].count("SEAL_FORCE_FP32") == 1 and "Traceback" not in "".join(err)
    assert not (tmp_path / "run").exists()  # refused before the run folder


def test_the_suite_forces_fp32_for_unmarked_tests():
    assert os.environ["SEAL_FORCE_FP32"] == "1"


@pytest.mark.machine_dtype
def test_a_machine_dtype_test_sees_the_callers_setting():
    from conftest import _CALLER_FORCE_FP32
    assert os.environ.get("SEAL_FORCE_FP32") == _CALLER_FORCE_FP32
