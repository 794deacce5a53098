"""`seal bench round` on the tiny model: every path runs and the report is complete (no timing
assertions); the keep / agreement arithmetic on hand-made rewards."""

from __future__ import annotations

import argparse
import json

import pytest

from seal.bench.round import add_cli, agreement, kept, render
from seal.bench.workload import WORKLOAD_VERSION


def test_kept_is_restems_best_positive_filter():
    rewards = {"a/0": 0.2, "a/1": 0.4, "a/2": 0.4, "b/0": 0.0, "b/1": -0.2, "c/0": None, "c/1": 0.1}
    assert kept(rewards) == {"a": 1, "b": None, "c": 1}
    # equal rewards go to the larger log-prob; a missing one (racing stopped it) never wins a tie
    assert kept(rewards, {"a/0": -0.1, "a/1": -2.0, "a/2": -1.0, "c/1": None})["a"] == 2
    assert kept(rewards, {"a/1": None, "a/2": -1.0})["a"] == 2


def test_agreement_counts_same_choice_and_reward_lost():
    ref = {"a/0": 0.2, "a/1": 0.6, "b/0": 0.4, "b/1": 0.0, "c/0": -0.1, "c/1": 0.0}
    path = {"a/0": 0.2, "a/1": None, "b/0": 0.4, "b/1": 0.0, "c/0": -0.1, "c/1": 0.0}
    a = agreement({"rewards": path}, {"rewards": ref})
    assert a["passages"] == 3 and a["differ"] == ["a"]
    assert abs(a["same_kept"] - 2 / 3) < 1e-9 and abs(a["no_loss"] - 2 / 3) < 1e-9
    assert abs(a["kept_reward_loss_mean"] - 0.4 / 3) < 1e-9 and abs(a["kept_reward_loss_max"] - 0.4) < 1e-9


def test_agreement_orders_ties_by_each_paths_own_logprobs():
    ref = {"rewards": {"a/0": 0.2, "a/1": 0.2}, "tiebreak": {"a/0": -3.0, "a/1": -1.0}}
    path = {"rewards": {"a/0": 0.2, "a/1": 0.2}, "tiebreak": {"a/0": -0.5, "a/1": -1.0}}
    a = agreement(path, ref)  # the path keeps 0, the reference 1: a different choice, no reward lost
    assert a["same_kept"] == 0 and a["no_loss"] == 1 and a["kept_reward_loss_mean"] == 0
    assert agreement({"rewards": path["rewards"]}, {"rewards": ref["rewards"]})["same_kept"] == 1  # first on ties


def _workload(path, squad_tiny):
    passages = json.loads(squad_tiny.read_text())[:2]
    wl = {"version": WORKLOAD_VERSION, "model": "tiny", "data": str(squad_tiny), "data_sha256": "0" * 64, "seed": 0,
          "k": 3, "template": "implications", "include_passage": True, "passage_ids": ["p0", "p1"],
          "generation": {},
          "passages": [{"id": f"p{i}", "title": p["title"], "context": p["context"], "questions": p["questions"],
                        "selfedits": [f"- {p['title']} is in the passage.\n- {p['questions'][0]['answer']} matters.",
                                      "- " + p["context"].split(".")[0] + ".",
                                      f"- The answer is {p['questions'][-1]['answer']}.\n- {p['title']} is notable."]}
                       for i, p in enumerate(passages)]}
    path.write_text(json.dumps(wl))


@pytest.mark.machine_dtype  # the `pruned auto` sampling path: bf16 where this CPU has it, else fp32
def test_bench_round_tiny(tmp_path, tiny_model_dir, squad_tiny):
    _workload(tmp_path / "wl.json", squad_tiny)
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    argv = ["bench", "round", "--model", str(tiny_model_dir), "--workload", str(tmp_path / "wl.json"),
            "--out", str(tmp_path / "out.json"), "--threads", "2", "--in-process"]
    args = parser.parse_args(argv)
    assert args.func(args, argv) == 0
    res = json.loads((tmp_path / "out.json").read_text())
    assert set(res["paths"]) == {"ref", "exhaustive", "racing", "noise", "racing x2"}
    for name, p in res["paths"].items():
        assert p["evaluations"] == 6 and p["seconds"] > 0, name
        assert set(p["rewards"]) == {f"p{i}/{j}" for i in range(2) for j in range(3)}, name
    assert res["paths"]["racing"]["raced_out"] > 0  # 3 self-edits, eta 2: someone stops at the first rung
    assert res["paths"]["racing x2"]["raced_out"] == res["paths"]["racing"]["raced_out"]
    for k, v in res["paths"]["exhaustive"]["rewards"].items():  # a survivor's reward is exhaustive's
        r = res["paths"]["racing"]["rewards"][k]
        assert r is None or abs(r - v) < 1e-6
    agree = res["agreement_with_exhaustive"]
    assert {"ref", "racing", "noise", "racing x2", "racing vs ref", "exhaustive vs ref"} <= set(agree)
    assert all(0 <= a["same_kept"] <= a["no_loss"] <= 1 for a in agree.values())
    assert res["tie_break"] == "logprob" and "ordered by logprob" in render(res)
    for name, p in res["paths"].items():  # survivors carry the log-prob that orders equal rewards
        assert set(p["tiebreak"]) == set(p["rewards"]), name
        assert all((v is None) == (p["rewards"][k] is None) for k, v in p["tiebreak"].items()), name
    assert set(res["sampling"]) == {"hf", "pruned", "pruned auto"}
    for s in res["sampling"].values():
        assert s["tokens_per_second"] > 0 and s["bandwidth_gbs"] > 0 and 0 < s["fraction_of_roofline"]
    low = "bfloat16" if res["sampling"]["pruned auto"]["dtype"] == "torch.bfloat16" else "float32"
    n_params = res["sampling"]["pruned"]["weight_bytes"] / 4  # fp32 weights: 4 bytes each
    assert res["sampling"]["pruned auto"]["weight_bytes"] == n_params * (2 if low == "bfloat16" else 4)
    assert res["paths"]["exhaustive"]["inner_dtype"] in ("float32", "bfloat16") and "precision:" in render(res)
    assert res["machine"]["cpu_flags"] is not None and "GPU" in render(res)
    assert (tmp_path / "out.md").read_text().startswith("# seal bench round")
