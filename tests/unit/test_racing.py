"""Racing selection (successive halving): the rule, and that a survivor learns what exhaustive
evaluation would have taught it."""

import json

import pytest
import torch

from seal.cli import main
from seal.config import InnerLoopConfig, LoRAConfig, ModelConfig
from seal.engine.racing import rung_epochs, score_key, survivors
from seal.runs import read_jsonl
from seal.training import lora
from seal.training.inner_loop import TrainExample, epoch_aligned, schedule, train_adapters
from seal.training.models import load_model

TEXTS = [
    [TrainExample("Velmora is a harbor town founded by salt traders."), TrainExample("The lighthouse is the Ambertine Tower."),
     TrainExample("Velmora sits on Orlet Island.")],
    [TrainExample("The pellicant frog eats copper beetles on Orlet Island.")],
    [TrainExample("Brevka holds the Tamsin Festival every April."), TrainExample("Brevka is a mining company.")],
    [TrainExample("The Ambertine Tower was built in 1820.")],
]
CFG = InnerLoopConfig(lora=LoRAConfig(rank=4, alpha=8), lr=5e-3, epochs=4, steps="packed", batch_size=2, dtype="fp32")


def test_rungs_grow_geometrically_below_the_budget():
    assert rung_epochs(1, 2, 5) == (1, 2, 4)
    assert rung_epochs(2, 2, 5) == (2, 4)
    assert rung_epochs(1, 3, 10) == (1, 3, 9)
    assert rung_epochs(5, 2, 5) == ()
    assert rung_epochs(1, 1.5, 4) == (1, 2, 3)  # rounding never repeats a rung


def test_survivors_keep_the_best_and_every_tie():
    assert survivors({0: (0.2,), 1: (0.8,), 2: (0.5,), 3: (0.1,), 4: (0.6,)}, 2) == [1, 2, 4]
    assert survivors({0: (0.0, -3.0), 1: (0.0, -2.0), 2: (0.4, -5.0)}, 3) == [2]
    assert survivors({0: (0.0,), 1: (0.0,), 2: (0.0,), 3: (0.0,), 4: (0.0,)}, 2) == [0, 1, 2, 3, 4]
    assert survivors({0: (0.4,), 1: (0.4,), 2: (0.0,)}, 3) == [0, 1]  # tied with the last kept one
    assert survivors({0: (1.0,)}, 2) == [0]


def test_score_key_breaks_reward_ties_by_logprob():
    m = {"containment": 0.5, "logprob": -2.0}
    assert score_key(m, "reward", "containment") == (0.5, -2.0)
    assert score_key(m, "logprob", "containment") == (-2.0,)
    assert score_key(m, "reward", "logprob") == (-2.0,)


def test_epoch_aligned_keeps_each_adapters_batches():
    plans = [schedule(len(t), CFG, s) for t, s in zip(TEXTS, [1, 2, 3, 4])]
    steps, ends = epoch_aligned(plans, [len(t) for t in TEXTS], CFG.batch_size, CFG.epochs)
    for a, plan in enumerate(plans):
        assert [s[a] for s in steps if s[a] is not None] == plan
    assert sorted(ends.values()) == [1, 2, 3, 4] and max(ends) == len(steps) - 1
    firsts = [0] + [i + 1 for i in sorted(ends)[:-1]]  # adapter 1 (one batch per epoch) waits after its batch
    assert [i for i in range(len(steps)) if steps[i][1] is not None] == firsts


def _train(model, tok, judge=None, rungs=()):
    state = lora.attach(model, CFG.lora, len(TEXTS))
    stats = train_adapters(model, tok, TEXTS, CFG, [1, 2, 3, 4], judge=judge, rungs=rungs)
    weights = [lora.adapter_state(state, a) for a in range(len(TEXTS))]
    lora.detach(model)
    return stats, weights


def test_a_survivor_learns_what_exhaustive_training_teaches(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    _, full = _train(model, tok)
    calls = []

    def judge(epoch, alive):
        calls.append((epoch, list(alive)))
        return [a for a in alive if a != 1] if epoch == 1 else [a for a in alive if a != 3]

    stats, raced = _train(model, tok, judge, rungs=(1, 2))
    assert calls == [(1, [0, 1, 2, 3]), (2, [0, 2, 3])]
    assert stats["epochs_trained"] == [4, 1, 4, 2]
    for a in (0, 2):  # survivors: the same update (only which adapters share a step differs)
        for k in full[a]:
            torch.testing.assert_close(raced[a][k], full[a][k], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(raced[1][k], full[1][k]) for k in full[1])  # stopped after epoch 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, base[k]), f"base weight {k} changed"


def test_a_judge_that_keeps_everyone_changes_nothing(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    _, full = _train(model, tok)
    stats, kept = _train(model, tok, lambda e, alive: alive, rungs=(1, 2, 3))
    assert stats["epochs_trained"] == [4] * 4
    for a in range(4):
        for k in full[a]:
            torch.testing.assert_close(kept[a][k], full[a][k], rtol=1e-4, atol=1e-6)


def test_a_judge_must_return_a_subset(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    with pytest.raises(ValueError, match="not a non-empty subset"):
        _train(model, tok, lambda e, alive: [], rungs=(1,))


FAST = ["--selfedit.max_new_tokens", "24", "--eval.max_answer_tokens", "4", "--inner.epochs", "4", "--threads", "1",
        "--eval.reward", "logprob", "--inner.lr", "0.01"]


def test_train_with_racing_keeps_only_survivors_and_their_rewards_equal_exhaustive(tiny_model_dir, squad_tiny, tmp_path, fixed_selfedits):
    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
            "--restem.passages_per_round", "3", "--selfedit.k", "4", "--selfedit.template", "rewrite",
            "--restem.keep", "all-positive", *FAST]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    assert main(args + ["--restem.selection", "racing", "--restem.race_first", "1", "--restem.race_score", "reward",
                        "--out", str(tmp_path / "race")]) == 0
    full = {(r["passage_id"], r["sample"]): r for r in read_jsonl(tmp_path / "full/rounds/round_1/rewards.jsonl")}
    race = {(r["passage_id"], r["sample"]): r for r in read_jsonl(tmp_path / "race/rounds/round_1/rewards.jsonl")}
    assert set(full) == set(race)
    out = [k for k, r in race.items() if r.get("raced_out")]
    assert out, "racing stopped nothing"
    for k, r in race.items():
        assert r["race"]["rungs"], "every raced self-edit was scored at a rung"
        if r.get("raced_out"):
            assert r["reward"] is None and r["race"]["stopped_at"] in (1, 2)
        else:
            assert abs(r["reward"] - full[k]["reward"]) < 1e-3
    kept = {(r["passage_id"], r["sample"]) for r in read_jsonl(tmp_path / "race/rounds/round_1/sft.jsonl")}
    assert not kept & set(out)
    done = json.loads((tmp_path / "race/rounds/round_1/done.json").read_text())
    assert done["n_raced_out"] == len(out) and done["n_scored"] == len(race) - len(out)


def test_logprob_rungs_under_a_generated_reward(tiny_model_dir, squad_tiny, tmp_path, fixed_selfedits):
    """`race_score logprob` with a containment reward: rungs rank by the answer log-prob alone
    (no generated answers), survivors get exhaustive evaluation's containment reward. (It used to
    fail at the first rung: its grading settings were refused as 'no answers to grade'.)"""
    fast = [a if a != "logprob" else "containment" for a in FAST]
    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
            "--restem.passages_per_round", "2", "--selfedit.k", "4", "--selfedit.template", "rewrite",
            "--restem.keep", "all-positive", *fast]
    assert main(args + ["--out", str(tmp_path / "full")]) == 0
    assert main(args + ["--restem.selection", "racing", "--restem.race_score", "logprob",
                        "--out", str(tmp_path / "race")]) == 0
    full = {(r["passage_id"], r["sample"]): r for r in read_jsonl(tmp_path / "full/rounds/round_1/rewards.jsonl")}
    race = {(r["passage_id"], r["sample"]): r for r in read_jsonl(tmp_path / "race/rounds/round_1/rewards.jsonl")}
    assert set(full) == set(race) and any(r.get("raced_out") for r in race.values())
    for k, r in race.items():
        assert all(set(g["metrics"]) == {"logprob"} for g in r["race"]["rungs"])  # nothing generated at a rung
        if not r.get("raced_out"):
            assert r["reward"] == pytest.approx(full[k]["reward"], abs=1e-9) and "containment" in r["metrics"]
