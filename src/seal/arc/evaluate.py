"""The few-shot ARC table (paper section 4.2, Table 1) on any tasks and model: its jobs, summary,
pairs and printed table, for FewShotArc (task.py, where the command `seal arc evaluate` is).

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

import statistics
from collections import Counter

from seal.arc.config import ArcConfig
from seal.arc.data import ArcTask
from seal.arc.run import Attempt, TTTJob, oracle_parsed, plan
from seal.stats import cluster_bootstrap

IN_CONTEXT, OWN, RL, ORACLE = "in-context", "self-edits", "self-edits:rl", "oracle"


def table_plan(cfg: ArcConfig, tasks: list[ArcTask], selfedits: dict[str, dict[str, list[str]]], tok, chat: bool
               ) -> tuple[list[TTTJob], dict[str, list[Attempt]]]:
    """One TTT run per distinct (task, configuration) over the conditions: the model's own
    self-edits, the RL model's, and the oracle's grid."""
    sources: dict = {OWN: selfedits["base"]}
    if "rl" in selfedits:
        sources[RL] = selfedits["rl"]
    if oracle := oracle_parsed(cfg):
        sources[ORACLE] = oracle
    attempts, jobs = plan(tasks, sources, tok, chat, cfg)
    return jobs, attempts


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


def pair_lines(attempts: dict[str, list[Attempt]], in_context: dict, results: dict) -> list[dict]:
    """pairs.jsonl: every scored (condition, task, self-edit) and where its answer came from."""
    return [{"condition": cond, "task_id": a.task_id, "index": a.index, "valid": a.parsed.valid,
             "reason": a.parsed.reason, "config": a.parsed.config.to_dict(), "ttt_run": a.job_key,
             "solved": pair_success(a, in_context, results)}
            for cond, atts in attempts.items() for a in atts]


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
