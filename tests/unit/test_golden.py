"""scripts/golden.py, the behaviour-unchanged check for refactors: a fingerprint ignores when and
where a run went, and sees any change in what it computed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("golden", ROOT / "scripts" / "golden.py")
golden = importlib.util.module_from_spec(spec)
spec.loader.exec_module(golden)


def _run(folder: Path, model: Path, reward: float, when: str) -> dict:
    (folder / "rounds").mkdir(parents=True)
    (folder / "rounds" / "rewards.jsonl").write_text(
        json.dumps({"reward": reward, "seconds": 1.5, "time": when, "out": str(folder / "x")}) + "\n")
    (folder / "manifest.json").write_text(json.dumps({"model": str(model), "created": when}))
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "run.log").write_text(when)
    return golden.fingerprint(folder, model)


def test_fingerprint_ignores_time_and_place_and_sees_a_changed_number(tmp_path, capsys):
    a = _run(tmp_path / "a", tmp_path / "m1", 0.25, "2026-01-01")
    b = _run(tmp_path / "b", tmp_path / "m2", 0.25, "2026-12-31")
    c = _run(tmp_path / "c", tmp_path / "m1", 0.5, "2026-01-01")
    assert "run.log" not in a and a == b and a != c
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    (tmp_path / "c.json").write_text(json.dumps(c))
    assert golden.compare(tmp_path / "a.json", tmp_path / "b.json") == 0
    assert golden.compare(tmp_path / "a.json", tmp_path / "c.json") == 1
    assert "differ: rounds/rewards.jsonl" in capsys.readouterr().out
