"""Defects of the issue "SEAL must learn": QA prompt title, plain-prompt cues, one weighting in the
table, no greedy answers for a log-prob reward, common random numbers, batch independence."""

import json

import pytest

from seal import knowledge as K
from seal.config import EvalConfig, InnerLoopConfig, ModelConfig, RunConfig, SelfEditConfig
from seal.engine.jobs import job_batches, run_inner_jobs
from seal.knowledge.table import summarize
from seal.knowledge.task import KnowledgeTask
from seal.training.generation import HFGenerator
from seal.training.models import format_prompt, load_model


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir)))


def test_qa_prompt_names_the_title(squad_tiny):
    p = K.load_passages(squad_tiny)[0][0]
    qa = p.questions[0]
    assert qa.title == p.title and p.title
    assert f"Topic: {p.title}" in K.qa_prompt(qa.question, qa.title)
    assert qa.question in K.qa_prompt(qa.question, qa.title)
    # official SQuAD layout: the article title reaches the question too
    official = {"data": [{"title": "Some_Article", "paragraphs": [{"context": "c d e", "qas": [
        {"question": "what?", "answers": [{"text": "e"}]}]}]}]}
    ps, _ = K.parse_squad(official)
    assert ps[0].questions[0].title == "Some Article"


def test_plain_prompts_end_with_a_cue(tiny, squad_tiny):
    _, tok = tiny
    p = K.load_passages(squad_tiny)[0][0]
    assert format_prompt(tok, "Question: x", chat=False, cue="Answer:") == "Question: x\nAnswer:"
    assert K.qa_input(tok, p.questions[0], chat=False).endswith("\nAnswer:")
    for t in ("implications", "implications-long", "rewrite", "self-qa"):
        text = K.selfedit_input(tok, p, SelfEditConfig(template=t), chat=False)
        assert text.endswith(":\n") and p.context in text
    # a chat prompt ends with the assistant turn instead, no cue
    if getattr(tok, "chat_template", None):
        assert not K.qa_input(tok, p.questions[0], chat=True).endswith("Answer:")


def _q(v):
    return {m: v for m in K.METRICS}


def test_table_rows_subtract_to_the_gains():
    # passages with unequal question counts: a question-weighted row would not subtract
    passages = [K.Passage("a", "A", "ctx a", [K.QA("q", "x")] * 1), K.Passage("b", "B", "ctx b", [K.QA("q", "x")] * 4)]
    base = {"a": [_q(0.0)], "b": [_q(0.0)] * 4}
    results = {"passage/a/0": {"condition": "passage", "passage_id": "a", "questions": [_q(1.0)], "metrics": _q(1.0),
                               "seconds": 1, "train_seconds": 1, "train": {"tokens": 1}},
               "passage/b/0": {"condition": "passage", "passage_id": "b", "questions": [_q(0.0)] * 4,
                               "metrics": _q(0.0), "seconds": 1, "train_seconds": 1, "train": {"tokens": 1}}}
    cfg = RunConfig()
    s = summarize(cfg, passages, base, results, ["no-adaptation", "passage"], {})
    row = s["conditions"]["passage"]["metrics"]["containment"]["mean"]
    no = s["conditions"]["no-adaptation"]["metrics"]["containment"]["mean"]
    gain = s["gain_vs_no_adaptation"]["passage"]["containment"]["mean"]
    assert row == pytest.approx(0.5) and row - no == pytest.approx(gain)
    assert "per-passage" in s["weighting"] or "passage's mean" in s["weighting"]


def test_logprob_reward_needs_no_generation():
    assert K.reward_eval_config(EvalConfig(reward="logprob")).generate is False
    assert K.reward_eval_config(EvalConfig(reward="containment")).generate is True
    assert EvalConfig().generate is True  # evaluate still generates


def test_train_generates_no_answers_for_a_logprob_reward(tiny, squad_tiny, monkeypatch):
    model, tok = tiny
    calls = []
    real = HFGenerator.generate

    def spy(self, prompts, **kw):
        calls.append(kw.get("temperature", 0.0))
        return real(self, prompts, **kw)

    monkeypatch.setattr(HFGenerator, "generate", spy)
    p = K.load_passages(squad_tiny)[0][0]
    job = K.Job("x", [p.id], K.training_examples(p, [], True), p.questions, 1)
    got = []
    loop = K.QAInnerLoop(InnerLoopConfig(epochs=1), K.reward_eval_config(EvalConfig(reward="logprob")))
    run_inner_jobs(loop, model, tok, HFGenerator(model, tok), False, [job], lambda j, r: got.append(r))
    assert calls == [] and "containment" not in got[0]["metrics"] and "logprob" in got[0]["metrics"]


def test_selfedits_of_a_passage_share_seeds_and_batch(squad_tiny):
    ps = K.load_passages(squad_tiny)[0][:2]
    cfg = RunConfig()
    cfg.inner.seeds = 2
    samples = {p.id: ["one fact about it here.", "another fact about it here.", ""] for p in ps}
    plan = KnowledgeTask(cfg, ps).plan(1, ps, samples, None, False)
    jobs, empty = plan.jobs, plan.unusable
    assert sorted(empty) == sorted((p.id, 2) for p in ps)
    assert plan.scored_by[(ps[0].id, 1)] == [f"{ps[0].id}/1/0", f"{ps[0].id}/1/1"]  # its reward: the mean over seeds
    for p in ps:
        for s in range(2):
            same = [j for j in jobs if j.passage_ids == [p.id] and j.key.endswith(f"/{s}")]
            assert len(same) == 2 and len({j.seed for j in same}) == 1 and len({j.group for j in same}) == 1
        assert len({j.seed for j in jobs if j.passage_ids == [p.id]}) == 2  # seeds differ across repeats
    batches = job_batches(jobs, 5)
    assert all(len({j.group for j in b}) == 1 for b in batches)


def test_job_batches_never_mix_groups():
    jobs = [K.Job(f"{g}/{i}", [], [], [], 0, group=g) for i in range(3) for g in ("a", "b")]
    batches = job_batches(jobs, 5)
    assert [[j.key for j in b] for b in batches] == [["a/0", "a/1", "a/2"], ["b/0", "b/1", "b/2"]]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_a_condition_does_not_depend_on_its_batch_mates(tiny, squad_tiny, dtype):
    """Same passage-only jobs, beside two different other conditions: bit-identical results, in fp32 and under bf16 autocast."""
    model, tok = tiny
    ps = K.load_passages(squad_tiny)[0]
    cfg = InnerLoopConfig(epochs=2, dtype=dtype, parallel_adapters=8)
    ev = EvalConfig(max_answer_tokens=3)
    gen = HFGenerator(model, tok)

    def run(other_items):
        jobs = [K.Job(f"passage/{p.id}", [p.id], K.training_examples(p, [], True), p.questions, 7, group="passage")
                for p in ps]
        jobs += [K.Job(f"other/{p.id}", [p.id], K.training_examples(p, other_items, True), p.questions, 7,
                       group="other") for p in ps]
        out = {}
        run_inner_jobs(K.QAInnerLoop(cfg, ev), model, tok, gen, False, jobs,
                       lambda j, r: out.__setitem__(j.key, r["questions"]))
        return {k: v for k, v in out.items() if k.startswith("passage/")}

    a = run(["a first long made up sentence here."])
    b = run(["something else entirely, much longer than the first one was.", "and a second line too."])
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_several_other_selfedit_writers_get_one_row_each():
    from seal.knowledge.table import _cond_name, _sources, other_models

    cfg = RunConfig()
    cfg.selfedit.model = "runs/t/rounds/round_2/model, runs/teacher-model,default"
    assert other_models(cfg) == ["runs/t/rounds/round_2/model", "runs/teacher-model"]
    assert [_cond_name(s, cfg) for s in _sources(cfg)] == ["self-edits", "self-edits:round_2", "self-edits:teacher-model"]
    assert _sources(cfg) == ["own", "other:0", "other:1"]
    assert _sources(cfg, "other") == ["own", "other", "other:1"]  # a one-writer table grown by a second
    assert _cond_name("other", cfg) == _cond_name("other:0", cfg) == "self-edits:round_2"
    cfg.selfedit.model = "runs/t/rounds/round_1/model"
    assert _sources(cfg) == ["own", "other"] and _cond_name("other", cfg) == "self-edits:round_1"


def test_reward_agreement_counts_same_kept_and_rank_correlation():
    from seal.config import RunConfig
    from seal.knowledge.task import reward_agreement

    cfg = RunConfig()
    gold = {("a", 0): 0.1, ("a", 1): 0.5, ("a", 2): 0.9, ("b", 0): -0.2, ("b", 1): -0.1, ("b", 2): 0.3}
    same = reward_agreement(dict(gold), gold, cfg)
    assert same["spearman_within_mean"] == 1.0 and same["same_kept"]["mean"] == 1.0
    assert same["kept_gold_reward"]["probe"]["mean"] == same["kept_gold_reward"]["gold"]["mean"] == (0.9 + 0.3) / 2
    flipped = {k: -v for k, v in gold.items()}  # a: all negative, keeps none; b: keeps b/0, gold's worst
    other = reward_agreement(flipped, gold, cfg)
    assert other["spearman_within_mean"] == -1.0 and other["same_kept"]["mean"] == 0.0
    assert abs(other["kept_gold_reward"]["probe"]["mean"] - (0.0 - 0.2) / 2) < 1e-9
    assert abs(other["kept_gold_reward"]["random"]["mean"] - (0.5 + 0.0) / 2) < 1e-9


def test_equal_rewards_keep_the_self_edit_with_the_larger_gold_logprob(squad_tiny):
    """restem.tie_break logprob: of two self-edits with the same reward the filter keeps the one
    whose updates made the gold answers likelier (mean over seeds; a seed stopped by racing has no
    say); `first` keeps the lower sample as before."""
    from seal.engine.restem import select_kept, selfedit_rewards, selfedit_tiebreaks
    ps = K.load_passages(squad_tiny)[0][:1]
    p = ps[0]
    cfg = RunConfig()
    cfg.inner.seeds = 2
    task = KnowledgeTask(cfg, ps)
    plan = task.plan(1, ps, {p.id: ["one fact about it here.", "another fact about it here."]}, None, False)
    lp = {(0, 0): -2.0, (0, 1): -2.0, (1, 0): -1.0, (1, 1): -2.0}
    records = {f"{p.id}/{j}/{s}": {"passage_id": p.id, "sample": j, "seed": s, "reward": 0.25,
                                   "metrics": {"containment": 0.5, "logprob": v}} for (j, s), v in lp.items()}
    records[f"{p.id}/0/1"] = {"passage_id": p.id, "sample": 0, "seed": 1, "reward": None, "raced_out": True,
                              "metrics": {"logprob": 9.0}}
    rewards = selfedit_rewards(task, plan, records)
    assert rewards == {(p.id, 0): 0.25, (p.id, 1): 0.25}
    tb = selfedit_tiebreaks(task, plan, records)
    assert tb == {(p.id, 0): -2.0, (p.id, 1): -1.5}
    assert select_kept(rewards, task.keep, task.keep_fraction, tb) == [(p.id, 1, 0.25)]
    cfg.restem.tie_break = "first"
    assert selfedit_tiebreaks(task, plan, records) is None
    assert select_kept(rewards, task.keep, task.keep_fraction, None) == [(p.id, 0, 0.25)]
