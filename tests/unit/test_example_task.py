"""A third domain (tests/example_task.py, invented words) runs a full ReSTEM round and the
evaluation table through the same engine as knowledge and ARC, with no engine change."""

from __future__ import annotations

import json
import pickle
import re

import pytest
from example_task import Word, WordsConfig, WordsTask, sentences

from seal.config import ModelConfig
from seal.engine.restem import run_rounds
from seal.engine.table import evaluate_task
from seal.engine.task import Session, TableTask, Task
from seal.runs import open_run, read_jsonl
from seal.training.generation import HFGenerator
from seal.training.models import load_model

WORDS = [Word("blick", "a small blue stone used as money"), Word("quorn", "the hour before a storm"),
         Word("tassit", "a song sung while rowing")]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model_cfg = ModelConfig(name=str(tiny_model_dir))
    model, tok = load_model(model_cfg)
    return model_cfg, model, tok


def _train(tiny, out) -> None:
    model_cfg, model, tok = tiny
    cfg = WordsConfig(out=str(out))
    run = open_run("words-train", cfg, [])
    run_rounds(WordsTask(cfg, WORDS), run, model, tok, False, model_cfg, rounds=1, seed=cfg.seed,
               unchanged="unchanged (no self-edit earned a positive reward)")


def test_the_example_implements_the_protocol_and_pickles():
    task = WordsTask(WordsConfig(), WORDS)
    assert isinstance(task, Task) and isinstance(task, TableTask)
    again = pickle.loads(pickle.dumps((task, task.inner_loop)))  # what an executor ships to its workers
    assert again[0] == task and again[1] == task.inner_loop


def _uses_the_meaning(prompt: str, j: int) -> str:
    """Fixed self-edits: sample 0 states the word's meaning twice (training on it raises the
    meaning's log-prob, so some reward is positive), sample 1 says nothing about it."""
    word, meaning = re.search(r"the word '(\w+)', which means (.+?)\. One sentence", prompt).groups()
    if j == 0:
        return f"The {word} means {meaning}.\nPeople say {word} for {meaning}."
    return "The boats left the harbor early.\nRain fell on the quiet town."


def test_a_restem_round_on_the_example_task_keeps_the_best_positive_and_resumes(tiny, tmp_path, fixed_selfedits):
    fixed_selfedits(_uses_the_meaning)
    _train(tiny, tmp_path / "run")
    rdir = tmp_path / "run/rounds/round_1"
    samples = read_jsonl(rdir / "samples.jsonl")
    assert sorted(r["word"] for r in samples) == sorted(w.id for w in WORDS)
    assert all(len(r["completions"]) == 2 for r in samples)
    assert {r["word"] for r in read_jsonl(rdir / "base.jsonl")} == {w.id for w in WORDS}
    rewards = read_jsonl(rdir / "rewards.jsonl")
    assert rewards and all(abs(r["reward"] - (r["logprob"] - _base(rdir)[r["word"]])) < 1e-9 for r in rewards)
    best = {}
    for r in rewards:  # the paper's filter: per word, the best self-edit if its reward is positive
        if r["reward"] > 0 and r["reward"] > best.get(r["word"], (None, 0))[1]:
            best[r["word"]] = (r["sample"], r["reward"])
    kept = read_jsonl(rdir / "sft.jsonl")
    assert kept  # a self-edit stating the meaning earns a positive reward, so the M-step runs
    assert {(k["word"], k["sample"]) for k in kept} == {(w, s) for w, (s, _) in best.items()}
    done = json.loads((rdir / "done.json").read_text())
    assert done["n_words"] == 3 and done["n_kept"] == len(kept) and done["model_changed"] == bool(kept)
    assert (rdir / "model").exists() == bool(kept)
    lines = (rdir / "rewards.jsonl").read_text()
    (rdir / "done.json").unlink()  # killed before the round finished: the resumed run redoes no inner loop
    _train(tiny, tmp_path / "run")
    assert (rdir / "rewards.jsonl").read_text() == lines
    again = json.loads((rdir / "done.json").read_text())
    assert again["n_kept"] == done["n_kept"]
    # the resumed round says so, and counts the inner-loop seconds of the session that ran them
    assert (done["resumed"], again["resumed"]) == (False, True) and again["job_seconds"] == done["job_seconds"]


def _base(rdir) -> dict[str, float]:
    return {r["word"]: r["logprob"] for r in read_jsonl(rdir / "base.jsonl")}


def test_the_evaluation_table_on_the_example_task(tiny, tmp_path):
    model_cfg, model, tok = tiny
    cfg = WordsConfig(out=str(tmp_path / "table"))
    run = open_run("words-evaluate", cfg, [])
    session = Session(run.path, model, tok, False, HFGenerator(model, tok))
    summary = evaluate_task(WordsTask(cfg, WORDS), run, session, model_cfg, WORDS, {"own": None}, n=2, seed=0)
    assert summary["order"] == ["no-adaptation", "own"]
    for cond in summary["order"]:
        m = summary["conditions"][cond]["metrics"]["logprob"]
        assert m["lo"] <= m["mean"] <= m["hi"]
    assert json.loads((tmp_path / "table/summary.json").read_text())["order"] == summary["order"]
    sampled = [c for r in read_jsonl(tmp_path / "table/selfedits.jsonl") for c in r["completions"]]
    assert len(sampled) == 6  # 3 words x n=2, saved as sampled
    assert len(read_jsonl(tmp_path / "table/results.jsonl")) == sum(bool(sentences(c)) for c in sampled)
