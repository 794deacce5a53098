"""`seal arc train`: ReSTEM over ARC self-edits (paper sections 3.1 and 4.2).

    for round t = 1..R:
        E-step:  sample n self-edits SE ~ LM_theta_t(. | task demonstrations) for every task
                 reward r(SE) = 1 if TTT configured by SE makes the model solve the task
                 (pass@2 on its test inputs), else 0
        M-step:  theta_{t+1} = SFT(theta_t, {(prompt -> SE) : r(SE) = 1}),  loss on SE only

Choices and departures, as in seal/restem.py for knowledge incorporation:
- TTT (the reward) is applied to the *base* model, so a round's reward reflects only the
  configuration the policy wrote; `seal arc evaluate --rl_model` compares policies the same way;
- an invalid self-edit earns no reward and is never kept (its fallback, no training, would
  otherwise reward copying nothing useful);
- every solving self-edit is kept (rewards are 0/1), written as its canonical JSON (the
  parsed configuration, indented like the prompt's example) rather than the raw sample;
- the M-step trains a LoRA on the policy and merges it into its weights each round.

Run folder: tasks.json, rounds/round_<t>/{samples.jsonl, ttt.jsonl, rewards.jsonl, sft.jsonl,
model/, done.json}, final.json. A killed run resumed with the same --out skips finished
samples, TTT groups and rounds.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

from ...config import ConfigError, InnerLoopConfig
from ...evaluate import job_seed
from ...generation import HFGenerator
from ...inner_loop import TrainExample
from ...models import save_model
from ...restem import finish, finished_round, sft_merge
from ...runs import append_jsonl, atomic_write_json, progress
from .config import ArcConfig
from .run import open_task_run, plan, read_records, run_ttt, sample_selfedits, selfedit_text


def canonical_selfedit(config) -> str:
    return json.dumps(config.to_dict(), indent=1)


def sft(policy, tok, examples: list[TrainExample], cfg: ArcConfig, seed: int) -> dict:
    r = cfg.restem
    inner = InnerLoopConfig(lora=r.sft_lora, lr=r.sft_lr, epochs=r.sft_epochs, batch_size=r.sft_batch_size,
                            max_seq_len=r.sft_max_seq_len, loss_on="completion", dtype=cfg.dtype,
                            max_grad_norm=cfg.max_grad_norm, parallel_adapters=1)
    return sft_merge(policy, tok, examples, inner, seed)


def train(cfg: ArcConfig, argv: list[str], command: str = "arc-train") -> Path:
    if not cfg.tasks:
        raise ConfigError("seal arc train needs --tasks PATH (training tasks, e.g. seal:train)")
    run, base, tok, chat, tasks, _ = open_task_run(cfg, argv, command)
    policy = None  # a copy of the base model once an M-step changes it

    for rnd in range(1, cfg.restem.rounds + 1):
        rdir = run.path / "rounds" / f"round_{rnd}"
        rdir.mkdir(parents=True, exist_ok=True)
        if (earlier := finished_round(rdir, rnd, cfg.model)) is not None:
            policy = earlier[1] if earlier[1] is not None else policy
            continue
        t0 = time.time()

        # E-step (1): sample from the current policy
        done = {r["task_id"]: r["completions"] for r in read_records(rdir / "samples.jsonl")}
        bar = progress(len(tasks), f"round {rnd}: sampling self-edits", "task")
        def save_sample(task, completions, rdir=rdir):
            append_jsonl(rdir / "samples.jsonl", {"task_id": task.id, "completions": completions})

        samples = sample_selfedits(HFGenerator(policy if policy is not None else base, tok), tok, chat, tasks, cfg,
                                   job_seed(cfg.seed, "round", rnd), done, save_sample, progress=bar.update)
        bar.close()

        # E-step (2): reward every self-edit by TTT on the base model
        attempts, jobs = plan(tasks, {"policy": samples}, tok, chat, cfg)
        results = {r["key"]: r for r in read_records(rdir / "ttt.jsonl")}
        bar = progress(len(jobs), f"round {rnd}: test-time training", "run")
        bar.update(sum(j.key in results for j in jobs))

        def save(job, rec, rdir=rdir, results=results):
            results[job.key] = rec
            append_jsonl(rdir / "ttt.jsonl", rec)

        run_ttt(base, tok, chat, jobs, cfg, save, done=set(results), progress=bar.update)
        bar.close()
        rewards = [{"round": rnd, "task_id": a.task_id, "sample": a.index, "valid": a.parsed.valid,
                    "reward": int(results[a.job_key]["solved"]) if a.job_key else 0} for a in attempts["policy"]]
        _write_lines(rdir / "rewards.jsonl", rewards)

        # filter and M-step
        prompts = {t.id: selfedit_text(t, tok, chat, cfg) for t in tasks}
        kept = [a for a, r in zip(attempts["policy"], rewards) if r["reward"] > 0]
        examples, too_long = [], 0
        for a in kept:
            ex = TrainExample(completion=canonical_selfedit(a.parsed.config), prompt=prompts[a.task_id])
            n_tokens = len(tok(ex.prompt + ex.completion, add_special_tokens=False)["input_ids"]) + 1
            if n_tokens > cfg.restem.sft_max_seq_len:
                too_long += 1
                continue
            examples.append(ex)
        _write_lines(rdir / "sft.jsonl", [{"task_id": a.task_id, "sample": a.index,
                                           "selfedit": canonical_selfedit(a.parsed.config)} for a in kept])
        sft_stats = None
        if examples:
            if policy is None:
                policy = copy.deepcopy(base)
            sft_stats = sft(policy, tok, examples, cfg, job_seed(cfg.seed, "sft", rnd))
            save_model(policy, tok, rdir / "model")
        secs = [r["seconds"] for r in results.values()]
        vals = [r["reward"] for r in rewards]
        done_info = {
            "round": rnd, "n_tasks": len(tasks), "n_selfedits": len(vals),
            "n_invalid": sum(not r["valid"] for r in rewards), "n_ttt_runs": len(jobs),
            "mean_reward": statistics.fmean(vals) if vals else None,
            "tasks_solved": len({r["task_id"] for r in rewards if r["reward"]}),
            "n_kept": len(kept), "n_sft_examples": len(examples), "n_too_long": too_long,
            "model_changed": bool(examples), "sft_tokens": sft_stats["tokens"][0] if sft_stats else 0,
            "seconds_per_ttt_run": statistics.fmean(secs) if secs else None, "seconds": time.time() - t0}
        atomic_write_json(rdir / "done.json", done_info)
        run.log("round", step=rnd, **{k: v for k, v in done_info.items() if v is not None})
        print(f"round {rnd}: mean reward {done_info['mean_reward']}, kept {len(kept)}/{len(vals)} "
              f"({done_info['n_invalid']} invalid), {done_info['seconds']:.0f} s")

    finish(run, cfg.restem.rounds, "unchanged (no self-edit solved its task)")
    return run.path


def _write_lines(path: Path, records: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)
