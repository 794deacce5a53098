"""The seam between the engine and a domain: the `Task` protocol and what crosses it.

SEAL's loop is the same in every domain (paper section 3): for a context C the model writes a
self-edit SE ~ LM_theta(. | C); the inner loop applies SE (theta' = update(theta, SE)); a
downstream check of theta' on C's evaluation gives the reward r(SE); ReSTEM keeps the rewarded
self-edits and finetunes the generator on them. What differs between domains is what C, SE, the
update and the check are. A `Task` supplies exactly that:

    contexts          round_contexts(rnd, session)          the C of a ReSTEM round
    self-edit prompt  selfedit_input(ctx, tok, chat)        the text the generator continues
                      sampling                              its temperature, top-p, lengths, k
    inner-loop jobs   plan(rnd, ctxs, samples, tok, chat)   parse each SE, build the jobs that apply it
                      inner_loop                            how a batch of jobs trains and is checked
    reward            reward_baseline(session, ctxs)        the unadapted check (empty: r is absolute)
                      job_record(rnd, job, result, base)    one job's saved record (with its reward)
                      reward(records)                       r(SE) from the records of its jobs
    filter, M-step    keep, keep_fraction                   which rewarded SEs become SFT data
                      tiebreak(records)  (optional)         a finer score that orders equal rewards
                      sft_example(ctx, SE, tok, chat)       the (prompt -> target) pair SFT trains on
                      sft_config                            the M-step's LoRA settings
    reporting         round_stats(...), round_notes(...)    the domain's extra numbers per round

and the engine owns everything else: sampling (seal/engine/jobs.py `sample_selfedits`), running inner-loop
jobs (`run_inner_jobs`, the one place jobs execute), resume files, the ReSTEM round skeleton
(seal/engine/restem.py) and evaluation tables. The engine calls a task, never the reverse.

Knowledge incorporation (seal/knowledge/task.py) and few-shot ARC (seal/arc/task.py, `FewShotArc`)
implement it; tests/example_task.py is a third, toy domain in one module with no engine change.

Tasks and inner loops are plain data (config dataclasses, contexts): no model handle is ever
stored on them, so they pickle and can be shipped to worker processes with job batches. The
model, tokenizer and generator travel separately, in a `Session`, or as arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from seal.training.inner_loop import TrainExample


@dataclass
class Session:
    """What the engine holds while a command runs (never stored on a task): the run folder, the
    base model the inner loop adapts, its tokenizer, whether prompts use its chat template, a
    generator over the base model, and where inner-loop jobs run."""

    run_dir: Path
    model: Any
    tok: Any
    chat: bool
    gen: Any
    executor: Any = None
    """Where inner-loop jobs run (seal/engine/executors.py: Ray workers holding their own copies of the
    base model); None runs them in this process on `model`."""


@dataclass(frozen=True)
class Sampling:
    """How self-edits are sampled (the E-step's policy draws)."""

    k: int
    """Self-edits per context in a ReSTEM round."""
    max_new_tokens: int
    temperature: float
    top_p: float
    batch_size: int
    """Rows per generate call (contexts x k)."""


@dataclass
class Plan:
    """The inner-loop work of one round's self-edits, from `Task.plan`.

    `scored_by[(context id, sample)]` lists the keys of the jobs whose records make that
    self-edit's reward (several: one per inner-loop seed; one job may serve several self-edits,
    e.g. identical ARC configurations; an empty list: a reward with no job, such as an invalid ARC
    self-edit's 0). A self-edit in `unusable` has no reward at all and is never kept."""

    jobs: list
    """Unique jobs in a fixed order: batching follows it, so a resumed run computes the same."""
    scored_by: dict[tuple[str, int], list[str]]
    unusable: list[tuple[str, int]] = field(default_factory=list)
    unusable_note: str = ""
    """Why `unusable` self-edits are (printed after their count)."""
    info: dict[tuple[str, int], dict] = field(default_factory=dict)
    """Per self-edit fields for `Task.selfedit_file` (ARC: whether it parsed)."""


@runtime_checkable
class Job(Protocol):
    """One inner-loop run. `key` names it in the run folder; jobs train together (one batched
    forward, several adapters) only with jobs of the same `group`."""

    key: str
    group: Any


@runtime_checkable
class InnerLoop(Protocol):
    """How a domain's inner-loop jobs run on a base model: train one adapter per job, check each
    adapted model, return results. Plain data (settings only), so an executor can send it to
    workers that each hold the model."""

    adapters_per_batch: int
    """Jobs of one group that train side by side in one batch."""

    def run_batch(self, model, tok, gen, chat: bool, batch: list, done: set[str] | frozenset) -> list[tuple[Any, dict]]:
        """Train and check `batch` (all of it: batch composition changes float summation order, so
        a batch always runs whole) and return (job, result) for the jobs not in `done`."""
        ...


@runtime_checkable
class Task(Protocol):
    """A domain that SEAL's engine can train (ReSTEM) on. See the module docstring."""

    name: str
    unit: str
    """What a context is called in messages and counts (`passage`, `task`): done.json's `n_<unit>s`."""
    id_field: str
    """The field that names a context in run-folder records (`passage_id`, `task_id`)."""
    job_file: str
    """Per round, the file that gets one record per finished inner-loop job (appended as each
    finishes; read back on resume)."""
    selfedit_file: str | None
    """Per round, a file of one record per self-edit and its reward, written whole (None: none)."""
    keep: str
    """The filter: `best-positive` (per context, the best self-edit with r > 0; the paper),
    `all-positive` (every self-edit with r > 0) or `top-fraction` (the best `keep_fraction`)."""
    keep_fraction: float
    sampling: Sampling
    inner_loop: InnerLoop
    sft_config: Any
    """The M-step's InnerLoopConfig (LoRA, lr, epochs, loss on the completion)."""

    def round_contexts(self, rnd: int, session: Session) -> list:
        """The contexts of round `rnd` (each with a string `id`)."""
        ...

    def selfedit_input(self, ctx, tok, chat: bool) -> str | None:
        """The full text the generator continues to write a self-edit for `ctx` (sampling and SFT
        share it); None when there is nothing to sample."""
        ...

    def reward_baseline(self, session: Session, contexts: list) -> dict[str, dict]:
        """The unadapted model's check on each context, by id, a record the reward compares
        against (saved in base.jsonl). Empty when the reward needs none."""
        ...

    def plan(self, rnd: int, contexts: list, samples: dict[str, list[str]], tok, chat: bool) -> Plan:
        """Parse every sampled self-edit and build the inner-loop jobs that score it (`tok` and
        `chat`: for jobs whose training text is a prompt of the model's)."""
        ...

    def job_record(self, rnd: int, job, result: dict, baseline: dict[str, dict]) -> dict:
        """What `job_file` keeps of one finished job (its reward, where the task computes it there)."""
        ...

    def record_key(self, record: dict) -> str:
        """The key of the job a `job_file` record belongs to."""
        ...

    def reward(self, records: list[dict]) -> float | None:
        """r(SE) from the records of the jobs in `Plan.scored_by` (None: no reward, never kept)."""
        ...

    # optional: def tiebreak(self, records: list[dict]) -> float | None
    #     A finer score of a self-edit from the same records (larger is better) that orders
    #     self-edits with equal rewards in the filter (restem.select_kept); a task without it,
    #     or returning None, has ties go to the lowest sample.
    # optional: confirm, None or a function of the same records -> float | None
    #     A second score that must also be above 0 for the filter to keep a self-edit
    #     (restem.confirmed_rewards); None, or a task without it, keeps by the reward alone.
    # optional: generator_check: int, and def held_apart(self, n: int) -> list
    #     How many held-apart contexts (none of any round's) check after each M-step that the new
    #     generator's self-edits earn no less reward than those of the one it started from
    #     (restem.generator_check); a task without them is not checked.

    def sft_example(self, ctx, completion: str, tok, chat: bool) -> TrainExample | None:
        """The M-step's training pair for a kept self-edit (None: left out, e.g. too long)."""
        ...

    def round_stats(self, rnd: int, contexts: list, samples: dict[str, list[str]], plan: Plan,
                    records: dict[str, dict], rewards: dict[tuple[str, int], float],
                    kept: list[tuple[str, int, float]], info: dict, tok) -> dict:
        """The domain's own numbers for done.json (added after the engine's)."""
        ...

    def round_notes(self, rnd: int, info: dict) -> list[str]:
        """Extra lines to print at the end of a round."""
        ...


@runtime_checkable
class TableTask(Task, Protocol):
    """A Task with an evaluation table (seal/engine/table.py): conditions (sources of self-edits
    and the task's own, e.g. `passage`, `oracle`) -> inner-loop jobs -> a table of means with
    bootstrap intervals, beside the unadapted model's row."""

    baseline_file: str
    """The unadapted model's check, one record per context (`base.jsonl`, `in_context.jsonl`)."""
    table_job_file: str
    """One record per finished inner-loop job of the table (`results.jsonl`, `ttt.jsonl`); each
    record has the job's `key`."""
    table_inner_loop: InnerLoop
    """The inner loop the table's jobs run with (it may grade more than a reward needs)."""

    def table_baseline(self, session: Session, contexts: list, on_result, progress) -> None:
        """Check the unadapted model on `contexts`: on_result(context id, record) for each,
        progress(n) as they finish."""
        ...

    def table_plan(self, contexts: list, selfedits: dict[str, dict[str, list[str]]], tok, chat: bool
                   ) -> tuple[list, Any]:
        """The table's jobs, from the self-edits of each source by context id, and whatever the
        summary needs to know about them (handed back to summarize_table and table_files)."""
        ...

    def table_record(self, job, result: dict) -> dict:
        """What `table_job_file` keeps of one finished job."""
        ...

    def summarize_table(self, contexts: list, baseline: dict[str, dict], details, records: dict[str, dict]) -> dict:
        """summary.json: `order` (the rows) and `conditions` (per row, `metrics`: name -> {mean,
        lo, hi, ...}), and anything else the domain reports."""
        ...

    def table_files(self, contexts: list, baseline: dict[str, dict], details, records: dict[str, dict]
                    ) -> dict[str, list[dict]]:
        """Per-context or per-pair detail files, by name (written whole)."""
        ...

    def print_table(self, summary: dict) -> None:
        ...

