"""`seal evaluate` resumed with more `--selfedit.model` writers or more `--eval.controls`: the
finished rows are kept as they are, only the new rows are computed (as a table made with them from
the start would), and any other change of settings is refused."""

from __future__ import annotations

import json
import shutil

import yaml

from seal.cli import main
from seal.runs import read_jsonl


def _argv(data, model, out, *extra):
    return ["evaluate", "--data", str(data), "--limit", "1", "--model", str(model), "--out", str(out),
            "--selfedit.max_new_tokens", "8", "--inner.epochs", "1", "--eval.max_answer_tokens", "4",
            "--threads", "1", *extra]


def test_a_table_resumed_with_a_new_writer_computes_only_its_rows(tiny_model_dir, squad_tiny, tmp_path, capsys):
    out = tmp_path / "table"
    assert main(_argv(squad_tiny, tiny_model_dir, out)) == 0
    before = (out / "results.jsonl").read_text()
    conds_before = {r["condition"] for r in read_jsonl(out / "results.jsonl")}
    assert "self-edits:writer" not in conds_before
    writer = shutil.copytree(tiny_model_dir, tmp_path / "writer")

    # a changed setting besides the writers is refused, and the run folder is left as it was
    assert main(_argv(squad_tiny, tiny_model_dir, out, "--selfedit.model", str(writer), "--inner.lr", "0.5")) != 0
    assert "resuming with a different config" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == before
    assert not yaml.safe_load((out / "config.yaml").read_text())["selfedit"]["model"]

    assert main(_argv(squad_tiny, tiny_model_dir, out, "--selfedit.model", str(writer))) == 0
    after = (out / "results.jsonl").read_text()
    assert after.startswith(before)  # the finished rows, byte for byte
    added = [json.loads(line) for line in after[len(before):].splitlines()]
    assert added and {r["condition"] for r in added} == {"self-edits:writer", "passage x steps:writer"}
    summary = json.loads((out / "summary.json").read_text())
    assert "self-edits:writer" in summary["conditions"] and conds_before <= set(summary["conditions"])
    assert yaml.safe_load((out / "config.yaml").read_text())["selfedit"]["model"] == str(writer)
    resumes = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("event") == "resume"]
    assert resumes[-1]["grown"] == {"selfedit.model": str(writer)}

    # the same command again trains nothing more
    assert main(_argv(squad_tiny, tiny_model_dir, out, "--selfedit.model", str(writer))) == 0
    assert (out / "results.jsonl").read_text() == after

    # a second writer (e.g. the next ReSTEM round's model) adds its rows and keeps the first one's
    second = shutil.copytree(tiny_model_dir, tmp_path / "second")
    writers = ("--selfedit.model", f"{writer},{second}")
    assert main(_argv(squad_tiny, tiny_model_dir, out, *writers)) == 0
    grown = (out / "results.jsonl").read_text()
    assert grown.startswith(after)
    assert {json.loads(line)["condition"] for line in grown[len(after):].splitlines()} == \
        {"self-edits:second", "passage x steps:second"}
    assert [r["source"] for r in read_jsonl(out / "selfedits.jsonl")] == ["own", "other", "other:1"]

    # the second writer's rows equal those of a table made with both writers from the start
    # (where the first writer is named other:0, its self-edits sampled under that name's seed)
    fresh = tmp_path / "fresh"
    assert main(_argv(squad_tiny, tiny_model_dir, fresh, *writers)) == 0
    assert [r for r in read_jsonl(fresh / "selfedits.jsonl") if r["source"] == "other:1"] == \
        [r for r in read_jsonl(out / "selfedits.jsonl") if r["source"] == "other:1"]
    rows = ("self-edits:second", "passage x steps:second")
    assert {c: d for c, d in json.loads((fresh / "summary.json").read_text())["conditions"].items() if c in rows} == \
        {c: d for c, d in json.loads((out / "summary.json").read_text())["conditions"].items() if c in rows}


def test_a_table_resumed_with_a_new_control_computes_only_its_rows(tiny_model_dir, squad_tiny, tmp_path, capsys):
    out = tmp_path / "table"
    perm = ("--selfedit.permutations", "1")
    assert main(_argv(squad_tiny, tiny_model_dir, out, *perm)) == 0
    before = (out / "results.jsonl").read_text()
    # a control that does not extend the list (replacing steps) is refused, nothing lost
    assert main(_argv(squad_tiny, tiny_model_dir, out, *perm, "--eval.controls", "permutations")) != 0
    assert "eval.controls may only grow" in capsys.readouterr().err
    assert (out / "results.jsonl").read_text() == before

    assert main(_argv(squad_tiny, tiny_model_dir, out, *perm, "--eval.controls", "steps,permutations")) == 0
    after = (out / "results.jsonl").read_text()
    assert after.startswith(before)
    added = [json.loads(line) for line in after[len(before):].splitlines()]
    assert added and {r["condition"] for r in added} == {"passage + permutations"}
    summary = json.loads((out / "summary.json").read_text())
    assert "self-edits" in summary["gain_vs_permutations_control"]
    assert yaml.safe_load((out / "config.yaml").read_text())["eval"]["controls"] == ["steps", "permutations"]
    resumes = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("event") == "resume"]
    assert resumes[-1]["grown"] == {"eval.controls": ["steps", "permutations"]}

    # a new writer then adds its self-edits and its steps control; the permutations control
    # (the update without any self-edit) is the row already there, paired with both writers
    writer = shutil.copytree(tiny_model_dir, tmp_path / "writer")
    argv = _argv(squad_tiny, tiny_model_dir, out, *perm, "--eval.controls", "steps,permutations",
                 "--selfedit.model", str(writer))
    assert main(argv) == 0
    grown = (out / "results.jsonl").read_text()
    assert grown.startswith(after)
    added = {json.loads(line)["condition"] for line in grown[len(after):].splitlines()}
    assert added == {"self-edits:writer", "passage x steps:writer"}
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["gain_vs_permutations_control"]) == {"self-edits", "self-edits:writer"}
    assert ["passage + permutations", "self-edits:writer"] in summary["controls"]


def test_two_writers_in_folders_of_one_name_get_rows_of_their_own(tiny_model_dir, squad_tiny, tmp_path, capsys):
    """Two ReSTEM runs' round-2 models (`<run>/rounds/round_2/model`) in one table: the second
    writer's rows were named like the first's (`self-edits:round_2`), so a table grown by it read
    the first writer's results as its own and computed nothing. Now it gets `round_2@<run>`, a
    table grown by it computes its rows, and they equal those of a table made with both."""
    from seal.knowledge.table import writer_labels

    a = shutil.copytree(tiny_model_dir, tmp_path / "run-a/rounds/round_2/model")
    b = shutil.copytree(tiny_model_dir, tmp_path / "run-b/rounds/round_2/model")
    assert writer_labels([str(a), str(b)]) == ["round_2", "round_2@run-b"]
    assert writer_labels(["x/a/r/model", "y/a/r/model", "z/a/r/model"]) == ["r", "r@y", "r@z"]
    assert writer_labels(["runs/t/rounds/round_2/model", "runs/t/rounds/round_3/model"]) == ["round_2", "round_3"]
    # one folder under two spellings is refused before anything is made
    twice = f"{a},{tmp_path}/run-a/rounds/./round_2/model"
    assert main(_argv(squad_tiny, tiny_model_dir, tmp_path / "same", "--selfedit.model", twice)) == 2
    assert "is named twice" in capsys.readouterr().err and not (tmp_path / "same").exists()

    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    assert main(_argv(squad_tiny, tiny_model_dir, grown, "--selfedit.model", str(a))) == 0
    first = {r["condition"] for r in read_jsonl(grown / "results.jsonl")}
    assert main(_argv(squad_tiny, tiny_model_dir, grown, "--selfedit.model", f"{a},{b}")) == 0
    rows = lambda out: {(r["condition"], r["passage_id"]): r["questions"]  # noqa: E731
                        for r in read_jsonl(out / "results.jsonl")}
    new = {k for k in rows(grown) if k[0] not in first}
    assert {c for c, _ in new} == {"self-edits:round_2@run-b", "passage x steps:round_2@run-b"}
    assert main(_argv(squad_tiny, tiny_model_dir, fresh, "--selfedit.model", f"{a},{b}")) == 0
    assert {k: rows(grown)[k] for k in new} == {k: rows(fresh)[k] for k in new}
    summary = json.loads((grown / "summary.json").read_text())
    assert len(summary["order"]) == len(set(summary["order"]))
