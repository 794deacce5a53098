"""scripts/kept_selfedits.py: a train run's kept self-edits become a passages file that
`seal evaluate` reads as its data and its external self-edits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from seal.knowledge.passages import load_passages

PASSAGES = [{"title": "Velmora", "context": "Velmora is a town. It has a bridge.",
             "questions": [{"question": "What is Velmora?", "answer": "a town"}]},
            {"title": "Osk", "context": "Osk is a river.", "questions": [{"question": "What is Osk?", "answer": "a river"}]}]



def _run(tmp_path: Path, kept: list[dict]) -> Path:
    data = tmp_path / "data.json"
    data.write_text(json.dumps(PASSAGES))
    ids = [p.id for p in load_passages(data)[0]]
    run = tmp_path / "run"
    rdir = run / "rounds" / "round_1"
    rdir.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"path": str(data)}}))
    (rdir / "samples.jsonl").write_text("".join(json.dumps({"passage_id": pid, "completions": [f"{pid} a", f"{pid} b"]}) + "\n"
                                                for pid in ids))
    (rdir / "sft.jsonl").write_text("".join(json.dumps({**k, "passage_id": k.get("passage_id") or ids[k.pop("i")]}) + "\n"
                                            for k in kept))
    return run


def test_kept_selfedits_round_trip_through_the_passage_loader(tmp_path, script):
    run = _run(tmp_path, [{"i": 1, "sample": 1, "reward": 0.25}])
    out = tmp_path / "kept.json"
    assert script("kept_selfedits").main([str(run), str(out)]) == 0
    (p,), _ = load_passages(out)
    assert p.title == "Osk" and p.completions == [f"{p.id} b"]  # the kept sample, not the others
    rec = json.loads(out.read_text())[0]
    assert rec["round"] == 1 and rec["kept_reward"] == 0.25 and rec["passage_id"] == p.id


def test_a_kept_passage_missing_from_the_data_is_named(tmp_path, script):
    run = _run(tmp_path, [{"passage_id": "nope", "sample": 0, "reward": 0.5}])
    with pytest.raises(SystemExit, match=r"sft.jsonl: record 0: passage nope is not in"):
        script("kept_selfedits").main([str(run), str(tmp_path / "kept.json")])
    assert not (tmp_path / "kept.json").exists()
