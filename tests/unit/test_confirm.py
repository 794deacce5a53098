"""restem.confirm logprob: the filter keeps a self-edit only if its update also raised the gold
answer's log-prob above its control's."""

import json

import pytest

from seal.cli import main
from seal.config import ConfigError, ReSTEMConfig
from seal.engine.restem import confirmed_rewards, select_kept
from seal.knowledge.task import logprob_over_control
from seal.runs import read_jsonl, write_jsonl

ARGS = ["--restem.rounds", "1", "--restem.passages_per_round", "2", "--selfedit.k", "3",
        "--restem.reward_against", "permutations-control", "--selfedit.permutations", "1",
        "--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1"]


def _rec(pid, sample, reward, logprob):
    rec = {"passage_id": pid, "sample": sample, "seed": 0, "reward": reward, "metrics": {"logprob": logprob}}
    return {**rec, "control_permutations": 1} if sample is None else rec


def test_logprob_over_control_and_the_filter():
    recs = [_rec("a", None, 0.25, -3.0), _rec("a", 0, 0.5, -2.5)]
    assert logprob_over_control(recs) == pytest.approx(0.5)
    assert logprob_over_control(recs[1:]) is None  # no control: nothing to confirm against
    rewards = {("a", 0): 0.25, ("a", 1): 0.5, ("b", 0): 0.25, ("b", 1): -0.25}
    confirms = {("a", 0): 0.3, ("a", 1): -0.1, ("b", 0): None, ("b", 1): 1.0}
    assert [k[:2] for k in select_kept(rewards, "best-positive")] == [("a", 1), ("b", 0)]
    # (a, 1) has the best reward but lowered the log-prob; (b, 0) has no second score
    assert select_kept(confirmed_rewards(rewards, confirms), "best-positive") == [("a", 0, 0.25)]
    assert confirmed_rewards(rewards, None) is rewards
    with pytest.raises(ConfigError, match="reward_against"):
        ReSTEMConfig(confirm="logprob")


def test_a_run_keeps_only_confirmed_selfedits(tiny_model_dir, squad_tiny, tmp_path, fixed_selfedits):
    """The source run's rewards are set by hand (a random model's containment is all 0), then
    another run takes its E-step with confirm on: what it keeps, and what it counts as
    unconfirmed, follow the records."""
    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), *ARGS, "--restem.keep", "all-positive"]
    src = tmp_path / "src"
    assert main([*args, "--out", str(src)]) == 0
    path = src / "rounds/round_1/rewards.jsonl"
    recs = read_jsonl(path)
    ctrl = {r["passage_id"]: r for r in recs if r.get("control_permutations")}
    own = sorted((r for r in recs if not r.get("control_permutations")), key=lambda r: (r["passage_id"], r["sample"]))
    assert len(own) == 6 and len(ctrl) == 2
    # rewards over the control: +0.25 for samples 0 and 1, -0.25 for 2; log-prob above the control for 0 only
    for r in own:
        c = ctrl[r["passage_id"]]
        r["reward"] = c["reward"] + (0.25 if r["sample"] < 2 else -0.25)
        r["metrics"]["logprob"] = c["metrics"]["logprob"] + (0.5 if r["sample"] == 0 else -0.5)
    write_jsonl(path, [*ctrl.values(), *own])

    plain, conf = tmp_path / "plain", tmp_path / "conf"
    assert main([*args, "--restem.estep_from", str(src), "--out", str(plain)]) == 0
    assert main([*args, "--restem.estep_from", str(src), "--restem.confirm", "logprob", "--out", str(conf)]) == 0
    pids = sorted(ctrl)
    kept = {d: [(k["passage_id"], k["sample"]) for k in read_jsonl(d / "rounds/round_1/sft.jsonl")] for d in (plain, conf)}
    assert kept[plain] == [(p, j) for p in pids for j in (0, 1)]
    assert kept[conf] == [(p, 0) for p in pids]
    done = {d: json.loads((d / "rounds/round_1/done.json").read_text()) for d in (plain, conf)}
    assert done[plain]["n_unconfirmed_positive"] == 0 and done[conf]["n_unconfirmed_positive"] == 2
    assert done[conf]["mean_reward"] == done[plain]["mean_reward"]  # the reward itself is unchanged
