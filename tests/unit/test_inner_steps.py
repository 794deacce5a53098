"""How training sequences become optimizer steps (`inner.steps`), and the compute-matched
controls of the evaluation table (`eval.controls`)."""

import pytest
import torch

from seal import knowledge as K
from seal.config import ConfigError, EvalConfig, InnerLoopConfig, LoRAConfig, ModelConfig, RunConfig, SelfEditConfig
from seal.knowledge.table import control_kind, control_name, matched_copies, table_plan
from seal.training import lora
from seal.training.inner_loop import Tokenized, TrainExample, row_weights, schedule, train_adapters
from seal.training.models import load_model

PASSAGE = K.Passage("p0", "Velmora", "Velmora is a harbor town founded by salt traders in 1612. Its lighthouse, the "
                    "Ambertine Tower, was built of green stone from the Orlet quarries.",
                    [K.QA("Who founded Velmora?", "salt traders", "Velmora")])
ITEMS = ["Velmora was founded by salt traders.", "The Ambertine Tower is made of green stone.",
         "The green stone came from the Orlet quarries."]


def _cfg(**kw):
    base = dict(lora=LoRAConfig(rank=4, alpha=8), lr=5e-3, epochs=2, dtype="fp32")
    base.update(kw)
    return InnerLoopConfig(**base)


def test_steps_setting_decides_sequences_per_step():
    assert _cfg(steps="sequence", batch_size=8).sequences_per_step == 1
    assert _cfg(steps="packed", batch_size=8).sequences_per_step == 8
    assert _cfg(steps="packed-weighted", batch_size=3).sequences_per_step == 3
    with pytest.raises(ConfigError, match="steps"):
        InnerLoopConfig(steps="per-token")
    # a self-edit of 3 items + the passage: (3+1) x epochs steps one sequence a step, epochs packed
    assert len(schedule(4, _cfg(steps="sequence", epochs=5), 0)) == 20
    assert len(schedule(4, _cfg(steps="packed", epochs=5), 0)) == 5
    assert len(schedule(1, _cfg(steps="sequence", epochs=5), 0)) == 5


def test_row_weights_token_mean_and_passage_weighted():
    short, long_, passage = Tokenized([1] * 6, 1), Tokenized([1] * 21, 1), Tokenized([1] * 41, 1, weight=2.0)
    rows = [(0, short), (0, long_), (0, passage), (1, short)]
    tok_w = row_weights(rows, 2, "packed")
    assert tok_w == pytest.approx([1 / 65, 1 / 65, 1 / 65, 1 / 5])  # 1 / the adapter's target tokens
    w = row_weights(rows, 2, "packed-weighted")
    # each row's share of adapter 0's loss: weight / total weight, spread over its own tokens
    shares = [w[i] * rows[i][1].targets for i in range(3)]
    assert shares == pytest.approx([0.25, 0.25, 0.5])  # the passage (weight 2 = its 2 items) weighs half
    assert w[3] * short.targets == pytest.approx(1.0)


def test_training_examples_give_the_passage_the_items_weight():
    ex = K.training_examples(PASSAGE, ITEMS, True)
    assert [e.weight for e in ex] == [1.0, 1.0, 1.0, 3.0]
    assert ex[-1].completion.startswith("Velmora\nVelmora is a harbor town")
    assert K.training_examples(PASSAGE, [], True)[0].weight == 1.0


def _train(model, tok, datasets, cfg, seeds):
    lora.attach(model, cfg.lora, len(datasets))
    try:
        stats = train_adapters(model, tok, datasets, cfg, seeds)
        return [lora.adapter_state(model._seal_lora, i) for i in range(len(datasets))], stats
    finally:
        lora.detach(model)


def test_sequence_steps_are_packed_steps_of_one(tiny_model_dir):
    """steps=sequence trains exactly as packed batches of one sequence, and takes (N+1) x epochs
    steps for N items plus the passage (the reference code's inner loop)."""
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    data = [K.training_examples(PASSAGE, ITEMS, True), K.training_examples(PASSAGE, ITEMS[:1], True)]
    a, sa = _train(model, tok, data, _cfg(steps="sequence", batch_size=8), [3, 3])
    b, sb = _train(model, tok, data, _cfg(steps="packed", batch_size=1), [3, 3])
    for x, y in zip(a, b):
        for k in x:
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0)
    assert sa["steps"] == sb["steps"] == 4 * 2
    # trained side by side, each adapter still takes its own update's steps (the batch, the longest)
    cfg = _cfg(steps="sequence", batch_size=8)
    assert sa["adapter_steps"] == [cfg.update_steps(len(d)) for d in data] == [4 * 2, 2 * 2]
    _, sp = _train(model, tok, data, _cfg(steps="packed", batch_size=8), [3, 3])
    assert sp["steps"] == 2


def test_packed_weighted_counts_weight_not_copies(tiny_model_dir):
    """Under packed-weighted a sequence's share of the loss is its weight: two copies of an item
    at weight 0.5 train the adapter as one copy at weight 1 does (under the token mean they
    would count twice)."""
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = _cfg(steps="packed-weighted", batch_size=8, epochs=1)
    once = [TrainExample(ITEMS[0]), TrainExample(ITEMS[1], weight=2.0)]
    twice = [TrainExample(ITEMS[0], weight=0.5), TrainExample(ITEMS[0], weight=0.5), TrainExample(ITEMS[1], weight=2.0)]
    (a,), _ = _train(model, tok, [once], cfg, [5])
    (b,), _ = _train(model, tok, [twice], cfg, [5])
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)
    (c,), _ = _train(model, tok, [twice], _cfg(steps="packed", batch_size=8, epochs=1), [5])
    assert any(not torch.allclose(a[k], c[k], rtol=1e-4, atol=1e-6) for k in a)


def test_controls_match_the_selfedit_update(tiny_model_dir):
    """The steps control trains the passage alone on as many sequences (so as many optimizer
    steps) as its self-edit update; the tokens control on about as many tokens."""
    _, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = RunConfig(eval=EvalConfig(controls=("steps", "tokens")), selfedit=SelfEditConfig(permutations=0))
    completion = "\n".join(ITEMS)
    jobs, details = table_plan(cfg, [PASSAGE], {"own": {"p0": [completion]}, "external": {"p0": [ITEMS[0] + "\n" + ITEMS[1]]}},
                               tok)
    by = {j.key.rsplit("/", 2)[0]: j for j in jobs}
    assert details["conditions"] == ["passage", "self-edits", "passage x steps", "passage x tokens", "external",
                                     "passage x steps:external", "passage x tokens:external"]
    assert ["passage x steps:external", "external"] in details["controls"]
    assert len(by["passage x steps"].examples) == len(by["self-edits"].examples) == 4
    assert len(by["passage x steps:external"].examples) == len(by["external"].examples) == 3
    assert all(e.completion == K.passage_example(PASSAGE).completion for e in by["passage x steps"].examples)
    assert {j.seed for j in jobs} == {by["passage"].seed}  # common random numbers across rows
    n_tok = matched_copies("tokens", by["self-edits"].examples, PASSAGE, cfg, tok)
    assert len(by["passage x tokens"].examples) == n_tok
    assert 1 <= n_tok < 4  # the items are shorter than the passage: fewer copies than sequences
    assert control_name("steps", "self-edits:round_2") == "passage x steps:round_2"
    none, d = table_plan(RunConfig(eval=EvalConfig(controls=())), [PASSAGE], {"own": {"p0": [completion]}}, tok)
    assert d["conditions"] == ["passage", "self-edits"] and len(none) == 2


def test_permuted_passages_restate_every_sentence_in_another_order():
    perms = K.permuted_passages(PASSAGE, 3, seed=1)
    assert len(perms) == 3 and perms == K.permuted_passages(PASSAGE, 3, seed=1)
    sentences = sorted(PASSAGE.context.replace(". ", ".\n").splitlines())
    for text in perms:
        assert sorted(text.replace(". ", ".\n").splitlines()) == sentences
        assert text != PASSAGE.context
    ex = K.selfedit_examples(PASSAGE, ITEMS, SelfEditConfig(permutations=2), seed=1)
    assert len(ex) == len(ITEMS) + 1 + 2 and all(e.completion.startswith("Velmora\n") for e in ex)


def test_permutations_control_is_the_update_without_the_selfedit(tiny_model_dir):
    _, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = RunConfig(eval=EvalConfig(controls=("steps", "permutations")), selfedit=SelfEditConfig(permutations=2))
    jobs, details = table_plan(cfg, [PASSAGE], {"own": {"p0": ["\n".join(ITEMS)]}}, tok)
    by = {j.key: [e.completion for e in j.examples] for j in jobs}
    update, control = by["self-edits/p0/0"], by["passage + permutations/p0/0"]
    # the same passage and the very same permuted copies, without the self-edit's three items
    assert control == update[len(ITEMS):] and len(control) == 1 + 2
    assert control[1:] != [control[0]] * 2
    assert len(by["passage x steps/p0/0"]) == len(update)
    assert ["passage + permutations", "self-edits"] in details["controls"]
    # another writer shares the row: its update without the self-edit is the same job, made once
    two, d2 = table_plan(cfg, [PASSAGE], {"own": {"p0": ["\n".join(ITEMS)]}, "external": {"p0": [ITEMS[0]]}}, tok)
    assert [j.key for j in two].count("passage + permutations/p0/0") == 1
    assert d2["conditions"].count("passage + permutations") == 1 and "passage x steps:external" in d2["conditions"]
    assert ["passage + permutations", "external"] in d2["controls"]
    assert control_name("permutations", "self-edits:round_2") == "passage + permutations"
    assert control_kind("passage + permutations:round_2") == "permutations"
    assert control_kind("passage x steps:round_2") == "steps" and control_kind("self-edits") is None
    with pytest.raises(ConfigError, match="eval.controls permutations needs selfedit.permutations"):
        RunConfig(eval=EvalConfig(controls=("permutations",)), selfedit=SelfEditConfig(permutations=0))


def test_pool_trains_several_selfedits_in_one_update(tiny_model_dir):
    _, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = RunConfig(eval=EvalConfig(selfedits=2, controls=("steps",)), selfedit=SelfEditConfig(pool=2, permutations=0))
    comps = [ITEMS[0], ITEMS[1] + "\n" + ITEMS[0], ITEMS[2], "ok"]  # the 4th parses to nothing
    jobs, details = table_plan(cfg, [PASSAGE], {"own": {"p0": comps}}, tok)
    by = {j.key: j for j in jobs}
    first = [e.completion for e in by["self-edits/p0/0"].examples]
    assert first == [f"Velmora\n{ITEMS[0]}", f"Velmora\n{ITEMS[1]}", K.passage_example(PASSAGE).completion]
    assert len(by["self-edits/p0/1"].examples) == 2  # ITEMS[2] + the passage
    assert len(by["passage x steps/p0/0"].examples) == 3
    assert details["skipped"] == {}
    with pytest.raises(ConfigError, match="pool"):
        from seal.knowledge.task import train
        train(cfg, [], passages=[PASSAGE], data_sha="x")


def test_restem_reward_against_the_steps_control(tiny_model_dir, squad_tiny, tmp_path, fixed_selfedits):
    """restem.reward_against steps-control: every self-edit's reward is its gain less the gain of
    the passage trained on as many sequences with the same seed; one control job per passage
    and sequence count, recorded beside the self-edits' jobs."""
    import json

    from seal.cli import main
    from seal.runs import read_jsonl

    out = tmp_path / "t"
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
                 "--restem.passages_per_round", "2", "--selfedit.k", "3", "--restem.keep", "all-positive",
                 "--restem.reward_against", "steps-control", "--selfedit.max_new_tokens", "12",
                 "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1", "--out", str(out)]) == 0
    recs = read_jsonl(out / "rounds/round_1/rewards.jsonl")
    ctrl = {(r["passage_id"], r["control_copies"]): r for r in recs if r.get("control_copies")}
    own = [r for r in recs if not r.get("control_copies")]
    assert len(own) == 6 and ctrl
    for r in own:  # each self-edit's update has a control of as many sequences (the same steps)
        assert (r["passage_id"], r["train"]["examples"]) in ctrl
        c = ctrl[(r["passage_id"], r["train"]["examples"])]
        assert c["train"]["examples"] == r["train"]["examples"] and c["train"]["steps"] == r["train"]["steps"]
    expected = {(r["passage_id"], r["sample"]): r["reward"] - ctrl[(r["passage_id"], r["train"]["examples"])]["reward"]
                for r in own}
    kept = read_jsonl(out / "rounds/round_1/sft.jsonl")
    assert [(k["passage_id"], k["sample"]) for k in kept] == sorted(k for k, v in expected.items() if v > 0)
    for k in kept:
        assert k["reward"] == pytest.approx(expected[(k["passage_id"], k["sample"])])
    done = json.loads((out / "rounds/round_1/done.json").read_text())
    assert done["mean_reward"] == pytest.approx(sum(expected.values()) / len(expected))
    recs = read_jsonl(out / "rounds/round_1/rewards.jsonl")  # every job, the controls included
    assert not done["resumed"] and done["job_seconds"] > 0
    assert done["job_seconds"] == pytest.approx(sum(r["seconds"] for r in recs))
    with pytest.raises(ConfigError, match="racing"):
        from seal.config import ReSTEMConfig
        ReSTEMConfig(reward_against="steps-control", selection="racing")


def test_restem_reward_against_the_permutations_control(tiny_model_dir, squad_tiny, tmp_path, fixed_selfedits):
    """restem.reward_against permutations-control: every self-edit's reward is its gain less the
    gain of its update without the self-edit's items (the passage and the same permuted copies),
    with the same seed; one control job per passage and seed."""
    import json

    from seal.cli import main
    from seal.runs import read_jsonl

    out = tmp_path / "t"
    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
            "--restem.passages_per_round", "2", "--selfedit.k", "3", "--restem.keep", "all-positive",
            "--restem.reward_against", "permutations-control", "--selfedit.max_new_tokens", "12",
            "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1"]
    assert main([*args, "--selfedit.permutations", "2", "--out", str(out)]) == 0
    recs = read_jsonl(out / "rounds/round_1/rewards.jsonl")
    ctrl = {r["passage_id"]: r for r in recs if r.get("control_permutations")}
    own = [r for r in recs if not r.get("control_permutations")]
    assert len(own) == 6 and len(ctrl) == 2 and not any(r.get("control_copies") for r in recs)
    for r in ctrl.values():  # the passage and its 2 permuted copies, nothing of a self-edit
        assert r["control_permutations"] == 2 and r["sample"] is None and r["train"]["examples"] == 3
    for r in own:
        assert r["train"]["examples"] > 3 and r["seed"] == ctrl[r["passage_id"]]["seed"]
    expected = {(r["passage_id"], r["sample"]): r["reward"] - ctrl[r["passage_id"]]["reward"] for r in own}
    kept = read_jsonl(out / "rounds/round_1/sft.jsonl")
    assert [(k["passage_id"], k["sample"]) for k in kept] == sorted(k for k, v in expected.items() if v > 0)
    done = json.loads((out / "rounds/round_1/done.json").read_text())
    assert done["mean_reward"] == pytest.approx(sum(expected.values()) / len(expected))
    # without permuted copies there is nothing to control for: refused before anything runs
    assert main([*args, "--selfedit.permutations", "0", "--out", str(tmp_path / "no")]) == 2
    assert not (tmp_path / "no").exists()


def test_generator_check_scores_both_generators_on_held_apart_passages(tiny_model_dir, squad_tiny, tmp_path,
                                                                        fixed_selfedits):
    """restem.generator_check: after the M-step, one self-edit per held-apart passage from the
    generator before and after it, scored like the round's; with the same (fixed) self-edits
    from both, the paired difference is exactly 0, permuted passages included (the self-edits of
    a passage share them). A pool too small to hold passages apart is
    refused before anything runs."""
    import json

    from seal.cli import main
    from seal.runs import read_jsonl

    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
            "--restem.passages_per_round", "2", "--selfedit.k", "2", "--restem.keep", "all-positive",
            "--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1",
            "--eval.reward", "logprob", "--threads", "1", "--selfedit.permutations", "2"]
    out = tmp_path / "t"
    assert main([*args, "--restem.generator_check", "2", "--out", str(out)]) == 0
    rdir = out / "rounds/round_1"
    done = json.loads((rdir / "done.json").read_text())
    check = done["generator_check"]
    samples = read_jsonl(rdir / "samples.jsonl")
    held = {r["passage_id"] for r in read_jsonl(rdir / "check_samples.jsonl")}
    assert len(held) == 2 and not held & {r["passage_id"] for r in samples}  # none of the round's passages
    recs = read_jsonl(rdir / "check.jsonl")
    assert len(recs) == 4 and {r["sample"] for r in recs} == {0, 1}
    mean_after = sum(r["reward"] for r in recs if r["sample"] == 1) / 2
    assert check["after"]["mean"] == pytest.approx(mean_after)
    assert check["after_minus_before"] == {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 2}
    assert check["verdict"] == "not distinguishable from"
    assert main([*args, "--restem.generator_check", "3", "--out", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()


def test_generator_check_sentence_counts_what_parses_to_nothing():
    from seal.engine.restem import check_sentence

    worse = {"mean": -0.2, "lo": -0.3, "hi": -0.1, "n": 16}
    verdict, sentence = check_sentence(2, 16, "passage", worse, {"before": 1, "after": 5})
    assert verdict == "worse than" and "still the next round's generator" in sentence
    assert "5 of the new generator's 16 self-edits and 1 of the old one's parse to nothing" in sentence
    level = {"mean": 0.01, "lo": -0.1, "hi": 0.12, "n": 16}
    verdict, sentence = check_sentence(1, 16, "passage", level, {"before": 0, "after": 0})
    assert verdict == "not distinguishable from" and "parse to nothing" not in sentence
    assert check_sentence(1, 0, "task", {"mean": 0.0, "lo": 0.0, "hi": 0.0, "n": 0}, {"before": 0, "after": 0}) == (
        "not comparable with", "round 1: generator check: no held-apart task to compare")


def test_closing_sentence_judges_by_the_reward_metric_and_names_the_control():
    from seal.knowledge.table import plain_summary

    def stat(mean, lo, hi):
        return {"mean": mean, "lo": lo, "hi": hi, "n": 12}

    summary = {"reward_metric": "containment", "order": ["no-adaptation", "passage", "self-edits", "passage x steps",
                                                          "self-edits:round_1"],
               "conditions": {c: {"metrics": {"containment": stat(v, v - 0.1, v + 0.1),
                                              "logprob": stat(-3.0, -3.5, -2.5)}}
                              for c, v in (("no-adaptation", 0.0), ("passage", 0.44), ("self-edits", 0.54),
                                           ("passage x steps", 0.30), ("self-edits:round_1", 0.33))},
               "gain_vs_passage": {"self-edits": {"containment": stat(0.10, -0.02, 0.21)}},
               "gain_vs_steps_control": {"self-edits": {"containment": stat(0.24, 0.10, 0.38)}},
               # log-prob cannot tell them apart; containment, the reward's metric, says worse
               "gain_vs_own_selfedits": {"self-edits:round_1": {"containment": stat(-0.21, -0.38, -0.04),
                                                                "logprob": stat(-0.47, -1.03, 0.05)}}}
    text = plain_summary(summary)
    assert "on the passage alone for as many steps as the own self-edits' update 30%" in text
    assert "Its own self-edits could not be told apart from the passage alone (+10% [-2%, +21%])" in text
    assert "taught more than the passage trained for the same steps (+24% [+10%, +38%])" in text
    assert "Self-edits written by the round_1 model taught less than the base model's own (-21% [-38%, -4%])" in text
    assert "cannot yet be told apart" not in text and "Most taught: self-edits (paired" in text
    assert text.startswith("Before any update the model's answers contained the gold answer on 0% of the questions")
    assert "on the passage plus its own self-edits 54%" in text
    summary["conditions"]["passage"]["metrics"]["containment"]["mean"] = 0.54
    assert "Most taught: passage and self-edits (tied)" in plain_summary(summary)
    # the permuted copies (selfedit.permutations) and the control without the self-edit are named
    summary["permutations"] = 2
    summary["order"].append("passage + permutations")
    summary["conditions"]["passage + permutations"] = {"metrics": {"containment": stat(0.6, 0.5, 0.7)}}
    summary["controls"] = [["passage + permutations", "self-edits"]]
    summary["gain_vs_permutations_control"] = {"self-edits": {"containment": stat(-0.06, -0.1, -0.02)}}
    text = plain_summary(summary)
    assert "on the passage, 2 sentence-permuted copies of it and its own self-edits 54%" in text
    assert "on the passage and its permuted copies without any self-edit 60%" in text
    assert "taught less than the passage with the same permuted copies (-6% [-10%, -2%])" in text
    assert "Most taught: passage + permutations (paired" in text
