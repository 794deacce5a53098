"""`seal continual` on the tiny model: the matrix, each guard's effect on the weights, the gate,
replay, skipping known passages, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seal import knowledge as K
from seal.cli import main
from seal.config import ConfigError, ModelConfig, RunConfig, resolve
from seal.knowledge import continual as C
from seal.knowledge import continual_summary as S
from seal.knowledge import routing as R
from seal.runs import read_jsonl
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.models import load_model

FAST = {"selfedit.max_new_tokens": "12", "eval.max_answer_tokens": "4", "inner.epochs": "1", "eval.bootstrap": "50",
        "continual.skip_if_gain": "0"}  # the tiny random model's likelihoods move freely: no skipping unless a test asks
FAST_ARGS = [a for k, v in FAST.items() for a in (f"--{k}", v)] + ["--threads", "1"]

PASSAGES = [  # fictional, so no model knows them; the last has no usable question
    ("Velmora", "Velmora is a harbor town founded in 1742 by salt traders.", "Who founded Velmora?", "salt traders"),
    ("Drosk Mining Company", "The Drosk Mining Company extracts blue cobalt.", "What does Drosk extract?", "blue cobalt"),
    ("Pellicant frog", "The pellicant frog lives only on Orlet Island.", "Where does the pellicant frog live?", "Orlet Island"),
    ("Tamsin Festival", "The Tamsin Festival is held every April in Brevka.", "When is the Tamsin Festival?", "April"),
    ("Ambertine Tower", "The Ambertine Tower is painted green and white.", "What colors is the Ambertine Tower?", "green and white"),
    ("Sorrel River", "Visitors float paper lanterns down the Sorrel River.", "What floats down the Sorrel River?", "paper lanterns"),
    ("Harrow Hills", "The Harrow Hills rise north of the Quillan coast.", "Where are the Harrow Hills?", "north of the Quillan coast"),
]


@pytest.fixture
def data(tmp_path) -> Path:
    recs = [{"title": t, "context": c, "questions": [{"question": q, "answer": a}]} for t, c, q, a in PASSAGES]
    recs.append({"title": "Empty", "context": "A passage nobody asked about.", "questions": []})
    path = tmp_path / "seq.json"
    path.write_text(json.dumps(recs))
    return path


def _cfg(data: Path, **over) -> RunConfig:
    return resolve(RunConfig, None, {"data.path": str(data), **FAST, **{k: str(v) for k, v in over.items()}})


def _setup(tiny_model_dir, cfg, tmp_path) -> C.Setup:
    cfg.model.name = str(tiny_model_dir)
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    return C.Setup(model, tok, HFGenerator(model, tok), True, cfg, tmp_path / "run")


def _sequence(data: Path, cfg: RunConfig):
    passages, _ = K.load_selection(cfg.data, cfg.seed)
    seqs, unrelated, _ = C.draw_sequences(passages, cfg.continual.sequences, cfg.continual.length, cfg.continual.unrelated)
    return seqs[0], unrelated[0]


def _run(tiny_model_dir, data, tmp_path, **over):
    cfg = _cfg(data, **{"continual.length": 3, "continual.unrelated": 1, **over})
    su = _setup(tiny_model_dir, cfg, tmp_path)
    seq, unrelated = _sequence(data, cfg)
    before = lora.target_weights(su.model, cfg.inner.lora)
    records = C.run_sequence(su, 0, seq, unrelated)
    after = lora.target_weights(su.model, cfg.inner.lora)
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    return su, records, changed


# ----------------------------------------------------------------------------- pure parts

def test_sequences_are_disjoint_when_the_data_allows_and_wrap_otherwise(data):
    passages, counts = K.load_passages(data)
    assert counts["skipped_no_questions"] == 1 and len(passages) == 7
    seqs, unrel, disjoint = C.draw_sequences(passages, 2, 3, 1)
    assert disjoint and [len(s) for s in seqs] == [3, 3]
    assert not {p.id for p in seqs[0]} & {p.id for p in seqs[1]}
    assert unrel[0] == unrel[1] == [passages[-1]]
    seqs, unrel, disjoint = C.draw_sequences(passages, 3, 3, 1)
    assert not disjoint and all(len({p.id for p in s}) == 3 for s in seqs)
    assert all(not {p.id for p in u} & {p.id for p in s} for s, u in zip(seqs, unrel))
    with pytest.raises(K.DataError, match="seq.json: continual.length 9"):
        C.draw_sequences(passages, 1, 9, 0, str(data))


def test_bm25_routes_a_question_to_its_passage_and_an_unrelated_one_to_the_base(data):
    passages, _ = K.load_passages(data)
    qs = [R.question_query(q) for p in passages for q in p.questions]
    assert R.route(qs, list(range(len(qs))), passages, "bm25", 0.25) == list(range(len(passages)))
    assert R.route(qs[:2], [1, -1], passages, "oracle") == [1, -1]
    # a question about none of the seen passages: some best passage exists, but it covers little
    off_topic = "Zarnik Observatory What telescope does the Zarnik Observatory use?"
    assert R.route([off_topic], [-1], passages, "bm25", 0.0) != [-1]
    assert R.route([off_topic], [-1], passages, "bm25", 0.25) == [-1]
    i, cov = R.BM25([p.context for p in passages]).best(passages[2].context)
    assert i == 2 and cov == pytest.approx(1.0)


def test_repeats_re_present_earlier_passages_of_the_same_sequence(data):
    passages, _ = K.load_passages(data)
    seqs, _, disjoint = C.draw_sequences(passages, 2, 5, 1, repeats=2, seed=3)
    assert disjoint  # 2 x 3 distinct + 1 unrelated <= 7
    for s, seq in enumerate(seqs):
        ids = [p.id for p in seq]
        first = list(dict.fromkeys(ids))  # distinct passages, in order of first appearance
        assert first == [p.id for p in passages[3 * s: 3 * s + 3]]
        assert sum(ids[t] in ids[:t] for t in range(5)) == 2  # two steps re-present an earlier passage
    assert C.draw_sequences(passages, 2, 5, 1, repeats=2, seed=3)[0] == seqs  # seeded
    with pytest.raises(ConfigError, match="repeats must be < length"):
        _cfg(data, **{"continual.length": 3, "continual.repeats": 3})


def test_when_to_adapt_curve_counts_gains_of_the_updates_made():
    def step(t, pid, probe_c, after_c, doc):
        return {"step": t, "passage_id": pid, "decision": "kept",
                "probe": {"containment": probe_c, "logprob": -1.0, "doc_logprob": doc, "doc_logprob_gain": doc + 3.0},
                "grades": [[{"containment": after_c, "logprob": -1.0}]] * (t + 1)}
    # steps: new A (gain 1), new B (gain 0.5), repeat A (already known: gain 0)
    steps = {0: [step(0, "A", 0.0, 1.0, -3.0), step(1, "B", 0.0, 0.5, -3.0), step(2, "A", 1.0, 1.0, -1.0)]}
    w = S.when_to_adapt(steps, [0], ["containment", "logprob"])
    assert w["items"] == 3 and w["repeats"] == 1
    gain = w["signals"]["doc_logprob_gain"]
    assert gain["auroc_repeat_vs_new"] == 1.0 and gain["mean_repeat"] == 2.0
    pts = {p["threshold"]: p for p in gain["curve"]}
    assert pts[2.0]["skipped"] == pytest.approx(1 / 3) and pts[2.0]["repeats_skipped"] == 1
    assert pts[2.0]["gain_kept"]["containment"] == pytest.approx(1.0)  # skipping the repeat loses nothing
    assert pts[0.0]["skipped"] == 1.0 and pts[0.0]["gain_kept"]["containment"] == 0.0
    assert pts[None]["skipped"] == 0.0 and pts[None]["gain_kept"]["containment"] == 1.0
    assert pts[None]["gain_kept"]["logprob"] is None  # no gain at all: undefined, not 0/0
    steps[0][1]["decision"] = "skipped"  # a run that skipped has no counterfactual gain
    assert S.when_to_adapt(steps, [0], ["containment"]) is None


@pytest.mark.parametrize("setting,value,needle", [
    ("continual.guard", "ewc", "continual.guard must be one of merge, replay, gate, per-doc, kl"),
    ("continual.gate_threshold", "2", "continual.gate_threshold must be in [-1, 1]"),
    ("continual.skip_if_known", "-0.5", "continual.skip_if_known must be in [0, 1]"),
    ("continual.length", "0", "continual.length must be >= 1"),
    ("continual.repeats", "8", "continual.repeats must be < length"),
    ("continual.kl_beta", "-1", "continual.kl_beta must be >= 0"),
])
def test_bad_settings_are_refused_in_one_line_before_any_run(setting, value, needle, data, tiny_model_dir, tmp_path,
                                                              capsys):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        resolve(RunConfig, None, {setting: value})
    out = tmp_path / "run"
    assert main(["continual", "--data", str(data), "--model", str(tiny_model_dir), f"--{setting}", value,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and setting in err
    assert not out.exists()


@pytest.mark.parametrize("flags,needle", [
    (["--eval.generate", "false", "--eval.reward", "logprob", "--continual.skip_if_known", "0.5"], "eval.generate"),
    (["--selfedit.model", "x"], "selfedit.model"),
])
def test_settings_that_do_not_fit_the_command_are_refused(flags, needle, data, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["continual", "--data", str(data), "--model", str(tiny_model_dir), *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not out.exists()


def test_a_file_too_short_for_the_sequence_names_the_file(data, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["continual", "--data", str(data), "--model", str(tiny_model_dir), "--continual.length", "8",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "seq.json" in err and "continual.length 8" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- guards on the tiny model

def test_merge_changes_the_weights_and_per_doc_keeps_them(tiny_model_dir, data, tmp_path):
    su, records, changed = _run(tiny_model_dir, data, tmp_path, **{"continual.guard": "merge"})
    assert changed and [r["decision"] for r in records] == ["kept"] * 3
    assert [len(r["grades"]) for r in records] == [1, 2, 3]  # every passage seen so far, no later one
    base = read_jsonl(su.run_dir / "base.jsonl")[0]
    summ = S.sequence_summary(base, records, "logprob")
    mat = summ["matrix"]
    assert len(mat) == 3 and all(len(r) == 3 for r in mat)
    assert all((mat[i][j] is None) == (j > i) for i in range(3) for j in range(3))  # lower-triangular
    assert len(summ["base"]) == 3 and all(v is not None for v in summ["base"])
    assert summ["first_retention"] == [mat[t][0] for t in range(3)]

    _, records, changed = _run(tiny_model_dir, data, tmp_path / "pd", **{"continual.guard": "per-doc"})
    assert not changed and [r["decision"] for r in records] == ["kept"] * 3
    assert all("routing" in r for r in records)
    assert all("routed_to" in q for r in records for g in r["grades"] for q in g)


def test_gate_rejects_under_a_negative_threshold_and_accepts_under_a_huge_one(tiny_model_dir, data, tmp_path):
    _, records, _ = _run(tiny_model_dir, data, tmp_path / "strict",
                         **{"continual.guard": "gate", "continual.gate_threshold": -0.001})
    # containment cannot rise by 0.001 on the random model: the first update (nothing to
    # protect) is kept, every later one rejected
    assert [r["decision"] for r in records] == ["kept", "rejected", "rejected"]
    assert records[1]["gate"]["drop"] > -0.001
    assert [x["scale"] for x in records[1]["gate"]["tries"]] == [1.0, 0.5]  # scaled down once before rejecting
    # rejected updates leave the weights bit-identical: as after the first update alone
    su, _, _ = _run(tiny_model_dir, data, tmp_path / "strict2",
                    **{"continual.guard": "gate", "continual.gate_threshold": -0.001, "continual.gate_halvings": 0})
    gated = lora.target_weights(su.model, su.cfg.inner.lora)
    one = _cfg(data, **{"continual.length": 1, "continual.unrelated": 1})
    su1 = _setup(tiny_model_dir, one, tmp_path / "one")
    C.run_sequence(su1, 0, *_sequence(data, one))
    assert all(torch.equal(w, lora.target_weights(su1.model, one.inner.lora)[k]) for k, w in gated.items())
    _, records, _ = _run(tiny_model_dir, data, tmp_path / "lax",
                         **{"continual.guard": "gate", "continual.gate_threshold": 1})
    assert [r["decision"] for r in records] == ["kept"] * 3


def test_replay_adds_earlier_training_sequences(tiny_model_dir, data, tmp_path):
    su, records, _ = _run(tiny_model_dir, data, tmp_path, **{"continual.guard": "replay", "continual.replay": 3})
    own = [r["n_items"] + 1 + su.cfg.selfedit.permutations for r in records]  # items + the passage + its permutations
    assert [r["replayed"] for r in records] == [0, min(3, own[0]), min(3, own[0] + own[1])]
    assert [r["train"]["examples"] for r in records] == [o + r["replayed"] for o, r in zip(own, records)]


def test_kl_guard_holds_the_update_closer_to_the_pre_update_model(tiny_model_dir, data, tmp_path):
    def change(folder, **over):
        cfg = _cfg(data, **{"continual.length": 2, "continual.unrelated": 0, "continual.kl_texts": 2,
                            "continual.kl_tokens": 16, "inner.epochs": 2, "inner.lr": 0.01, **over})
        su = _setup(tiny_model_dir, cfg, tmp_path / folder)
        if cfg.continual.guard == "kl":
            su.generic = C.generic_texts(su)
            assert len(su.generic) == 2 and len(C.read_jsonl(su.run_dir / "kl_texts.jsonl")) == 2
        seq, unrelated = _sequence(data, cfg)
        before = lora.target_weights(su.model, cfg.inner.lora)
        records = C.run_sequence(su, 0, seq, unrelated)
        after = lora.target_weights(su.model, cfg.inner.lora)
        return records, sum(float((after[k] - before[k]).norm()) for k in before), after

    _, d_merge, w_merge = change("merge")
    _, _, w_free = change("kl0", **{"continual.guard": "kl", "continual.kl_beta": 0})
    assert all(torch.equal(w_merge[k], w_free[k]) for k in w_merge)  # beta 0 is the baseline, bit for bit
    held, d_held, _ = change("kl", **{"continual.guard": "kl", "continual.kl_beta": 100})
    assert all(r["train"]["final_kl"] is not None and r["train"]["final_kl"] >= 0 for r in held)
    assert 0 < d_held < d_merge


def test_probes_record_what_a_skip_rule_needs(tiny_model_dir, data, tmp_path):
    su, records, _ = _run(tiny_model_dir, data, tmp_path, **{"continual.probe": "true", "continual.guard": "per-doc"})
    base = C.read_jsonl(su.run_dir / "base.jsonl")[0]
    assert len(base["doc_logprob"]) == 3
    for r in records:
        assert r["decision"] == "kept" and {"containment", "logprob", "doc_logprob"} <= set(r["probe"])
    # per-doc: a passage is probed under the base model until it has an adapter of its own
    assert records[0]["probe"]["doc_logprob"] == pytest.approx(base["doc_logprob"][0], abs=1e-4)


def test_known_passages_are_skipped_and_counted(tiny_model_dir, data, tmp_path, monkeypatch):
    real = C.grade

    def knows_everything(su, learner, seen, groups, owners):
        graded, routing = real(su, learner, seen, groups, owners)
        return [[{**q, "containment": 1.0} for q in g] for g in graded], routing
    monkeypatch.setattr(C, "grade", knows_everything)
    _, records, changed = _run(tiny_model_dir, data, tmp_path, **{"continual.skip_if_known": 0.5})
    assert [r["decision"] for r in records] == ["skipped"] * 3 and not changed
    assert all("train" not in r and r["probe_containment"] == 1.0 for r in records)


def test_passages_the_model_already_finds_likely_are_skipped(tiny_model_dir, data, tmp_path, monkeypatch):
    real = C.doc_logprob
    monkeypatch.setattr(C, "doc_logprob", lambda su, learner, earlier, p, owner: real(su, learner, earlier, p, owner)
                        + (0.4 if earlier else 0.0))  # "already learned" once an earlier passage was adapted
    _, records, _ = _run(tiny_model_dir, data, tmp_path, **{"continual.skip_if_gain": 0.3})
    assert [r["decision"] for r in records] == ["kept", "skipped", "skipped"]
    assert records[0]["probe"]["doc_logprob_gain"] == pytest.approx(0.0, abs=1e-4)
    assert records[1]["probe"]["doc_logprob_gain"] == pytest.approx(0.4, abs=1e-3)


# ----------------------------------------------------------------------------- the command

def _strip(obj):
    """Results without wall times (which differ between any two runs)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if "seconds" not in k and k != "compute"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_resumed_run_equals_uninterrupted_and_report_draws_it(tiny_model_dir, data, tmp_path, monkeypatch):
    args = ["continual", "--data", str(data), "--model", str(tiny_model_dir), "--continual.sequences", "2",
            "--continual.length", "3", "--continual.unrelated", "1", *FAST_ARGS]
    whole = tmp_path / "whole"
    assert main(args + ["--out", str(whole)]) == 0

    calls = {"n": 0}
    real = C.train_adapters

    def dies_at_the_fifth_update(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # sequence 2, passage 2: mid-sequence, with a kept update to re-merge
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(C, "train_adapters", dies_at_the_fifth_update)
    resumed = tmp_path / "resumed"
    assert main(args + ["--out", str(resumed)]) == 130
    assert len(read_jsonl(resumed / "steps.jsonl")) == 4
    assert len(list((resumed / "adapters" / "seq_1").glob("*.safetensors"))) == 1
    monkeypatch.setattr(C, "train_adapters", real)
    assert main(args + ["--out", str(resumed)]) == 0

    assert _strip(read_jsonl(resumed / "steps.jsonl")) == _strip(read_jsonl(whole / "steps.jsonl"))
    a, b = (json.loads((r / "continual.json").read_text()) for r in (resumed, whole))
    assert _strip(a) == _strip(b)
    assert a["sequences_done"] == 2 and a["data"]["skipped_no_questions"] == 1
    assert not (resumed / "adapters").exists()  # finished sequences keep no adapter files
    f = json.loads((whole / "forgetting.json").read_text())
    assert len(f["matrix"]) == len(f["after"]) == 4 and all(len(r) == len(f["on"]) == 3 for r in f["matrix"])

    # the heatmap needs the report extra (scripts/setup.sh installs it): a visible skip without it
    pytest.importorskip("matplotlib", reason="seal report needs matplotlib: pip install 'seal[report]'")
    from seal.report import build_report
    build_report([whole], tmp_path / "report")
    assert (tmp_path / "report" / "forgetting.png").stat().st_size > 1000
