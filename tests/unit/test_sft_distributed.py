"""Data-parallel SFT (seal/engine/sft_distributed.py): one process equals the in-process M-step, two
processes (threads summing their gradients, and real `accelerate launch` CPU processes) equal
one process with the same global batch."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from seal.config import InnerLoopConfig, LoRAConfig, ModelConfig
from seal.engine.restem import sft
from seal.engine.sft_distributed import read_examples, sft_data_parallel, write_examples
from seal.training.inner_loop import TrainExample
from seal.training.models import load_model

INNER = InnerLoopConfig(lora=LoRAConfig(rank=4, alpha=8), lr=3e-3, epochs=2, steps="packed", batch_size=3, loss_on="completion",
                        dtype="fp32", parallel_adapters=1)


def _examples() -> list[TrainExample]:
    facts = ["The river town traded salt for amber.", "Its bridge was built of pale stone in spring.",
             "Two bells ring at dusk over the market.", "A ferry crosses the lake every hour.",
             "The mayor keeps a ledger of every storm.", "Wool from the hills is dyed green."]
    return [TrainExample(f, f"Passage {i}: write an implication.") for i, f in enumerate(facts)]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.set_num_threads(1)
    return load_model(ModelConfig(name=str(tiny_model_dir)))


def _max_diff(a, b) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


def _moved(a, b) -> float:
    return _max_diff(a, b)


def test_one_process_equals_the_in_process_m_step(tiny):
    model, tok = tiny
    ref, dp = copy.deepcopy(model), copy.deepcopy(model)
    sft(ref, tok, _examples(), INNER, seed=11)
    stats = sft_data_parallel(dp, tok, _examples(), INNER, seed=11)
    assert stats["steps"] == 4 and _moved(ref, model) > 1e-4  # it trained
    assert _max_diff(ref, dp) < 1e-5


def test_two_ranks_sum_to_one_process(tiny):
    """Two ranks in two threads, each with its own copy of the model, sum their gradients
    through a barrier: the merged weights equal one process's on the same global batches."""
    model, tok = tiny
    one = copy.deepcopy(model)
    sft_data_parallel(one, tok, _examples(), INNER, seed=11)
    copies = [copy.deepcopy(model) for _ in range(2)]
    slots: list = [None, None]
    summed: list = [None]
    barrier = threading.Barrier(2, action=lambda: summed.__setitem__(0, slots[0] + slots[1]))
    errors = []

    def rank(r):
        def all_reduce(t):
            slots[r] = t.clone()
            barrier.wait()
            out = summed[0].clone()
            barrier.wait()  # both have read the sum before the next one is written
            return out
        try:
            sft_data_parallel(copies[r], tok, _examples(), INNER, seed=11, rank=r, world=2, all_reduce=all_reduce)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _max_diff(copies[0], copies[1]) == 0.0  # every rank takes the same step
    assert _max_diff(copies[0], one) < 1e-5


def test_examples_file_round_trip_and_bad_file(tmp_path):
    from seal.config import ConfigError

    write_examples(tmp_path / "kept.jsonl", _examples())
    assert read_examples(tmp_path / "kept.jsonl") == _examples()
    (tmp_path / "bad.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(ConfigError, match="bad.jsonl:1"):
        read_examples(tmp_path / "bad.jsonl")


def _seal_sft(launcher: list[str], model_dir: Path, examples: Path, out: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "SEAL_QUIET": "1"}
    cmd = launcher + ["sft", "--model", str(model_dir), "--examples", str(examples), "--out", str(out),
                      "--restem.sft_lora.rank", "4", "--restem.sft_lora.alpha", "8", "--restem.sft_lr", "3e-3",
                      "--restem.sft_epochs", "2", "--restem.sft_batch_size", "3", "--inner.dtype", "fp32",
                      "--seed", "11"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return load_model(ModelConfig(name=str(out)))[0]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_equal_one(tiny_model_dir, tmp_path):
    """The documented command, for real: `accelerate launch --multi_gpu --num_processes 2 -m
    seal.cli sft` (on a machine without a GPU: two CPU processes, gloo all-reduce) against plain
    `seal sft` (one process). About a minute per launch on a busy 2-core machine: slow."""
    pytest.importorskip("accelerate", reason="accelerate is not installed (pip install 'seal[distributed]')")
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not on PATH")
    write_examples(tmp_path / "kept.jsonl", _examples())
    one = _seal_sft([sys.executable, "-m", "seal.cli"], tiny_model_dir, tmp_path / "kept.jsonl", tmp_path / "one")
    two = _seal_sft([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                     "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "seal.cli"],
                    tiny_model_dir, tmp_path / "kept.jsonl", tmp_path / "two")
    base = load_model(ModelConfig(name=str(tiny_model_dir)))[0]
    assert _moved(one, base) > 1e-4 and _max_diff(one, two) < 1e-5
    assert '"processes": 2' in (tmp_path / "two" / "sft.json").read_text()


@pytest.mark.slow
def test_seal_train_m_step_on_two_processes_equals_one(tiny_model_dir, squad_tiny, tmp_path):
    """`seal train --restem.sft_processes 2` launches the M-step under accelerate and saves the
    round model one process would have saved."""
    pytest.importorskip("accelerate", reason="accelerate is not installed (pip install 'seal[distributed]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "SEAL_QUIET": "1"}
    args = [sys.executable, "-m", "seal.cli", "train", "--model", str(tiny_model_dir), "--data", str(squad_tiny),
            "--restem.rounds", "1", "--restem.passages_per_round", "2", "--selfedit.k", "2",
            "--restem.keep", "top-fraction", "--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4",
            "--inner.epochs", "1", "--threads", "1"]
    for name, extra in (("one", []), ("two", ["--restem.sft_processes", "2"])):
        r = subprocess.run(args + extra + ["--out", str(tmp_path / name)], env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    one = load_model(ModelConfig(name=str(tmp_path / "one/rounds/round_1/model")))[0]
    two = load_model(ModelConfig(name=str(tmp_path / "two/rounds/round_1/model")))[0]
    assert _max_diff(one, two) < 1e-5
    assert '"processes": 2' in (tmp_path / "two/rounds/round_1/model/sft.json").read_text()


def test_launch_config_carries_every_tasks_m_step_settings():
    """The launched `seal sft` trains with exactly the M-step settings of the task that launched
    it (knowledge's restem.sft_*, ARC's), and settings it cannot carry are refused."""
    import dataclasses

    from seal.arc.config import ArcConfig
    from seal.arc.task import sft_config as arc_sft
    from seal.config import ConfigError, ModelConfig, RunConfig
    from seal.engine.sft_distributed import launch_config
    from seal.knowledge.task import sft_config as knowledge_sft

    for inner in (knowledge_sft(RunConfig()), arc_sft(ArcConfig(dtype="fp32")), INNER):
        cfg = launch_config(ModelConfig(), "some/folder", inner, seed=3, threads=1)
        assert knowledge_sft(cfg) == inner and cfg.model.name == "some/folder" and cfg.seed == 3
    with pytest.raises(ConfigError, match="sft_processes"):
        launch_config(ModelConfig(), "f", dataclasses.replace(INNER, loss_on="all"), seed=0, threads=1)
