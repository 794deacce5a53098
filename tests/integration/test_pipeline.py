"""End to end on the tiny model: evaluate, train, kill -9 and resume, determinism, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seal.cli import main
from seal.demo import N_EVAL, N_TRAIN
from seal.runs import read_jsonl

FAST = ["--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1"]


def _rewards(run: Path) -> dict:
    out = {}
    for f in sorted(run.glob("rounds/round_*/rewards.jsonl")):
        for r in read_jsonl(f):
            out[(r["round"], r["passage_id"], r["sample"], r["seed"])] = r["reward"]
    return out


def test_evaluate_table_with_external_and_cpt(tiny_model_dir, squad_tiny, tmp_path):
    data = json.loads(squad_tiny.read_text())
    for p in data:
        p["completions"] = [f"{p['title']} is described here.\nIt has facts about {p['questions'][0]['answer']}."]
    ext = tmp_path / "external.json"
    ext.write_text(json.dumps(data))
    out = tmp_path / "ev"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--completions", str(ext),
                 "--out", str(out), *FAST]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["order"] == ["no-adaptation", "passage", "self-edits", "passage x steps", "external",
                          "passage x steps:external"]
    for c in s["conditions"].values():
        assert c["n_questions"] == 8 and c["n_passages"] == 4
        for m in ("logprob", "containment", "f1", "em"):
            v = c["metrics"][m]
            assert v["lo"] <= v["mean"] <= v["hi"]
    g = s["gain_vs_own_selfedits"]["external"]["logprob"]
    assert g["n"] == 4 and g["lo"] <= g["mean"] <= g["hi"]
    # each self-edit row against passage-only and against the passage trained for as many steps
    for cond in ("self-edits", "external"):
        ctrl = "passage x steps" + (":external" if cond == "external" else "")
        assert s["conditions"][cond]["steps_mean"] == s["conditions"][ctrl]["steps_mean"]
        assert s["conditions"][cond]["steps_mean"] > s["conditions"]["passage"]["steps_mean"]
        assert s["gain_vs_steps_control"][cond]["logprob"]["n"] == 4
        assert s["gain_vs_passage"][cond]["containment"]["n"] == 4
    assert s["controls"] == [["passage x steps", "self-edits"], ["passage x steps:external", "external"]]
    assert (out / "passages.jsonl").exists() and (out / "manifest.json").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["data"]["sha256"]) == 64 and manifest["seed"] == 0
    assert len(read_jsonl(out / "results.jsonl")) == 20  # 4 passages x 5 adapted conditions

    cpt = tmp_path / "cpt"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--cpt", "--out", str(cpt), *FAST]) == 0
    s = json.loads((cpt / "summary.json").read_text())
    assert s["mode"] == "cpt" and s["conditions"]["passage"]["n_questions"] == 8
    assert len(read_jsonl(cpt / "results.jsonl")) == 2  # one update per condition


def test_train_is_deterministic_and_resume_skips_done(tiny_model_dir, squad_tiny, tmp_path):
    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "2",
            "--restem.passages_per_round", "2", "--selfedit.k", "2", "--restem.keep", "top-fraction", *FAST]
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(args + ["--out", str(a)]) == 0
    assert main(args + ["--out", str(b)]) == 0
    ra, rb = _rewards(a), _rewards(b)
    assert ra and ra == rb
    for r in (1, 2):
        sa = read_jsonl(a / f"rounds/round_{r}/samples.jsonl")
        assert sa == read_jsonl(b / f"rounds/round_{r}/samples.jsonl")
    assert (a / "rounds/round_2/model/model.safetensors").exists()
    # a finished run resumed does nothing new
    n_lines = len((a / "rounds/round_1/rewards.jsonl").read_text().splitlines())
    assert main(args + ["--out", str(a)]) == 0
    assert len((a / "rounds/round_1/rewards.jsonl").read_text().splitlines()) == n_lines
    # resuming with other settings is refused, and so is fewer rounds
    assert main(args + ["--out", str(a), "--inner.lr", "0.5"]) == 2
    assert main(args + ["--out", str(a), "--restem.rounds", "1"]) == 2

    # a finished 1-round run given a second round runs only that round, as the 2-round run did
    c = tmp_path / "c"
    assert main(args + ["--out", str(c), "--restem.rounds", "1"]) == 0
    round_1 = (c / "rounds/round_1/rewards.jsonl").read_text()
    assert json.loads((c / "final.json").read_text())["model"].endswith("round_1/model")
    assert main(args + ["--out", str(c)]) == 0
    assert (c / "rounds/round_1/rewards.jsonl").read_text() == round_1
    assert _rewards(c) == ra
    assert read_jsonl(c / "rounds/round_2/samples.jsonl") == read_jsonl(a / "rounds/round_2/samples.jsonl")
    assert json.loads((c / "final.json").read_text())["model"].endswith("round_2/model")
    grown = [r for r in read_jsonl(c / "metrics.jsonl") if r.get("event") == "resume"]
    assert grown[-1]["grown"] == {"restem.rounds": 2}


def test_kill9_and_resume_equals_uninterrupted(tiny_model_dir, squad_tiny, tmp_path):
    """A real subprocess is killed with SIGKILL mid-round; the resumed run's rewards equal an
    uninterrupted run's, and finished evaluations are not redone."""
    args = [sys.executable, "-m", "seal.cli", "train", "--model", str(tiny_model_dir), "--data", str(squad_tiny),
            "--restem.rounds", "1", "--restem.passages_per_round", "4", "--selfedit.k", "3",
            "--inner.parallel_adapters", "1", "--restem.keep", "top-fraction",
            "--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "6", "--threads", "1"]
    env = {**os.environ, "SEAL_QUIET": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(args + ["--out", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rewards = killed / "rounds/round_1/rewards.jsonl"
    deadline = time.time() + 300  # generous: a loaded machine is slow to write the first rewards
    while time.time() < deadline and proc.poll() is None:
        if rewards.exists() and len(rewards.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(read_jsonl(rewards))
    assert n_before >= 3
    done_before = {(r["passage_id"], r["sample"]) for r in read_jsonl(rewards)}
    subprocess.run(args + ["--out", str(killed)], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    full = tmp_path / "full"
    subprocess.run(args + ["--out", str(full)], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recs = read_jsonl(rewards)
    keys = [(r["passage_id"], r["sample"]) for r in recs]
    n_full = len(read_jsonl(full / "rounds/round_1/rewards.jsonl"))  # self-edits that parsed
    assert n_before < n_full
    assert len(keys) == len(set(keys)) == n_full  # nothing finished was redone
    assert done_before <= set(keys)
    assert _rewards(killed) == _rewards(full)
    assert json.loads((killed / "rounds/round_1/done.json").read_text())["n_kept"] == \
        json.loads((full / "rounds/round_1/done.json").read_text())["n_kept"]


@pytest.mark.parametrize("argv,needle", [
    (["evaluate", "--data", "/no/such.json", "--model", "/no/such/model"], "/no/such.json: no such data file"),
    (["evaluate"], "needs --data"),
    (["evaluate", "--data", "{fixture}", "--model", "/no/such/model"], "/no/such/model: no such model folder"),
    (["evaluate", "--data", "{fixture}", "--inner.epochs", "zero"], "inner.epochs: expected int"),
])
def test_cli_errors_are_one_line(argv, needle, squad_tiny, capsys, tmp_path):
    argv = [a.replace("{fixture}", str(squad_tiny)) for a in argv] + ["--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_metrics_jsonl_and_tensorboard(tiny_model_dir, squad_tiny, tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
                 "--restem.passages_per_round", "2", "--selfedit.k", "2", "--tensorboard", "true",
                 "--out", str(out), *FAST]) == 0
    events = read_jsonl(out / "metrics.jsonl")
    rnd = [e for e in events if e["event"] == "round"]
    assert len(rnd) == 1 and rnd[0]["step"] == 1 and "n_kept" in rnd[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert "round/n_kept" in acc.Tags()["scalars"]


def test_label_free_train_grades_probes_and_records_gold_beside(tiny_model_dir, squad_tiny, tmp_path, fixed_selfedits):
    """restem.reward_questions probes: probes written once (resumable), rewards from probes, the
    data's questions graded beside them as gold_reward, the agreement in done.json; the same
    samples as a gold-reward run with the same seed (only the grading differs). Fixed self-edits
    (conftest.passage_lines): how many a random tiny model's samples parse differs by CPU."""
    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
            "--restem.passages_per_round", "3", "--selfedit.k", "3", *FAST, "--eval.reward", "logprob"]
    free, gold = tmp_path / "free", tmp_path / "gold"
    assert main(args + ["--restem.reward_questions", "probes", "--restem.probes", "2", "--out", str(free)]) == 0
    assert main(args + ["--out", str(gold)]) == 0
    probes = read_jsonl(free / "probes.jsonl")
    assert len(probes) == 3 and all(1 <= len(r["probes"]) <= 2 for r in probes)
    samples = read_jsonl(free / "rounds/round_1/samples.jsonl")
    assert samples == read_jsonl(gold / "rounds/round_1/samples.jsonl")
    assert all(c.startswith("- ") for r in samples for c in r["completions"])  # the fixed self-edits
    recs = read_jsonl(free / "rounds/round_1/rewards.jsonl")
    gold_recs = {(r["passage_id"], r["sample"]): r["reward"] for r in read_jsonl(gold / "rounds/round_1/rewards.jsonl")}
    assert recs and all("gold_reward" in r for r in recs)
    # the gold reward recorded beside the probes is the gold run's reward for the same self-edit
    for r in recs:
        assert abs(r["gold_reward"] - gold_recs[(r["passage_id"], r["sample"])]) < 1e-4
    assert any(abs(r["reward"] - r["gold_reward"]) > 1e-6 for r in recs)  # graded on other questions
    done = json.loads((free / "rounds/round_1/done.json").read_text())
    assert done["reward_questions"] == "probes"
    agree = done["agreement_with_gold"]
    graded = [r for r in recs if r["reward"] is not None and r["gold_reward"] is not None]
    assert agree["n_passages"] == len({r["passage_id"] for r in graded}) == 3
    assert agree["n_selfedits"] == len(graded) == len(recs) == 9
    assert 0 <= agree["same_kept"]["mean"] <= 1
    assert json.loads((gold / "rounds/round_1/done.json").read_text())["agreement_with_gold"] is None


def test_label_free_train_runs_on_a_file_without_questions(tiny_model_dir, squad_tiny, tmp_path, fixed_selfedits):
    data = [{"title": p["title"], "context": p["context"], "questions": []} for p in json.loads(squad_tiny.read_text())]
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(data))
    args = ["train", "--model", str(tiny_model_dir), "--data", str(bare), "--restem.rounds", "1",
            "--restem.passages_per_round", "2", "--selfedit.k", "2", *FAST]
    assert main(args + ["--out", str(tmp_path / "gold")]) == 2  # gold rewards need questions
    assert main(args + ["--restem.reward_questions", "probes", "--out", str(tmp_path / "free")]) == 0
    recs = read_jsonl(tmp_path / "free/rounds/round_1/rewards.jsonl")
    assert len(recs) == 4 and not any("gold_reward" in r for r in recs)  # 2 passages x 2 fixed self-edits


def test_demo_tables_the_control_and_says_which_row_taught_most(tiny_model_dir, tmp_path, capsys):
    """seal demo on the tiny model: one round, then the table with passage-only, each self-edit
    row and its steps control, and the closing sentences naming the control and the best row."""
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_model_dir), "--out", str(out), "--selfedit.max_new_tokens", "12",
                 "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--executor.kind", "local"]) == 0
    s = json.loads((out / "eval" / "summary.json").read_text())
    assert s["order"][:4] == ["no-adaptation", "passage", "self-edits", "passage x steps"]
    # the round trains on the first N_TRAIN built-in passages, the table scores the next N_EVAL
    assert json.loads((out / "rounds/round_1/done.json").read_text())["n_passages"] == N_TRAIN
    assert s["conditions"]["passage"]["n_passages"] == N_EVAL
    assert s["conditions"]["passage x steps"]["steps_mean"] == s["conditions"]["self-edits"]["steps_mean"]
    text = capsys.readouterr().out
    assert "for as many steps as the own self-edits' update" in text and "Most taught: " in text
