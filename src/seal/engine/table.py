"""The evaluation skeleton: one table of conditions over any task with table hooks
(seal.engine.task.TableTask), as `seal evaluate` (paper Table 2) and `seal arc evaluate` (Table 1) run it.

    1. self-edits from each source, n per context: sampled by a model (the one evaluated, or
       another, e.g. a ReSTEM round's) and saved as sampled (selfedits.jsonl), or given (a file)
    2. the unadapted model's check on every context (task.baseline_file)
    3. the inner-loop jobs of every condition (task.table_plan: a condition is a source of
       self-edits, or one of the task's own, such as `passage` or `oracle`), run through
       jobs.run_inner_jobs and saved as each finishes (task.table_job_file)
    4. the table (task.summarize_table: per condition, the mean with its bootstrap interval),
       written to summary.json with the task's detail files, and printed

Every step is resumable where it stands: a killed run restarted with the same --out samples,
checks and trains only what is missing, and batches exactly as an uninterrupted run.
"""

from __future__ import annotations

import time

from seal.config import ModelConfig
from seal.engine.jobs import job_seed, run_saved_jobs, sample_selfedits
from seal.engine.task import Session, TableTask
from seal.runs import append_jsonl, atomic_write_json, progress, read_jsonl, write_jsonl
from seal.training.generation import HFGenerator
from seal.training.models import load_model, uses_chat


def evaluate_task(task: TableTask, run, session: Session, model_cfg: ModelConfig, contexts: list,
                  sources: dict, n: int, seed: int, started: float | None = None, extra: dict | None = None) -> dict:
    """Steps 1-4 for `contexts` in the open run `run` (closed at the end). `sources` maps a
    source name to None (the session's model writes the self-edits), a model name or folder
    (loaded only when something is left to sample) or {context id: completions} (given).
    `extra` is added to summary.json. Returns the summary."""
    started = time.time() if started is None else started
    selfedits = sample_sources(task, run, session, model_cfg, contexts, sources, n, seed)

    baseline = {r[task.id_field]: r for r in read_jsonl(run.path / task.baseline_file)}
    todo = [c for c in contexts if c.id not in baseline]
    bar = progress(len(contexts), "unadapted model", task.unit)
    bar.update(len(contexts) - len(todo))

    def save_baseline(cid, rec):
        baseline[cid] = {task.id_field: cid, **rec}
        append_jsonl(run.file(task.baseline_file), baseline[cid])

    if todo:
        task.table_baseline(session, todo, save_baseline, bar.update)
    bar.close()

    jobs, details = task.table_plan(contexts, selfedits, session.tok, session.chat)
    records = run_saved_jobs(task.table_inner_loop, session, jobs, run.file(task.table_job_file), task.table_record,
                             lambda r: r["key"], "inner loop")

    summary = task.summarize_table(contexts, baseline, details, records)
    summary.update(extra or {})
    summary["wall_seconds_this_session"] = time.time() - started
    atomic_write_json(run.path / "summary.json", summary)
    for name, lines in task.table_files(contexts, baseline, details, records).items():
        write_jsonl(run.path / name, lines)
    run.log("summary", **{f"{c}/{m}": v["mean"] for c, d in summary["conditions"].items()
                          for m, v in d["metrics"].items()})
    run.close()
    task.print_table(summary)
    print(f"summary: {run.path / 'summary.json'}")
    return summary


def sample_sources(task: TableTask, run, session: Session, model_cfg: ModelConfig, contexts: list, sources: dict,
                   n: int, seed: int) -> dict[str, dict[str, list[str]]]:
    """Step 1: the self-edits of every source by context id (see evaluate_task)."""
    saved = read_jsonl(run.path / "selfedits.jsonl")
    out: dict[str, dict[str, list[str]]] = {}
    for source, writer in sources.items():
        if isinstance(writer, dict):
            out[source] = writer
            continue
        done = {r[task.id_field]: r["completions"] for r in saved if r["source"] == source}
        gen, tok, chat = session.gen, session.tok, session.chat
        if writer is not None and len(done) < len(contexts):
            model, tok = load_model(ModelConfig(**{**model_cfg.__dict__, "name": writer}))
            gen, chat = HFGenerator(model, tok), uses_chat(tok, model_cfg)
        bar = progress(len(contexts), f"self-edits ({source})", task.unit)
        out[source] = sample_selfedits(
            task, gen, tok, chat, contexts, n, job_seed(seed, "selfedit", source), done,
            lambda c, comps, s=source: append_jsonl(run.file("selfedits.jsonl"),
                                                    {"source": s, task.id_field: c.id, "completions": comps}),
            progress=bar.update)
        bar.close()
    return out
