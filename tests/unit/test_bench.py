"""`seal bench inner-loop` on the tiny model: every code path runs and the report is complete
(no timing assertions)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys

import pytest

from seal.bench.inner_loop import add_cli, render
from seal.training.inner_loop import Speedups


def _args(tmp_path, model_dir, squad_tiny, **kw):
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    argv = ["bench", "inner-loop", "--model", str(model_dir), "--data", str(squad_tiny), "--passages", "2",
            "--k", "3", "--max-new-tokens", "24", "--workload", str(tmp_path / "workload.json"), "--out", str(tmp_path / "out.json"),
            "--threads", "1", "--padded-selfedits", "1", "--padded-seqs", "1", "--pad-to", "96",
            "--peak-size", "128", "--bf16-peak-size", "32", "--noise-passages", "1",
            "--parallel-variants", "1", "--in-process"]
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return parser.parse_args(argv), argv


def test_bench_inner_loop_tiny(tmp_path, tiny_model_dir, squad_tiny, capsys):
    args, argv = _args(tmp_path, tiny_model_dir, squad_tiny)
    assert args.func(args, argv) == 0
    wl = json.loads((tmp_path / "workload.json").read_text())
    assert len(wl["passages"]) == 2 and all(len(p["selfedits"]) == 3 for p in wl["passages"])
    assert len(wl["data_sha256"]) == 64 and len(wl["passage_ids"]) == 2
    assert wl["generation"]["tokens_per_second"] > 0

    res = json.loads((tmp_path / "out.json").read_text())
    for key in ("config", "seed", "workload", "machine", "matmul_peak", "generation", "paths", "rates",
                "fidelity", "notes", "summary"):
        assert key in res, key
    assert {"cpu_model", "torch", "torch_threads"} <= set(res["machine"])
    assert set(res["paths"]) == {"fast", "fast+gen", "ref", "ref seed 2", "ref pad2048", "fast pa=1"}
    assert res["paths"]["fast"]["evaluations"] == 6 and res["paths"]["ref seed 2"]["evaluations"] == 3
    for name, r in res["paths"].items():
        rate = res["rates"][name]
        assert r["peak_rss_mib"] > 0 and r["train_flops"] > 0 and r["eval_flops"] > 0, name
        assert rate["evals_per_min"] > 0 and rate["train_tokens_per_s"] > 0, name
    assert res["paths"]["ref pad2048"]["extrapolated"] and res["paths"]["ref pad2048"]["estimated_seconds"] > 0
    assert res["paths"]["fast+gen"]["generated_tokens"] > 0
    # fidelity numbers are computed (values may be nan only if rewards tie exactly)
    f = res["fidelity"]
    assert f["fast vs ref"]["n"] == 6 and f["ref vs ref (seed noise)"]["n"] == 3
    assert isinstance(f["fast vs ref"]["spearman"], float)
    assert not math.isnan(f["fast vs ref"]["mean_reward_a"])
    assert len(res["paths"]["fast"]["rewards"]) == 6
    # the same training gives the same log-prob reward with or without generation
    for k, v in res["paths"]["fast"]["rewards"].items():
        assert abs(v - res["paths"]["fast+gen"]["rewards"][k]) < 1e-4
    assert re.match(r"^\d+\.\dx self-edit evaluations/min", res["summary"])
    assert "matmul peak" in res["summary"] and "reward Spearman" in res["summary"]
    # the passage is in every self-edit's data: the first step ran it once for all adapters
    fast = res["paths"]["fast"]
    assert fast["executed_train_tokens"] < fast["train_tokens"]
    assert (tmp_path / "out.md").exists()
    out = capsys.readouterr().out
    assert res["summary"] in out and "ref pad2048*" in out
    render(res)  # renders again from the saved JSON

    # second run reuses the saved workload unchanged
    before = (tmp_path / "workload.json").read_text()
    args, argv = _args(tmp_path, tiny_model_dir, squad_tiny)
    args.padded_selfedits, args.noise_passages, args.parallel_variants, args.skip_generate_variant = 0, 0, [], True
    args.ref_passages, args.subset, args.ablate = 1, [1], True
    assert args.func(args, argv) == 0
    assert (tmp_path / "workload.json").read_text() == before
    res2 = json.loads((tmp_path / "out.json").read_text())
    assert res2["workload"]["hash"] == res["workload"]["hash"]
    assert res2["paths"]["fast"]["evaluations"] == 3 and res2["workload"]["subset"] == [1]
    # every speed-up switch off (and all of them) gives the same rewards: they change only speed
    ablated = {n: r for n, r in res2["paths"].items() if n.startswith("ablate: ")}
    n_switches = len(dataclasses.fields(Speedups))  # each off alone, plus all on, all off and all off pa=1
    assert len(ablated) == n_switches + 3 and all(r["evaluations"] == 3 for r in ablated.values())
    for name, r in ablated.items():
        for k, v in r["rewards"].items():
            assert abs(v - res2["paths"]["fast"]["rewards"][k]) < 1e-3, (name, k)
    assert "measured when the workload was created" in res2["generation"]["measured"] or \
        "when the workload was created" in res2["generation"]["measured"]


def _running(pid: int) -> bool:
    """Whether pid is a live process (a zombie awaiting its reaper counts as ended)."""
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_benchmark_worker_ends_with_the_benchmark_that_started_it():
    """A killed `seal bench` leaves no worker running (it would skew the next measurement)."""
    import subprocess
    import time
    child = ("import os, sys, time; from seal.engine.executors import die_with_parent; "
             "die_with_parent(int(sys.argv[1])); print('armed', flush=True); time.sleep(120)")
    parent = ("import subprocess, sys, os; c = subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid())], "
              "stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True); c.stdout.readline(); print(c.pid, flush=True)")
    out = subprocess.run([sys.executable, "-c", parent, child], capture_output=True, text=True, timeout=120)
    pid = int(out.stdout.strip())
    deadline = time.time() + 15
    while _running(pid) and time.time() < deadline:
        time.sleep(0.2)
    alive = _running(pid)
    if alive:
        import os
        import signal
        os.kill(pid, signal.SIGKILL)
    assert not alive
