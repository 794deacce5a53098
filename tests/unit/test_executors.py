"""Executors (seal/engine/executors.py) under jobs.run_inner_jobs: the Ray executor gives the local
executor's results on a real local Ray cluster (2 CPUs) with the tiny model, for every task's inner
loop (knowledge, ARC, the example task), a worker killed mid-round loses nothing, and a missing
Ray or a bad address is one line naming the setting."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import pytest

from seal import knowledge as K
from seal.config import ConfigError, EvalConfig, ExecutorConfig, InnerLoopConfig, ModelConfig
from seal.engine.executors import (
    Batch,
    ExecutorError,
    LocalExecutor,
    Resident,
    inner_batch,
    make_executor,
    oversubscription,
    unreachable,
)
from seal.engine.jobs import job_batches, run_inner_jobs
from seal.runs import read_jsonl

INNER = InnerLoopConfig(epochs=1, parallel_adapters=2, steps="packed", batch_size=4, dtype="fp32")
EVAL = EvalConfig(max_answer_tokens=3, batch_size=8)
QA = K.QAInnerLoop(INNER, EVAL)
TIMING = ("seconds", "train_seconds")


def _jobs(squad_tiny) -> list[K.Job]:
    """Two self-edits of each passage, a passage's pair in one group with one seed (as ReSTEM's
    E-step makes them): one batch of 2 per passage."""
    jobs = []
    for n, p in enumerate(K.load_passages(squad_tiny)[0]):
        for j, items in enumerate([[f"{p.title} is a topic worth a long sentence."], ["Another fact about it is here."]]):
            jobs.append(K.Job(f"{p.id}/{j}/0", [p.id], K.training_examples(p, items, True), p.questions,
                              1000 + n, group=f"{p.id}/0"))
    return jobs


def _run(res: Resident, jobs, on_result, executor=None, **kw) -> None:
    run_inner_jobs(QA, res.model, res.tok, res.gen, res.chat, jobs, on_result, executor=executor, **kw)


def _strip(results: dict) -> str:
    return json.dumps({k: {f: v for f, v in r.items() if f not in TIMING} for k, r in results.items()}, sort_keys=True)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    from seal.training.generation import HFGenerator
    from seal.training.models import load_model, uses_chat

    torch.set_num_threads(1)  # as each Ray actor (num_cpus 1)
    cfg = ModelConfig(name=str(tiny_model_dir))
    model, tok = load_model(cfg)
    return cfg, Resident(model, tok, HFGenerator(model, tok), uses_chat(tok, cfg))


@pytest.fixture(scope="module")
def local_results(tiny, squad_tiny):
    _, resident = tiny
    out = {}
    _run(resident, _jobs(squad_tiny), lambda j, r: out.__setitem__(j.key, r))
    return out


def test_local_executor_is_the_inner_loop_batch_by_batch(tiny, squad_tiny, local_results):
    """In process (no executor, or a LocalExecutor) run_inner_jobs computes exactly what the inner
    loop computes batch by batch over engine.job_batches, in the same order of results and
    progress, resuming finished jobs the same way."""
    _, res = tiny
    jobs = _jobs(squad_tiny)
    direct, order = {}, []
    for batch in job_batches(jobs, QA.adapters_per_batch):
        for j, r in QA.run_batch(res.model, res.tok, res.gen, res.chat, batch, frozenset()):
            direct[j.key] = r
            order.append(j.key)
    assert _strip(direct) == _strip(local_results) and list(local_results) == order
    done = {jobs[0].key, jobs[2].key, jobs[3].key}  # half a batch and a whole one finished earlier
    again, ticks2 = {}, []
    _run(res, jobs, lambda j, r: again.__setitem__(j.key, r), LocalExecutor(res), progress=ticks2.append, done=done)
    assert set(again) == {j.key for j in jobs} - done
    assert _strip(again) == _strip({k: v for k, v in direct.items() if k not in done})
    assert sum(ticks2) == len(jobs) - len(done)


def test_bad_executor_settings_are_one_line():
    with pytest.raises(ConfigError, match="address"):
        ExecutorConfig(address="not an address")
    with pytest.raises(ConfigError, match="kind"):
        ExecutorConfig(kind="slurm")
    assert unreachable("auto") is None and "cannot connect" in unreachable("127.0.0.1:1", timeout=1)


def test_ray_missing_is_one_line_naming_the_extra(tiny, monkeypatch):
    cfg, _ = tiny
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ExecutorError) as e:
        make_executor(ExecutorConfig(kind="ray"), cfg)
    assert "pip install 'seal[ray]'" in str(e.value) and "executor.kind" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_ray_missing_from_the_command_line(squad_tiny, tiny_model_dir, capsys, tmp_path, monkeypatch):
    from seal.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "run"
    assert main(["evaluate", "--data", str(squad_tiny), "--model", str(tiny_model_dir), "--limit", "1",
                 "--executor.kind", "ray", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "executor.kind" in err and "seal[ray]" in err
    assert not out.exists()


# ----------------------------------------------------------------------------- a real local Ray cluster


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'seal[ray]')")
    os.environ.setdefault("RAY_worker_niceness", "0")  # as executors.connect: workers at this process's priority
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    # the crash helpers below live in this test module, which Ray workers cannot import
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def ray_executor(ray_cluster, tiny):
    cfg, _ = tiny
    # half a CPU each, so that a `seal train --executor.kind ray` below finds room for its own two
    ex = make_executor(ExecutorConfig(kind="ray", workers=2, num_cpus=0.5, max_retries=2), cfg, threads=1)
    yield ex
    ex.close()


def test_ray_gives_the_local_results(tiny, ray_executor, squad_tiny, local_results):
    out, ticks = {}, []
    _run(tiny[1], _jobs(squad_tiny), lambda j, r: out.__setitem__(j.key, r), ray_executor, progress=ticks.append)
    assert _strip(out) == _strip(local_results)
    assert sum(ticks) == len(out)
    assert len({pid for pid in ray_executor.ray.get([a.ready.remote() for a in ray_executor.actors])}) == 2


def test_actors_killed_mid_round_lose_nothing(tiny, ray_executor, squad_tiny, local_results):
    """After the first batch returns, both actors are killed (one is mid-batch, the other is
    about to get one): those batches run again on fresh actors, every result arrives exactly
    once and equals the local one."""
    ray = ray_executor.ray
    seen: list[str] = []
    replaced = ray_executor.replaced

    def save(job, res):
        seen.append(job.key)
        out[job.key] = res
        if len(seen) == 1:
            for a in ray_executor.actors:
                ray.kill(a, no_restart=True)

    out: dict = {}
    _run(tiny[1], _jobs(squad_tiny), save, ray_executor)
    assert sorted(seen) == sorted(local_results) and len(seen) == len(set(seen))
    assert _strip(out) == _strip(local_results)
    assert ray_executor.replaced - replaced >= 1


def _exit_once(res, batch, *, flag: str, work):
    """Work that makes its worker process die (as an out-of-memory kill would) the first time it
    sees `flag`, mid-batch; then does `work`."""
    try:
        os.rename(flag, flag + ".taken")  # atomic: exactly one worker claims the crash
    except OSError:
        return work(res, batch)
    os._exit(1)


def _always_exit(res, batch):
    os._exit(1)


def test_a_worker_that_dies_mid_batch_is_retried(ray_executor, squad_tiny, local_results, tmp_path):
    flag = tmp_path / "crash"
    flag.write_text("")
    jobs = _jobs(squad_tiny)
    batches = [Batch(b) for b in job_batches(jobs, QA.adapters_per_batch)]
    work = functools.partial(_exit_once, flag=str(flag), work=functools.partial(inner_batch, inner=QA))
    replaced = ray_executor.replaced
    out, seen = {}, []
    ray_executor.map(work, batches, lambda j, r: (seen.append(j.key), out.__setitem__(j.key, r)))
    assert Path(str(flag) + ".taken").exists() and ray_executor.replaced == replaced + 1
    assert sorted(seen) == sorted(local_results) and _strip(out) == _strip(local_results)


def test_retries_run_out_with_one_line(ray_executor, squad_tiny):
    import dataclasses

    cfg = ray_executor.cfg
    ray_executor.cfg = dataclasses.replace(cfg, max_retries=1)
    try:
        with pytest.raises(ExecutorError) as e:
            ray_executor.map(_always_exit, [Batch(_jobs(squad_tiny)[:2])], lambda j, r: None)
    finally:
        ray_executor.cfg = cfg
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "executor.max_retries" in msg and "2 times" in msg
    assert len(ray_executor.actors) == 2  # the dead ones were replaced: the executor still works


def _rewards(run: Path) -> dict:
    return {(r["passage_id"], r["sample"], r["seed"]): (r["reward"], r["metrics"])
            for r in read_jsonl(run / "rounds" / "round_1" / "rewards.jsonl")}


def test_seal_train_on_ray_equals_local(ray_executor, squad_tiny, tiny_model_dir, tmp_path):
    """The whole E-step through the command line: `--executor.kind ray` writes the rewards the
    local executor writes, and the round's M-step model is the same."""
    from safetensors.torch import load_file

    from seal.cli import main

    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
            "--restem.passages_per_round", "2", "--selfedit.k", "2", "--restem.keep", "top-fraction",
            "--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--executor.kind", "ray", "--executor.num_cpus", "0.5", "--out", str(tmp_path / "ray")]) == 0
    a, b = _rewards(tmp_path / "local"), _rewards(tmp_path / "ray")
    assert a and a == b
    wa = load_file(str(tmp_path / "local/rounds/round_1/model/model.safetensors"))
    wb = load_file(str(tmp_path / "ray/rounds/round_1/model/model.safetensors"))
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)


def _ttt_jobs(tok, chat):
    from seal.arc.config import ArcConfig
    from seal.arc.data import load_tasks
    from seal.arc.run import make_job
    from seal.arc.selfedit import SelfEditConfig

    cfg = ArcConfig(max_examples=2, max_steps=2, batch_size=1, permutations=0, views=1, max_answer_tokens=8,
                    parallel_adapters=2)
    tasks = load_tasks(str(Path(__file__).resolve().parents[1] / "fixtures" / "arc"))[:3]
    jobs = [make_job(t, SelfEditConfig(learning_rate=lr, num_train_epochs=1), tok, chat, cfg)
            for t in tasks for lr in (1e-2, 1e-3)]
    return cfg, [j for j in jobs if j is not None]


def _ttt_strip(results: dict) -> str:
    return json.dumps({k: {f: v for f, v in r.items() if "seconds" not in f} for k, r in results.items()}, sort_keys=True)


def _arc_ttt_matches_local(res: Resident, executor) -> None:
    """ARC's test-time training (its TTTInnerLoop) on `executor` gives the in-process results,
    through the same engine call and with no executor code of its own."""
    from seal.arc.run import TTTInnerLoop

    cfg, jobs = _ttt_jobs(res.tok, res.chat)
    ttt = TTTInnerLoop(cfg)
    local, remote = {}, {}
    run_inner_jobs(ttt, res.model, res.tok, res.gen, res.chat, jobs, lambda j, r: local.__setitem__(j.key, r))
    run_inner_jobs(ttt, res.model, res.tok, res.gen, res.chat, jobs, lambda j, r: remote.__setitem__(j.key, r),
                   done={jobs[0].key}, executor=executor)
    assert len(local) == len(jobs)
    assert _ttt_strip(remote) == _ttt_strip({k: v for k, v in local.items() if k != jobs[0].key})


def test_arc_ttt_on_the_executors(tiny, ray_executor):
    _arc_ttt_matches_local(tiny[1], ray_executor)


def test_a_third_task_on_ray_with_no_code_of_its_own(tiny, ray_cluster, ray_executor, tmp_path):
    """tests/example_task.py (invented words), a domain the engine has never heard of: a whole
    ReSTEM round with its inner-loop jobs on the Ray workers writes the rewards and the round
    model of the in-process round."""
    import example_task as W
    from safetensors.torch import load_file

    from seal.engine.restem import Backends, run_rounds
    from seal.runs import open_run

    ray_cluster.cloudpickle.register_pickle_by_value(W)  # a test module, not installed on the workers
    cfg_model, res = tiny
    words = [W.Word("blick", "a small blue stone used as money"), W.Word("quorn", "the hour before a storm")]
    for name, backends in (("local", None), ("ray", Backends(executor=ray_executor))):
        cfg = W.WordsConfig(out=str(tmp_path / name))
        run_rounds(W.WordsTask(cfg, words), open_run("words-train", cfg, []), res.model, res.tok, False, cfg_model,
                   rounds=1, seed=cfg.seed, unchanged="unchanged", backends=backends)
    strip = lambda run: [{k: v for k, v in r.items() if "seconds" not in k}  # noqa: E731
                         for r in read_jsonl(run / "rounds/round_1/rewards.jsonl")]
    a, b = strip(tmp_path / "local"), strip(tmp_path / "ray")
    key = lambda r: (r["word"], r["sample"])  # noqa: E731  (Ray returns batches in completion order)
    assert a and sorted(a, key=key) == sorted(b, key=key)
    model = tmp_path / "local/rounds/round_1/model/model.safetensors"
    if model.exists():
        wa, wb = load_file(str(model)), load_file(str(tmp_path / "ray/rounds/round_1/model/model.safetensors"))
        assert all(bool((wa[k] == wb[k]).all()) for k in wa)


@pytest.fixture(scope="module")
def process_executor(tiny):
    cfg, _ = tiny
    ex = make_executor(ExecutorConfig(kind="processes", workers=2), cfg)
    yield ex
    ex.close()


def test_arc_ttt_on_processes(tiny, process_executor):
    _arc_ttt_matches_local(tiny[1], process_executor)


def test_processes_give_the_local_results(tiny, process_executor, squad_tiny, local_results):
    """Two worker processes (one torch thread each, as the module's model here) compute exactly
    the in-process results, each reported once, with progress per batch."""
    out, seen, ticks = {}, [], []
    _run(tiny[1], _jobs(squad_tiny), lambda j, r: (seen.append(j.key), out.__setitem__(j.key, r)), process_executor,
         progress=ticks.append)
    assert _strip(out) == _strip(local_results) and sorted(seen) == sorted(local_results) == sorted(set(seen))
    assert sum(ticks) == len(out) and os.getpid() not in process_executor.pids


def _raise(res, batch):
    raise ValueError(f"bad job {batch.jobs[0].key}")


def test_a_failing_job_is_raised_and_a_dead_worker_is_one_line(tiny, squad_tiny):
    cfg, _ = tiny
    jobs = _jobs(squad_tiny)
    with make_executor(ExecutorConfig(kind="processes", workers=1), cfg) as ex:
        with pytest.raises(ValueError, match=f"bad job {jobs[0].key}"):
            ex.map(_raise, [Batch(jobs[:2])], lambda j, r: None)
        with pytest.raises(ExecutorError) as e:
            ex.map(_always_exit, [Batch(jobs[:2])], lambda j, r: None)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "worker process died" in msg and "same --out" in msg


def test_processes_refuse_a_model_that_cannot_load_and_gpus(tmp_path):
    with pytest.raises(ExecutorError, match="could not start"):
        make_executor(ExecutorConfig(kind="processes", workers=1), ModelConfig(name=str(tmp_path / "no-model")))
    with pytest.raises(ConfigError, match="ray"):
        make_executor(ExecutorConfig(kind="processes", num_gpus=1), ModelConfig(name=str(tmp_path / "no-model")))


def test_seal_train_on_processes_equals_local(squad_tiny, tiny_model_dir, tmp_path):
    """`--executor.kind processes` through the command line: the rewards and the round's model of
    the local executor."""
    from safetensors.torch import load_file

    from seal.cli import main

    args = ["train", "--model", str(tiny_model_dir), "--data", str(squad_tiny), "--restem.rounds", "1",
            "--restem.passages_per_round", "2", "--selfedit.k", "2", "--restem.keep", "top-fraction",
            "--selfedit.max_new_tokens", "12", "--eval.max_answer_tokens", "4", "--inner.epochs", "1", "--threads", "1"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 0
    assert main(args + ["--executor.kind", "processes", "--out", str(tmp_path / "proc")]) == 0
    a, b = _rewards(tmp_path / "local"), _rewards(tmp_path / "proc")
    assert a and a == b
    wa = load_file(str(tmp_path / "local/rounds/round_1/model/model.safetensors"))
    wb = load_file(str(tmp_path / "proc/rounds/round_1/model/model.safetensors"))
    assert all(bool((wa[k] == wb[k]).all()) for k in wa)


def test_kept_self_edits_do_not_depend_on_the_order_rewards_arrive_in():
    """Tied rewards (a tiny model's are often all 0) must keep the same self-edits whichever
    order the executor finished the jobs in."""
    from seal.engine.restem import select_kept
    rewards = {("b", 1): 0.0, ("a", 1): 0.0, ("b", 0): 0.0, ("a", 0): 0.0, ("c", 0): 0.5, ("c", 1): 0.5}
    for keep, frac in (("top-fraction", 0.5), ("best-positive", 1.0), ("all-positive", 1.0)):
        first = select_kept(rewards, keep, frac)
        assert select_kept(dict(reversed(list(rewards.items()))), keep, frac) == first, keep
    assert select_kept(rewards, "top-fraction", 0.5) == [("a", 0, 0.0), ("c", 0, 0.5), ("c", 1, 0.5)]
    assert select_kept(rewards, "best-positive") == [("c", 0, 0.5)]


def test_equal_rewards_are_ordered_by_the_tiebreak_then_by_sample():
    from seal.engine.restem import select_kept
    rewards = {("a", 0): 0.5, ("a", 1): 0.5, ("a", 2): 0.25, ("b", 0): 0.0, ("b", 1): 0.0, ("c", 0): 0.25}
    tb = {("a", 0): -2.0, ("a", 1): -1.0, ("a", 2): 0.0, ("b", 1): 5.0, ("c", 0): float("nan")}
    assert select_kept(rewards, "best-positive", tiebreak=tb) == [("a", 1, 0.5), ("c", 0, 0.25)]
    assert select_kept(rewards, "best-positive", tiebreak={("a", 0): float("nan"), ("a", 1): -9.0})[0] == ("a", 1, 0.5)
    # the tiebreak never outranks a reward: a's best log-prob (sample 2) has the lower reward
    assert select_kept(rewards, "top-fraction", 0.5, tb) == [("a", 0, 0.5), ("a", 1, 0.5), ("a", 2, 0.25)]
    # top-fraction: within equal rewards the larger tiebreak first (b/1 before b/0), then sample order
    assert select_kept(rewards, "top-fraction", 5 / 6, tb) == [("a", 0, 0.5), ("a", 1, 0.5), ("a", 2, 0.25),
                                                               ("b", 1, 0.0), ("c", 0, 0.25)]
    assert select_kept(rewards, "all-positive", tiebreak=tb) == select_kept(rewards, "all-positive")


def test_oversubscribed_worker_threads_are_warned_with_a_fit():
    assert oversubscription(2, 1, cores=2) is None and oversubscription(1, 2, cores=2) is None
    msg = oversubscription(2, 2, cores=2)
    assert "2 workers x 2 threads = 4 on 2 cores" in msg and "--threads 1)" in msg
    assert "--executor.workers 2" in oversubscription(4, 1, cores=2)
