"""Few-shot ARC with a (tiny, random) model: config, TTT, fallback of invalid self-edits, caps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seal.arc.config import ArcConfig, OracleConfig
from seal.arc.data import load_tasks
from seal.arc.evaluate import IN_CONTEXT, ORACLE, OWN, summarize
from seal.arc.grids import answer_text, task_prompt
from seal.arc.run import make_job, oracle_parsed, plan, select_tasks, train_group
from seal.arc.selfedit import SelfEditConfig
from seal.config import ConfigError, ModelConfig, from_dict, to_dict
from seal.training import lora
from seal.training.models import format_prompt, load_model, uses_chat

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "arc"
VALID = json.dumps(SelfEditConfig(learning_rate=1e-2, num_train_epochs=1).to_dict())


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    return model, tok, uses_chat(tok, ModelConfig())


@pytest.fixture(scope="module")
def tasks():
    return {t.id: t for t in load_tasks(str(FIXTURES))}


def test_config_validates_and_round_trips():
    cfg = ArcConfig(tasks="seal:train", selfedits=3, oracle=OracleConfig(families=("none", "basic+size")))
    assert from_dict(ArcConfig, to_dict(cfg)) == cfg
    assert len(cfg.oracle.configs()) == 2 * 1 * 2 * 1
    with pytest.raises(ConfigError, match="selfedits"):
        ArcConfig(selfedits=0)
    with pytest.raises(ConfigError, match="unknown family 'rotate'"):
        OracleConfig(families=("rotate",))
    with pytest.raises(ConfigError, match="learning_rates"):
        from_dict(ArcConfig, {"oracle": {"learning_rates": ["fast"]}})


def test_ttt_prompts_match_inference_format_and_step_cap_applies(tiny, tasks):
    _, tok, chat = tiny
    task = tasks["mirror"]  # 3 demonstrations
    cfg = ArcConfig(max_examples=3, max_steps=2, batch_size=1, permutations=0)
    job = make_job(task, SelfEditConfig(num_train_epochs=5), tok, chat, cfg)
    assert job is not None and job.capped and job.epochs == 1 and len(job.examples) == 2
    rest = [p for p in task.train[1:]]
    assert job.examples[0].prompt == format_prompt(tok, task_prompt(rest, task.train[0].input), chat)
    assert job.examples[0].completion == answer_text(task.train[0].output)
    uncapped = make_job(task, SelfEditConfig(num_train_epochs=2), tok, chat, ArcConfig(max_steps=0, permutations=0))
    assert not uncapped.capped and uncapped.epochs == 2 and len(uncapped.examples) == 3


def test_ttt_changes_the_adapter_and_leaves_the_base_unchanged(tiny, tasks):
    model, tok, chat = tiny
    cfg = ArcConfig(max_examples=3, max_steps=3, batch_size=1, permutations=0)
    jobs = [make_job(tasks[t], SelfEditConfig(learning_rate=1e-2, num_train_epochs=1), tok, chat, cfg)
            for t in ("mirror", "recolor")]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = lora.attach(model, cfg.lora, len(jobs))
    try:
        stats = train_group(model, tok, jobs, cfg)
        for a in range(len(jobs)):
            assert any(float(layer.B[a].abs().sum()) > 0 for layer in state.layers.values())  # B starts at 0
        assert all(t > 0 for t in stats["tokens"])
    finally:
        lora.detach(model)
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_invalid_selfedit_falls_back_to_no_training_and_is_counted(tiny, tasks):
    _, tok, chat = tiny
    cfg = ArcConfig(max_examples=2, max_steps=2, bootstrap=50)
    chosen = [tasks["mirror"], tasks["double"]]
    sources = {OWN: {"mirror": ["I would rotate it.", VALID], "double": ["{\"training\": {}}", VALID]},
               ORACLE: oracle_parsed(ArcConfig(oracle=OracleConfig(families=("none",), learning_rates=("1e-2",),
                                                                   epochs=("1",))))}
    attempts, jobs = plan(chosen, sources, tok, chat, cfg)
    own = attempts[OWN]
    assert [a.parsed.valid for a in own] == [False, True, False, True]
    assert [a.job_key is None for a in own] == [True, False, True, False]
    # the valid self-edit and the oracle config are the same configuration: one TTT run per task
    assert len(jobs) == 2 and {j.task.id for j in jobs} == {"mirror", "double"}
    in_context = {"mirror": {"solved": 1, "seconds": 1.0}, "double": {"solved": 0, "seconds": 1.0}}
    results = {j.key: {"key": j.key, "task_id": j.task.id, "solved": 0, "capped": False, "seconds": 2.0,
                       "train_seconds": 1.5, "infer_seconds": 0.5, "train": {"steps": 2, "tokens": 10}} for j in jobs}
    info = {"spec": "x", "exclude": "", "n_loaded": 2, "n_excluded": 0, "max_task_tokens": 0, "n_fit": 2,
            "n_over_budget": 0, "n_chosen": 2, "ids": ["mirror", "double"], "sha256": "0"}
    s = summarize(cfg, ["mirror", "double"], info, in_context, attempts, results)
    c = s["conditions"][OWN]
    assert c["n_invalid"] == 2 and c["n_questions"] == 4 and c["n_passages"] == 2
    # mirror: invalid -> in-context's 1, valid TTT -> 0; double: 0, 0
    assert c["metrics"]["success"]["mean"] == pytest.approx(0.25)
    assert s["per_task"]["mirror"][OWN] == 0.5
    assert s["conditions"][IN_CONTEXT]["n_questions"] == 2
    assert s["order"] == [IN_CONTEXT, OWN, ORACLE]


def test_token_budget_filter_counts_tasks_that_fit(tiny):
    _, tok, chat = tiny
    everything, _ = select_tasks(ArcConfig(tasks=str(FIXTURES), max_task_tokens=0), tok, chat)
    sizes = sorted(select_tasks(ArcConfig(tasks=str(FIXTURES), max_task_tokens=0), tok, chat)[1]["tokens"].values())
    chosen, info = select_tasks(ArcConfig(tasks=str(FIXTURES), max_task_tokens=sizes[1]), tok, chat)
    assert len(everything) == 3 and info["n_fit"] == len(chosen) == 2 and info["n_over_budget"] == 1
    assert select_tasks(ArcConfig(tasks=str(FIXTURES), exclude=str(FIXTURES / "double.json"), limit=1),
                        tok, chat)[1]["ids"] == ["mirror"]
