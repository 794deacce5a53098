"""`seal arc evaluate`: the few-shot ARC table (paper section 4.2, Table 1) on any tasks and model.

Conditions, each scored pass@2 on the tasks' test inputs (see run.py for one TTT run):
  in-context      the model as it is, no TTT (one pair per task)
  self-edits      TTT configured by the model's own sampled self-edits (n pairs per task)
  self-edits:rl   TTT configured by another model's self-edits (`--rl_model`, e.g. a
                  `seal arc train` round's model), applied to the same base model
  oracle          the best of a small grid of configurations (`--oracle.*`) per task

Success is the mean over (task, self-edit) pairs, as the paper reports it; its 95% interval
is a bootstrap over tasks (a task's self-edits are not independent). Invalid self-edits fall
back to no training, so the unadapted model's answer counts for them; they are counted.

Run folder (seal/runs.py): tasks.json (the selected ids, token counts, data hash),
selfedits.jsonl, in_context.jsonl, ttt.jsonl (one record per TTT run, with its time),
pairs.jsonl (every scored pair), summary.json. A killed run resumed with the same --out skips
every finished sample, prediction and TTT group.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

from ...config import ConfigError, ModelConfig
from ...engine import job_seed, run_inner_jobs, sample_selfedits
from ...generation import HFGenerator
from ...models import load_model, uses_chat
from ...runs import append_jsonl, atomic_write_json, progress
from ...stats import cluster_bootstrap
from .config import ArcConfig
from .run import Attempt, TTTInnerLoop, open_task_run, oracle_parsed, plan, read_records, run_in_context
from .task import FewShotArc

IN_CONTEXT, OWN, RL, ORACLE = "in-context", "self-edits", "self-edits:rl", "oracle"


def evaluate(cfg: ArcConfig, argv: list[str], command: str = "arc-evaluate") -> Path:
    if not cfg.tasks:
        raise ConfigError("seal arc evaluate needs --tasks PATH "
                          "(a folder of ARC JSON files, a file, arc1:train, seal:train, ...)")
    t_start = time.time()
    run, model, tok, chat, tasks, info = open_task_run(cfg, argv, command)

    # 1. self-edits from the model itself and, when given, from the RL-trained model
    saved = read_records(run.path / "selfedits.jsonl")
    selfedits: dict[str, dict[str, list[str]]] = {}
    for source in ["base"] + (["rl"] if cfg.rl_model else []):
        done = {r["task_id"]: r["completions"] for r in saved if r["source"] == source}
        gen_model, gen_tok, gen_chat = model, tok, chat
        if source == "rl" and len(done) < len(tasks):
            gen_model, gen_tok = load_model(ModelConfig(**{**cfg.model.__dict__, "name": cfg.rl_model}))
            gen_chat = uses_chat(gen_tok, cfg.model)

        def save(task, completions, source=source):
            rec = {"source": source, "task_id": task.id, "completions": completions}
            append_jsonl(run.file("selfedits.jsonl"), rec)

        bar = progress(len(tasks), f"self-edits ({source})", "task")
        selfedits[source] = sample_selfedits(FewShotArc(cfg, tasks), HFGenerator(gen_model, gen_tok), gen_tok, gen_chat,
                                             tasks, cfg.selfedits, job_seed(cfg.seed, "selfedit", source), done, save,
                                             progress=bar.update)
        bar.close()
        del gen_model

    # 2. the unadapted model's answers
    in_context = {r["task_id"]: r for r in read_records(run.path / "in_context.jsonl")}
    bar = progress(len(tasks), "in-context answers", "task")
    bar.update(sum(t.id in in_context for t in tasks))

    def save_ic(task, rec):
        in_context[task.id] = rec
        append_jsonl(run.file("in_context.jsonl"), rec)

    run_in_context(model, tok, chat, tasks, cfg, save_ic, done=set(in_context), progress=bar.update)
    bar.close()

    # 3. one TTT run per distinct (task, configuration)
    sources: dict = {OWN: selfedits["base"]}
    if cfg.rl_model:
        sources[RL] = selfedits["rl"]
    if oracle := oracle_parsed(cfg):
        sources[ORACLE] = oracle
    attempts, jobs = plan(tasks, sources, tok, chat, cfg)
    results = {r["key"]: r for r in read_records(run.path / "ttt.jsonl")}
    bar = progress(len(jobs), "test-time training", "run")
    bar.update(sum(j.key in results for j in jobs))

    def save_ttt(job, rec):
        results[job.key] = rec
        append_jsonl(run.file("ttt.jsonl"), rec)
        run.log("ttt", task_id=rec["task_id"], solved=rec["solved"], seconds=rec["seconds"])

    run_inner_jobs(TTTInnerLoop(cfg), model, tok, HFGenerator(model, tok), chat, jobs, save_ttt, done=set(results),
                   progress=bar.update)
    bar.close()

    summary = summarize(cfg, [t.id for t in tasks], info, in_context, attempts, results)
    summary["wall_seconds_this_session"] = time.time() - t_start
    atomic_write_json(run.path / "summary.json", summary)
    _write_pairs(run.path / "pairs.jsonl", attempts, in_context, results)
    run.log("summary", **{f"{c}/success": d["metrics"]["success"]["mean"] for c, d in summary["conditions"].items()})
    run.close()
    print_table(summary)
    print(f"summary: {run.path / 'summary.json'}")
    return run.path


def pair_success(a: Attempt, in_context: dict, results: dict) -> int:
    return int(results[a.job_key]["solved"]) if a.job_key else int(in_context[a.task_id]["solved"])


def summarize(cfg: ArcConfig, task_ids: list[str], info: dict, in_context: dict, attempts: dict[str, list[Attempt]],
              results: dict) -> dict:
    per_task: dict[str, dict[str, list[int]]] = {IN_CONTEXT: {t: [int(in_context[t]["solved"])] for t in task_ids}}
    extra: dict[str, dict] = {IN_CONTEXT: {}}
    for cond, atts in attempts.items():
        by_task: dict[str, list[int]] = {t: [] for t in task_ids}
        for a in atts:
            by_task[a.task_id].append(pair_success(a, in_context, results))
        invalid = [a for a in atts if not a.parsed.valid]
        extra[cond] = {"n_invalid": len(invalid),
                       "n_untrained_valid": sum(a.parsed.valid and a.job_key is None for a in atts),
                       "invalid_reasons": dict(Counter(a.parsed.reason for a in invalid).most_common(5)),
                       "n_distinct_configs": len({a.job_key for a in atts if a.job_key}),
                       "n_capped": sum(bool(a.job_key and results[a.job_key]["capped"]) for a in atts)}
        if cond == ORACLE:  # one pair per task: the best configuration
            best = {}
            for t in task_ids:
                mine = [a for a in atts if a.task_id == t]
                if mine:
                    top = max(mine, key=lambda a: pair_success(a, in_context, results))
                    best[t] = top.parsed.config.to_dict() if pair_success(top, in_context, results) else None
            by_task = {t: [max(v)] for t, v in by_task.items() if v}
            extra[cond] = {"n_configs": len({a.index for a in atts}), "best_config": best}
        per_task[cond] = by_task
    out: dict = {"seed": cfg.seed, "model": cfg.model.name, "order": [], "conditions": {}}
    for cond, by_task in per_task.items():
        groups = [by_task[t] for t in task_ids if by_task.get(t)]
        out["order"].append(cond)
        out["conditions"][cond] = {
            "n_questions": sum(len(g) for g in groups), "n_passages": len(groups),
            "metrics": {"success": cluster_bootstrap(groups, cfg.bootstrap, cfg.seed)},
            "tasks_solved": sum(any(g) for g in groups), **extra[cond]}
    out["per_task"] = {t: {c: sum(v[t]) / len(v[t]) for c, v in per_task.items() if v.get(t)} for t in task_ids}
    runs = [r for r in results.values() if r["task_id"] in set(task_ids)]
    if runs:
        secs = [r["seconds"] for r in runs]
        out["seconds_per_ttt_run"] = {
            "mean": statistics.fmean(secs), "median": statistics.median(secs), "min": min(secs), "max": max(secs),
            "n": len(secs), "train_mean": statistics.fmean(r["train_seconds"] for r in runs),
            "infer_mean": statistics.fmean(r["infer_seconds"] for r in runs),
            "steps_mean": statistics.fmean(r["train"]["steps"] for r in runs),
            "tokens_mean": statistics.fmean(r["train"]["tokens"] for r in runs)}
    ic = [in_context[t]["seconds"] for t in task_ids]
    out["seconds_per_in_context_task"] = statistics.fmean(ic)
    out["tasks"] = {k: info[k] for k in ("spec", "exclude", "n_loaded", "n_excluded", "max_task_tokens", "n_fit",
                                         "n_over_budget", "n_chosen", "ids", "sha256")}
    return out


def _write_pairs(path: Path, attempts: dict[str, list[Attempt]], in_context: dict, results: dict) -> None:
    lines = [json.dumps({"condition": cond, "task_id": a.task_id, "index": a.index, "valid": a.parsed.valid,
                         "reason": a.parsed.reason, "config": a.parsed.config.to_dict(), "ttt_run": a.job_key,
                         "solved": pair_success(a, in_context, results)}) + "\n"
             for cond, atts in attempts.items() for a in atts]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines))
    tmp.replace(path)


def print_table(summary: dict) -> None:
    head = f"{'condition':<16}{'success [95% CI]':>26}{'pairs':>7}{'tasks':>7}{'solved':>8}{'invalid':>9}"
    print(head)
    print("-" * len(head))
    for cond in summary["order"]:
        c = summary["conditions"][cond]
        s = c["metrics"]["success"]
        cell = "n/a" if s["mean"] is None else f"{s['mean']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}]"
        print(f"{cond:<16}{cell:>26}{c['n_questions']:>7}{c['n_passages']:>7}{c['tasks_solved']:>8}"
              f"{c.get('n_invalid', ''):>9}")
    if t := summary.get("seconds_per_ttt_run"):
        print(f"time per TTT run: {t['mean']:.1f} s mean, {t['median']:.1f} s median over {t['n']} runs "
              f"(train {t['train_mean']:.1f} s, inference {t['infer_mean']:.1f} s)")
