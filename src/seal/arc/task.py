"""Few-shot ARC as a seal Task (paper sections 3.1 and 4.2), `seal arc evaluate` and `seal arc train`.

    context   an ARC task (demonstrations + test inputs); every round uses all selected tasks
    self-edit `selfedits` samples of a tool configuration (JSON: augmentations, lr, epochs, loss)
    jobs      one TTT run per distinct (task, valid configuration) that trains on something
              (run.py: build the leave-one-out data, LoRA-SFT, answer the test inputs)
    reward    r(SE) = 1 if TTT configured by SE makes the base model solve the task (pass@2 on
              all its test inputs), else 0; no baseline (the reward is absolute)
    filter    keep every solving self-edit (`all-positive`; rewards are 0/1)
    M-step    SFT on (self-edit prompt -> the kept configuration), loss on the configuration

Choices and departures (beyond those stated in seal/engine/restem.py):
- an invalid self-edit earns reward 0 and is never kept (its fallback, no training, would
  otherwise reward copying nothing useful); a valid one that trains on nothing (a task too
  small for leave-one-out) also earns 0;
- the SFT target is the kept configuration's canonical JSON (indented like the prompt's
  example), not the raw sample; targets whose prompt + JSON exceed `restem.sft_max_seq_len`
  tokens are left out and counted (`n_too_long`);
- identical configurations of one task share one TTT run (same seed, same data, same result).

Run folder (seal/engine/restem.py for the round skeleton): tasks.json, rounds/round_<t>/{samples.jsonl,
ttt.jsonl (one record per TTT run), rewards.jsonl (one per self-edit, written whole), sft.jsonl,
model/, done.json}, final.json.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from seal.arc.config import ArcConfig
from seal.arc.data import ArcTask
from seal.arc.run import TTTInnerLoop, open_task_run, plan, run_in_context, selfedit_text
from seal.config import ConfigError, InnerLoopConfig
from seal.engine.executors import open_executor
from seal.engine.table import evaluate_task
from seal.engine.task import Plan, Sampling, Session
from seal.training.generation import HFGenerator
from seal.training.inner_loop import TrainExample


def canonical_selfedit(config) -> str:
    return json.dumps(config.to_dict(), indent=1)


def sft_config(cfg: ArcConfig) -> InnerLoopConfig:
    r = cfg.restem
    return InnerLoopConfig(lora=r.sft_lora, lr=r.sft_lr, epochs=r.sft_epochs, steps="packed",
                           batch_size=r.sft_batch_size,
                           max_seq_len=r.sft_max_seq_len, loss_on="completion", dtype=cfg.dtype,
                           max_grad_norm=cfg.max_grad_norm, parallel_adapters=1)


@dataclass
class FewShotArc:
    """Few-shot ARC (see the module docstring) over the selected `tasks`."""

    cfg: ArcConfig
    tasks: list[ArcTask]
    selection: dict | None = None
    """How the tasks were selected (run.select_tasks' record), reported in the table's summary."""

    name = "arc"
    unit = "task"
    id_field = "task_id"
    job_file = "ttt.jsonl"
    selfedit_file = "rewards.jsonl"
    keep = "all-positive"
    keep_fraction = 1.0

    @property
    def sampling(self) -> Sampling:
        c = self.cfg
        return Sampling(c.selfedits, c.max_new_tokens, c.temperature, c.top_p, c.sample_batch_size)

    @property
    def inner_loop(self) -> TTTInnerLoop:
        return TTTInnerLoop(self.cfg)

    @property
    def sft_config(self) -> InnerLoopConfig:
        return sft_config(self.cfg)

    def round_contexts(self, rnd: int, session: Session) -> list[ArcTask]:
        return self.tasks

    def selfedit_input(self, ctx: ArcTask, tok, chat: bool) -> str:
        return selfedit_text(ctx, tok, chat, self.cfg)

    def reward_baseline(self, session: Session, contexts: list[ArcTask]) -> dict[str, dict]:
        return {}

    def plan(self, rnd: int, contexts: list[ArcTask], samples: dict[str, list[str]], tok, chat: bool) -> Plan:
        """One TTT job per distinct (task, configuration) that trains on something (run.plan)."""
        attempts, jobs = plan(contexts, {"policy": samples}, tok, chat, self.cfg)
        return Plan(jobs, {(a.task_id, a.index): [a.job_key] if a.job_key else [] for a in attempts["policy"]},
                    info={(a.task_id, a.index): {"valid": a.parsed.valid} for a in attempts["policy"]})

    def job_record(self, rnd: int, job, result: dict, baseline: dict[str, dict]) -> dict:
        return result

    def record_key(self, record: dict) -> str:
        return record["key"]

    def reward(self, records: list[dict]) -> float:
        return int(records[0]["solved"]) if records else 0

    def sft_example(self, ctx: ArcTask, completion: str, tok, chat: bool) -> TrainExample | None:
        """The canonical configuration after the prompt; None when longer than restem.sft_max_seq_len."""
        from seal.arc.selfedit import parse_selfedit

        ex = TrainExample(completion=canonical_selfedit(parse_selfedit(completion).config),
                          prompt=self.selfedit_input(ctx, tok, chat))
        n_tokens = len(tok(ex.prompt + ex.completion, add_special_tokens=False)["input_ids"]) + 1
        return ex if n_tokens <= self.cfg.restem.sft_max_seq_len else None

    def round_stats(self, rnd, contexts, samples, plan, records, rewards, kept, info, tok) -> dict:
        secs = [r["seconds"] for r in records.values()]
        return {"n_invalid": sum(not i["valid"] for i in plan.info.values()), "n_ttt_runs": len(plan.jobs),
                "tasks_solved": len({cid for (cid, _), r in rewards.items() if r}),
                "n_too_long": len(kept) - info["n_sft_examples"],
                "seconds_per_ttt_run": statistics.fmean(secs) if secs else None}

    def round_notes(self, rnd: int, info: dict) -> list[str]:
        return [f"round {rnd}: {info['n_invalid']} invalid self-edits, {info['tasks_solved']} of "
                f"{info['n_tasks']} tasks solved"]

    # ------------------------------------------------------------------ the table (`seal arc evaluate`)

    baseline_file = "in_context.jsonl"
    table_job_file = "ttt.jsonl"

    @property
    def table_inner_loop(self) -> TTTInnerLoop:
        return TTTInnerLoop(self.cfg)

    def table_baseline(self, session: Session, contexts: list[ArcTask], on_result, progress) -> None:
        """The unadapted model's answers (in-context only); also what invalid self-edits get."""
        run_in_context(session.model, session.tok, session.chat, contexts, self.cfg,
                       lambda task, rec: on_result(task.id, rec), progress=progress)

    def table_plan(self, contexts, selfedits, tok, chat):
        from seal.arc.evaluate import table_plan

        return table_plan(self.cfg, contexts, selfedits, tok, chat)

    def table_record(self, job, result: dict) -> dict:
        return result

    def summarize_table(self, contexts, baseline, details, records) -> dict:
        from seal.arc.evaluate import summarize

        return summarize(self.cfg, [t.id for t in contexts], self.selection, baseline, details, records)

    def table_files(self, contexts, baseline, details, records) -> dict[str, list[dict]]:
        from seal.arc.evaluate import pair_lines

        return {"pairs.jsonl": pair_lines(details, baseline, records)}

    def print_table(self, summary: dict) -> None:
        from seal.arc.evaluate import print_table

        print_table(summary)


def evaluate(cfg: ArcConfig, argv: list[str], command: str = "arc-evaluate") -> Path:
    """`seal arc evaluate`: the table over the selected tasks, run by the evaluation skeleton
    (seal/engine/table.py) over FewShotArc. Returns the run folder."""
    if not cfg.tasks:
        raise ConfigError("seal arc evaluate needs --tasks PATH "
                          "(a folder of ARC JSON files, a file, arc1:train, seal:train, ...)")
    t_start = time.time()
    run, model, tok, chat, tasks, info = open_task_run(cfg, argv, command)
    sources = {"base": None, **({"rl": cfg.rl_model} if cfg.rl_model else {})}
    with open_executor(cfg.executor, cfg.model, cfg.threads) as executor:
        evaluate_task(FewShotArc(cfg, tasks, info), run, Session(run.path, model, tok, chat, HFGenerator(model, tok),
                                                                 executor),
                      cfg.model, tasks, sources, cfg.selfedits, cfg.seed, started=t_start)
    return run.path


def train(cfg: ArcConfig, argv: list[str], command: str = "arc-train") -> Path:
    """`seal arc train`: select the tasks, load the model, open (or resume) the run folder and
    run `restem.rounds` ReSTEM rounds (seal/engine/restem.py). Returns the run folder."""
    from seal.engine.restem import open_backends, run_rounds

    if not cfg.tasks:
        raise ConfigError("seal arc train needs --tasks PATH (training tasks, e.g. seal:train)")
    run, base, tok, chat, tasks, _ = open_task_run(cfg, argv, command)
    with open_backends(cfg, cfg.restem.sft_processes) as backends:
        run_rounds(FewShotArc(cfg, tasks), run, base, tok, chat, cfg.model, cfg.restem.rounds, cfg.seed,
                   "unchanged (no self-edit solved its task)", backends)
    return run.path
