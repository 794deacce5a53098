"""restem.estep_from: an M-step ablation takes another run's round-1 E-step instead of computing it."""

import json

from seal.cli import main
from seal.runs import read_jsonl

ARGS = ["--restem.rounds", "1", "--restem.passages_per_round", "2", "--selfedit.k", "2",
        "--restem.keep", "top-fraction", "--restem.generator_check", "1", "--eval.reward", "logprob",
        "--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1"]


def _no_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_taken_estep_equals_a_computed_one_and_other_settings_are_refused(tiny_model_dir, squad_tiny, tmp_path,
                                                                          capsys, fixed_selfedits):
    """Self-edits are fixed passage lines (conftest), so every one parses and their rewards differ."""
    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), *ARGS]
    src, taken, fresh = tmp_path / "src", tmp_path / "taken", tmp_path / "fresh"
    assert main([*args, "--restem.keep_fraction", "0.25", "--out", str(src)]) == 0
    # the ablation: another M-step (twice the kept fraction), on src's E-step and computed afresh
    assert main([*args, "--restem.keep_fraction", "0.5", "--restem.estep_from", str(src), "--out", str(taken)]) == 0
    assert f"this session (E-step taken from {src})" in capsys.readouterr().out
    assert main([*args, "--restem.keep_fraction", "0.5", "--out", str(fresh)]) == 0

    s, t, f = (d / "rounds/round_1" for d in (src, taken, fresh))
    # taken, not recomputed: the same records, down to each inner-loop job's seconds
    for name in ("samples.jsonl", "base.jsonl", "rewards.jsonl", "check_base.jsonl"):
        assert read_jsonl(t / name) == read_jsonl(s / name), name
    before = [r for r in read_jsonl(s / "check.jsonl") if r["sample"] != 1]
    assert before and [r for r in read_jsonl(t / "check.jsonl") if r["sample"] != 1] == before
    # ... and equal to computing them: the same kept set, M-step and new generator's check
    assert _no_seconds(read_jsonl(t / "rewards.jsonl")) == _no_seconds(read_jsonl(f / "rewards.jsonl"))
    assert read_jsonl(t / "sft.jsonl") == read_jsonl(f / "sft.jsonl")
    assert len(read_jsonl(t / "sft.jsonl")) == 2 and len(read_jsonl(s / "sft.jsonl")) == 1
    after = [r for r in read_jsonl(t / "check.jsonl") if r["sample"] == 1]
    # the new generator's side of the check is this run's own (computed here, so its seconds differ)
    assert [r["seconds"] for r in after] != [r["seconds"] for r in read_jsonl(s / "check.jsonl") if r["sample"] == 1]
    assert after and _no_seconds(after) == _no_seconds([r for r in read_jsonl(f / "check.jsonl") if r["sample"] == 1])
    done = {d: json.loads((d / "done.json").read_text()) for d in (s, t, f)}
    assert done[t]["generator_check"]["after_minus_before"] == done[f]["generator_check"]["after_minus_before"]
    assert done[t]["kept_logprob_after"] == done[f]["kept_logprob_after"] != done[s]["kept_logprob_after"]
    # the round says where its E-step came from, and does not call itself resumed
    assert (done[t]["estep_from"], done[t]["resumed"]) == (str(src), False)
    assert done[f]["estep_from"] is None and done[s]["estep_from"] is None
    logged = [r for r in read_jsonl(taken / "metrics.jsonl") if r.get("event") == "estep_from"]
    assert len(logged) == 1 and "rounds/round_1/rewards.jsonl" in logged[0]["files"]
    # a resumed run takes nothing again
    assert main([*args, "--restem.keep_fraction", "0.5", "--restem.estep_from", str(src), "--out", str(taken)]) == 0
    assert len([r for r in read_jsonl(taken / "metrics.jsonl") if r.get("event") == "estep_from"]) == 1

    # an E-step setting that differs is refused before anything is written, and named
    capsys.readouterr()
    assert main([*args, "--inner.lr", "0.5", "--restem.estep_from", str(src), "--out", str(tmp_path / "lr")]) == 2
    assert "inner.lr" in capsys.readouterr().err and not (tmp_path / "lr").exists()
    assert main([*args, "--restem.estep_from", str(tmp_path / "nothing"), "--out", str(tmp_path / "no")]) == 2
    assert "not a seal run folder" in capsys.readouterr().err and not (tmp_path / "no").exists()
