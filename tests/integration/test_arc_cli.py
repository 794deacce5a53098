"""`seal arc evaluate` end to end with the tiny model: summary shape, resume, user-facing errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import seal.arc.run as arc_run
from seal.cli import main
from seal.runs import read_jsonl

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "arc"
SMALL = ["--selfedits", "2", "--max_new_tokens", "12", "--views", "2", "--max_examples", "2", "--max_steps", "2",
         "--batch_size", "1", "--max_answer_tokens", "12", "--parallel_adapters", "1", "--bootstrap", "100",
         "--oracle.families", "none", "--oracle.learning_rates", "1e-3", "--threads", "1"]


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return ["arc", "evaluate", "--tasks", str(FIXTURES), "--model", str(model), "--out", str(out), *SMALL, *extra]


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arc") / "run"
    assert main(_args(tiny_model_dir, out, "--rl_model", str(tiny_model_dir))) == 0
    return out


def test_evaluate_writes_the_summary_shape(finished):
    summary = json.loads((finished / "summary.json").read_text())
    assert summary["order"] == ["in-context", "self-edits", "self-edits:rl", "oracle"]
    for name in summary["order"]:
        c = summary["conditions"][name]
        assert isinstance(c["n_questions"], int) and isinstance(c["n_passages"], int)
        assert set(c["metrics"]["success"]) == {"mean", "lo", "hi"}
        assert c["n_passages"] == 3
    assert summary["conditions"]["self-edits"]["n_questions"] == 6  # (task, self-edit) pairs
    assert summary["conditions"]["oracle"]["n_questions"] == 3
    assert summary["seconds_per_ttt_run"]["n"] >= 3
    assert summary["tasks"]["ids"] == ["double", "mirror", "recolor"] and summary["seed"] == 0
    assert {"config.yaml", "manifest.json", "tasks.json", "pairs.jsonl"} <= {p.name for p in finished.iterdir()}


def test_resume_does_not_redo_finished_results(finished, tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    ttt = read_jsonl(out / "ttt.jsonl")
    assert len(ttt) >= 3
    # a run killed during its second TTT run: one result saved, a torn line, no summary
    (out / "ttt.jsonl").write_text(json.dumps(ttt[0]) + "\n" + json.dumps(ttt[1])[:40])
    (out / "summary.json").unlink()
    samples = (out / "selfedits.jsonl").read_text()
    trained: list[int] = []
    real = arc_run.train_adapters
    def counting(model, tok, datasets, *args, **kwargs):
        trained.append(len(datasets))
        return real(model, tok, datasets, *args, **kwargs)

    monkeypatch.setattr(arc_run, "train_adapters", counting)
    with pytest.warns(UserWarning, match="torn last line"):
        assert main(_args(tiny_model_dir, out, "--rl_model", str(tiny_model_dir))) == 0
    assert sum(trained) == len(ttt) - 1  # only the unfinished TTT runs trained again
    assert (out / "selfedits.jsonl").read_text() == samples  # no self-edit sampled again
    lines = (out / "ttt.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) == ttt[0]  # the torn line was cut off, the finished result kept
    again = [json.loads(line) for line in lines[1:]]
    assert sorted(r["key"] for r in again) == sorted(r["key"] for r in ttt[1:])
    summary = json.loads((out / "summary.json").read_text())
    original = json.loads((finished / "summary.json").read_text())
    assert summary["conditions"].keys() == original["conditions"].keys()
    assert all(summary["conditions"][c]["metrics"] == original["conditions"][c]["metrics"] for c in summary["order"])


def test_bad_task_file_is_a_one_line_error_naming_it(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "broken.json").write_text('{"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": []}')
    args = _args(tiny_model_dir, tmp_path / "run")
    args[args.index("--tasks") + 1] = str(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("seal: error: ") and "broken.json" in err and "task broken" in err
    assert not (tmp_path / "run").exists()
