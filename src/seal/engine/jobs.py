"""The engine's E-step pieces, shared by every task and command: seeds, self-edit sampling and
inner-loop job execution (see seal/engine/task.py for the protocol they serve).

`run_inner_jobs` is the one place inner-loop jobs run. It cuts the job list into batches
(`job_batches`: per `job.group`, `inner.adapters_per_batch` at a time, in the order of each
group's first job) and hands each batch to the domain's inner loop (`InnerLoop.run_batch`),
reporting every result as it comes so that the caller saves it at once, in this process or
on Ray workers (seal/engine/executors.py: the same batches, so the same results). Batches are fixed by the
full job list and a batch runs whole unless every job in it is done, so a resumed run batches,
and therefore computes, exactly as an uninterrupted one (batch composition changes float
summation order, and in bf16 that moved greedy answers).
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path

from seal.engine.executors import Batch, LocalExecutor, Resident, inner_batch
from seal.engine.task import InnerLoop, Session, Task
from seal.runs import append_jsonl, progress, read_jsonl
from seal.training.generation import sample_resumable


def job_seed(seed: int, *parts) -> int:
    """A seed for one piece of work (an inner-loop run, a sampling round, an SFT step), fixed by
    the run's seed and the piece's name, so it does not depend on what else runs."""
    return (seed * 1_000_003 + zlib.crc32("/".join(map(str, parts)).encode())) % (2**31)


def sample_selfedits(task: Task, gen, tok, chat: bool, contexts: list, n: int, seed: int,
                     done: dict[str, list[str]], on_sampled, progress=None) -> dict[str, list[str]]:
    """n sampled self-edits per context (the task's prompt and sampling settings); contexts
    already in `done` (a resumed run) are not sampled again. on_sampled(ctx, completions) saves
    each as soon as its chunk is done."""
    s = task.sampling
    return sample_resumable(gen, contexts, lambda c: task.selfedit_input(c, tok, chat), n,
                            max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                            batch_size=s.batch_size, seed=seed, done=done, on_sampled=on_sampled, progress=progress)


def job_batches(jobs: list, size: int) -> list[list]:
    """Consecutive runs of at most `size` jobs of one group, in the order of each group's first job."""
    by_group: dict = {}
    for j in jobs:
        by_group.setdefault(j.group, []).append(j)
    return [js[i : i + size] for js in by_group.values() for i in range(0, len(js), size)]


def run_inner_jobs(inner: InnerLoop, model, tok, gen, chat: bool, jobs: list, on_result,
                   done: set[str] | frozenset = frozenset(), progress=None, executor=None) -> None:
    """Run `jobs` through the inner loop on `model` (the base: every adapter starts from it), a
    batch at a time; on_result(job, result) for each job not in `done` as its batch finishes;
    progress(n) after each batch with the number of jobs it finished.

    `executor` (seal/engine/executors.py) says where batches run: None runs them here, one after
    another, on `model`; a Ray executor sends each batch, with `inner`, to a worker holding its
    own copy of the same base model. Either way a batch is the same list of jobs, so the
    results are the same; on_result is always called in this process."""
    batches = [Batch(b, frozenset(j.key for j in b if j.key in done))
               for b in job_batches(jobs, inner.adapters_per_batch) if not all(j.key in done for j in b)]
    executor = executor or LocalExecutor(Resident(model, tok, gen, chat))
    executor.map(functools.partial(inner_batch, inner=inner), batches, on_result, progress)


def run_saved_jobs(inner: InnerLoop, s: Session, jobs: list, path: Path, record, key_of, label: str
                   ) -> dict[str, dict]:
    """run_inner_jobs, resumable through the job file `path`: its records (by `key_of(record)`)
    are the finished jobs; every other job runs (on `s.executor`) and `record(job, result)` is
    appended there as it finishes. Returns every record by job key."""
    records = {key_of(r): r for r in read_jsonl(path)}
    bar = progress(len(jobs), label, "job")
    bar.update(sum(j.key in records for j in jobs))

    def save(job, result):
        records[job.key] = record(job, result)
        append_jsonl(path, records[job.key])

    run_inner_jobs(inner, s.model, s.tok, s.gen, s.chat, jobs, save, done=set(records), progress=bar.update,
                   executor=s.executor)
    bar.close()
    return records
