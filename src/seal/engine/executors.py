"""Where inner-loop jobs run: in this process (`local`), or fanned out to Ray actors (`ray`).

A ReSTEM round (paper section 3.1) scores every sampled self-edit by its own LoRA update of the
base model, graded on the passage's questions: hundreds of updates that depend on nothing but
their own data, seed and the frozen base model. They are embarrassingly parallel, except that
the k self-edits of a passage share an inner-loop seed (common random numbers) and train side
by side over one copy of the base model (`inner.parallel_adapters`, seal/training/lora.py). That group
is the unit of work here, a *batch*, and no executor ever splits or regroups one: the numbers
a job gets depend only on its batch, so every executor computes the same results for the same
seeds, and a resumed run batches exactly as an uninterrupted one.

    executor.map(work, batches, on_result, progress)

runs `work(resident, batch)` for every batch wherever a base model is resident
(`Resident`: model, tokenizer, generator, chat flag) and calls `on_result(job, result)` *in
this process* as each batch returns, so the run folder appends every finished result at once
(seal/runs.py) and a killed run loses at most the batches in flight. `work` is a module-level
function (or a functools.partial of one) so that it can be sent to another process.
`seal.engine.jobs.run_inner_jobs`, the one place inner-loop jobs run, cuts the batches
(`engine.job_batches`) and hands this module `inner_batch` with the domain's inner loop
(`Task.inner_loop`: knowledge incorporation's QA grading, ARC's test-time training, any task's),
so every task runs on every executor with no code of its own.

- `LocalExecutor`: one batch after another in this process, on the model already loaded;
  what a laptop user gets (the default).
- `ProcessExecutor`: `executor.workers` processes on this machine (standard library, no extra
  dependency), each loading the base model once with `executor.num_cpus` torch threads: on a
  CPU, N single-thread workers beat one N-thread process (`--executor.kind processes
  --executor.workers 2` on 2 cores; results/bench_executors.md).
- `RayExecutor`: `executor.workers` Ray actors, each loading the base model once
  (`executor.num_cpus` / `executor.num_gpus` each), fed one batch at a time as they free up.
  A batch whose actor dies (killed, out of memory, node lost) runs again on a fresh actor, up
  to `executor.max_retries` times; a finished batch is never run again.

Departure from the reference implementation: SEAL's code serves the inner loop from one ZMQ
training server on one GPU beside a vLLM server on another, wired by hand per SLURM job. Here
the inner loop is a plain function over batches; scaling out is a setting (`--executor.kind
ray --executor.workers N`), on one machine or an existing Ray cluster (`--executor.address`).
"""

from __future__ import annotations

import os
import sys
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

from seal.config import ConfigError, ExecutorConfig, ModelConfig

STARTUP_TIMEOUT = 900
"""Seconds the Ray workers may take to start (resources to free up, the model to load)."""


class ExecutorError(RuntimeError):
    """An executor that cannot start or finish; the message names the setting to change."""


@dataclass
class Resident:
    """What a worker keeps between batches: the base model and what reads it."""

    model: Any
    tok: Any
    gen: Any
    chat: bool

    @classmethod
    def load(cls, model_cfg: ModelConfig, device: str = "cpu") -> Resident:
        from seal.training.generation import HFGenerator
        from seal.training.models import load_model, uses_chat

        model, tok = load_model(model_cfg)
        if device != "cpu":
            model.to(device)
        return cls(model, tok, HFGenerator(model, tok), uses_chat(tok, model_cfg))


@dataclass
class Batch:
    """Jobs that train side by side, and which of them finished in an earlier session (they are
    trained again, so that the others get the numbers an uninterrupted run gives, but not
    reported again)."""

    jobs: list
    done: frozenset = frozenset()


Work = Callable[[Resident, Batch], list[tuple[int, dict]]]
"""work(resident, batch) -> [(index of a job in batch.jobs, its result), ...]"""


class Executor:
    """Runs batches of inner-loop jobs (see the module docstring); subclasses implement `map`."""

    def map(self, work: Work, batches: list[Batch], on_result, progress=None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (a no-op in process)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def inner_batch(res: Resident, batch: Batch, *, inner) -> list[tuple[int, dict]]:
    """The unit of work: one batch through a domain's inner loop (`InnerLoop.run_batch`, plain
    data, so it travels to a worker with the batch) on the resident base model."""
    index = {j.key: i for i, j in enumerate(batch.jobs)}
    return [(index[job.key], result)
            for job, result in inner.run_batch(res.model, res.tok, res.gen, res.chat, batch.jobs, batch.done)]


# ----------------------------------------------------------------------------- local


class LocalExecutor(Executor):
    """In this process, batch after batch, on the model the caller already loaded."""

    def __init__(self, resident: Resident):
        self.resident = resident

    def map(self, work, batches, on_result, progress=None):
        for batch in batches:
            results = work(self.resident, batch)
            for i, res in results:
                on_result(batch.jobs[i], res)
            if progress is not None:
                progress(len(results))


# ----------------------------------------------------------------------------- processes


def die_with_parent(parent: int) -> None:
    """Have the kernel stop this process when `parent` (the process that started it) ends, so a
    killed run or benchmark leaves no worker burning the CPU and holding a model (Linux
    prctl(PR_SET_PDEATHSIG, SIGTERM); elsewhere nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the signal was armed
        os._exit(1)


_RESIDENT: Resident | None = None
"""A worker process's base model (set once by `_start_process`)."""


def _start_process(model_cfg: ModelConfig, threads: int, parent: int) -> None:
    import torch

    global _RESIDENT
    die_with_parent(parent)
    torch.set_num_threads(threads)
    _RESIDENT = Resident.load(model_cfg)


def _ready() -> int:
    return os.getpid()


def _run_in_process(work: Work, batch: Batch):
    return work(_RESIDENT, batch)


def oversubscription(workers: int, threads: int, cores: int | None = None) -> str | None:
    """A warning when `workers` processes of `threads` torch threads each want more threads than
    this process may run on (None when they fit). On a 2-core CPU, two 2-thread workers made
    AdamW's foreach kernels crawl about 10x: give each worker one thread there."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers * threads <= cores:
        return None
    fit = max(1, cores // workers)
    return (f"seal: warning: executor processes: {workers} workers x {threads} threads = {workers * threads} on "
            f"{cores} cores; oversubscribed cores run several times slower (use --threads {fit}"
            + ("" if fit * workers <= cores else f" or --executor.workers {cores}") + ")")


class ProcessExecutor(Executor):
    """`cfg.workers` processes on this machine (the standard library's, no Ray), each loading the
    base model once with `threads` torch threads, fed the next batch as each frees up; results
    come back here in completion order. Made for CPUs: two single-thread processes use a 2-core
    CPU better than one two-thread process, because a matmul's speed grows only ~1.65x from 1 to
    2 threads and the optimizer, grading and Python overhead not at all (results/bench_executors.md).
    A worker that dies (killed, out of memory) stops the run with an ExecutorError; every result
    returned before is already saved, so rerunning with the same --out resumes. An exception
    raised by a job itself is raised here."""

    def __init__(self, cfg: ExecutorConfig, model_cfg: ModelConfig, threads: int = 0):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if cfg.num_gpus:
            raise ConfigError("executor.kind processes runs on CPUs: use executor.kind ray for executor.num_gpus")
        self.threads = threads or max(1, int(round(cfg.num_cpus)))
        if warning := oversubscription(cfg.workers, self.threads):
            print(warning, file=sys.stderr)
        self.pool = ProcessPoolExecutor(cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start_process, initargs=(model_cfg, self.threads, os.getpid()))
        self.pids: set[int] = set()
        """The worker processes seen so far (for tests)."""
        try:  # a model that cannot load is refused now, before any work
            self.pids.add(self.pool.submit(_ready).result(timeout=STARTUP_TIMEOUT))
        except Exception as e:
            self.close()
            raise ExecutorError(f"executor processes: a worker could not start ({type(e).__name__}: {e}); check "
                                "model.name") from None

    def map(self, work, batches, on_result, progress=None):
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        futures = {self.pool.submit(_run_in_process, work, b): b for b in batches}
        try:
            for f in as_completed(futures):
                batch = futures[f]
                results = f.result()
                for i, res in results:
                    on_result(batch.jobs[i], res)
                if progress is not None:
                    progress(len(results))
        except BrokenProcessPool:
            raise ExecutorError("executor processes: a worker process died (killed, or out of memory); finished "
                                "results are saved: rerun with the same --out (fewer executor.workers need less "
                                "memory)") from None
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- ray


def import_ray():
    """The `ray` module, or a one-line error saying how to get it."""
    try:
        import ray
    except ImportError:
        raise ExecutorError("executor.kind ray needs Ray: pip install 'seal[ray]' (or use --executor.kind local)") from None
    return ray


class _Worker:
    """A Ray actor: loads the base model once, then runs batch after batch on it."""

    def __init__(self, model_cfg: ModelConfig, threads: int, env: dict[str, str]):
        import torch

        os.environ.update(env)
        torch.set_num_threads(threads)
        device = "cuda" if _assigned_gpus() and torch.cuda.is_available() else "cpu"
        self.resident = Resident.load(model_cfg, device)

    def ready(self) -> int:
        return os.getpid()

    def run(self, work: Work, batch: Batch):
        return work(self.resident, batch)


def reason(e: Exception) -> str:
    """One short line for a Ray error's many: the innermost line that names an error, else its type."""
    lines = [ln.strip() for ln in str(e).splitlines() if "Error" in ln and ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:200]


def _assigned_gpus() -> list:
    import ray

    try:
        return list(ray.get_gpu_ids())
    except Exception:  # not inside a Ray worker
        return []


class RayExecutor(Executor):
    """`cfg.workers` Ray actors with the base model resident, fed one batch at a time each.

    Dispatch: every idle actor gets the next batch; as soon as any batch returns, its results
    go to `on_result` here (in completion order; callers key results by job) and the actor gets
    the next one. When an actor dies mid-batch, that batch goes back to the front of the queue
    and a fresh actor replaces the dead one; a batch that loses its actor more than
    `cfg.max_retries` times stops the run with an ExecutorError (every result returned before
    is already saved). An exception raised by the job itself is not retried: it is raised here.
    """

    def __init__(self, cfg: ExecutorConfig, model_cfg: ModelConfig, threads: int = 0):
        ray = import_ray()
        self.lost_worker = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                            ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError)
        """The Ray errors that mean "the worker is gone" (retried), not "the job failed" (raised)."""
        self.ray, self.cfg, self.model_cfg = ray, cfg, model_cfg
        self.threads = threads or max(1, int(round(cfg.num_cpus)))
        self.started_ray = connect(cfg)
        self.actor_class = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, max_restarts=0,
                                      max_task_retries=0)(_Worker)
        self._check_resources()
        self.actors = [self._new_actor() for _ in range(cfg.workers)]
        self.replaced = 0
        """Actors started to replace dead ones (for tests and the benchmark)."""
        self._wait_ready(self.actors)

    def _new_actor(self):
        env = {k: v for k, v in os.environ.items() if k.startswith(("SEAL_", "HF_", "TRANSFORMERS_"))}
        return self.actor_class.remote(self.model_cfg, self.threads, env)

    def _check_resources(self) -> None:
        cfg, free = self.cfg, self.ray.available_resources()
        need = {"CPU": cfg.workers * cfg.num_cpus, "GPU": cfg.workers * cfg.num_gpus}
        short = [f"{need[k]:g} {k}s (free: {free.get(k, 0):g})" for k in need if need[k] > free.get(k, 0) + 1e-9]
        if short:  # a cluster may still grow (autoscaler), so wait, but say why
            print(f"seal: executor ray: waiting for {', '.join(short)} for executor.workers x num_cpus/num_gpus",
                  file=sys.stderr)

    def _wait_ready(self, actors) -> None:
        try:
            self.ray.get([a.ready.remote() for a in actors], timeout=STARTUP_TIMEOUT)
        except self.ray.exceptions.GetTimeoutError:
            raise ExecutorError(f"executor ray: the workers did not start within {STARTUP_TIMEOUT} s: the cluster "
                                "lacks executor.workers x executor.num_cpus CPUs (or num_gpus GPUs)") from None
        except self.lost_worker as e:
            raise ExecutorError(f"executor ray: a worker could not start ({reason(e)}); check model.name and that "
                                "seal is installed on every node") from None

    def map(self, work, batches, on_result, progress=None):
        ray = self.ray
        queue = deque(range(len(batches)))
        lost = [0] * len(batches)
        idle = deque(range(len(self.actors)))
        running: dict = {}  # object ref -> (actor slot, batch index)
        while queue or running:
            while queue and idle:
                slot, b = idle.popleft(), queue.popleft()
                running[self.actors[slot].run.remote(work, batches[b])] = (slot, b)
            [ref], _ = ray.wait(list(running), num_returns=1)
            slot, b = running.pop(ref)
            try:
                results = ray.get(ref)
            except self.lost_worker as e:
                lost[b] += 1
                if lost[b] > self.cfg.max_retries:
                    keys = ", ".join(str(getattr(j, "key", i)) for i, j in enumerate(batches[b].jobs[:3]))
                    raise ExecutorError(f"executor ray: the batch of jobs {keys} lost its worker {lost[b]} times "
                                        f"(last: {reason(e)}); finished results are saved: raise "
                                        f"executor.max_retries ({self.cfg.max_retries}) or give each worker more "
                                        "memory, and rerun with the same --out") from None
                self._replace(slot)
                queue.appendleft(b)
                idle.append(slot)
                continue
            idle.append(slot)
            for i, res in results:
                on_result(batches[b].jobs[i], res)
            if progress is not None:
                progress(len(results))

    def _replace(self, slot: int) -> None:
        try:
            self.ray.kill(self.actors[slot], no_restart=True)
        except Exception:  # already gone
            pass
        self.actors[slot] = self._new_actor()
        self.replaced += 1

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:
                pass
        self.actors = []
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False


def connect(cfg: ExecutorConfig) -> bool:
    """Join `cfg.address`'s cluster, or start a local Ray instance with workers x num_cpus CPUs;
    nothing when Ray is already initialized in this process. True when this call started it."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kw: dict = {"include_dashboard": False, "log_to_driver": True, "configure_logging": False}
    if cfg.address and (why := unreachable(cfg.address)):  # ray.init would retry for minutes
        raise ExecutorError(f"executor.address {cfg.address!r}: no Ray cluster there ({why})")
    try:
        if cfg.address:
            ray.init(address=cfg.address, **kw)
        else:
            import math

            # Ray lowers its workers' priority by 15 by default; here they do all the work while
            # this process waits, and on a busy machine a niced worker barely runs
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(num_cpus=max(1, math.ceil(cfg.workers * cfg.num_cpus)),
                     num_gpus=math.ceil(cfg.workers * cfg.num_gpus) if cfg.num_gpus else None, **kw)
    except Exception as e:  # connection refused, no cluster at `auto`, version mismatch...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        where = f"executor.address {cfg.address!r}" if cfg.address else "executor ray (local start)"
        raise ExecutorError(f"{where}: cannot start or join a Ray cluster ({first})") from None
    return True


def unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a `host:port` or `ray://host:port` address (None: it connects, or
    the address is `auto`/`local`, which Ray resolves itself)."""
    import socket

    if address in ("auto", "local"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as e:
        return f"cannot connect: {getattr(e, 'strerror', None) or e}"
    return None


# ----------------------------------------------------------------------------- choosing one


@contextmanager
def open_executor(cfg: ExecutorConfig, model_cfg: ModelConfig, threads: int = 0):
    """A command's executor for `jobs.run_inner_jobs`: None for `local` (batches then run in
    this process on the session's model), worker processes for `processes` and Ray actors for
    `ray` (started now, so that a model that cannot load, a missing Ray or an unreachable cluster
    is refused before any work; released at the end)."""
    if cfg.kind == "local":
        yield None
        return
    with make_executor(cfg, model_cfg, threads=threads) as executor:
        yield executor


def make_executor(cfg: ExecutorConfig, model_cfg: ModelConfig, resident: Resident | None = None,
                  threads: int = 0) -> Executor:
    """The executor `cfg.kind` names. `local` runs on `resident` (the caller's loaded model);
    `processes` and `ray` start workers that load `model_cfg` themselves."""
    if cfg.kind == "local":
        if resident is None:
            raise ValueError("executor local needs the loaded model (resident)")
        return LocalExecutor(resident)
    if cfg.kind == "processes":
        return ProcessExecutor(cfg, model_cfg, threads)
    if cfg.kind == "ray":
        return RayExecutor(cfg, model_cfg, threads)
    raise ConfigError(f"executor.kind must be one of local, processes, ray, got {cfg.kind!r}")


__all__ = ["Batch", "Executor", "ExecutorError", "LocalExecutor", "ProcessExecutor", "RayExecutor", "Resident",
           "connect", "die_with_parent", "import_ray", "inner_batch", "make_executor", "open_executor"]
