"""The outer loop, ReSTEM (paper section 3.1; Singh et al., 2023), over any seal Task.

SEAL trains the generator's policy over self-edits, SE ~ LM_theta(. | C), to maximize the
reward r(SE, tau) of the model updated on SE. ReSTEM approximates this policy gradient by
rejection sampling and supervised finetuning, round after round:

    for round t = 1..R:
        C_1..N = task.round_contexts(t)
        E-step:  sample k self-edits SE_1..k ~ LM_theta_t(. | C) for each C
                 score each: r(SE) from inner-loop updates of the base model on SE
                 (task.plan -> jobs -> run_inner_jobs -> task.job_record -> task.reward)
        filter:  keep, per C, the best SE if r > 0 (paper), or every SE with r > 0, ...
        M-step:  theta_{t+1} = SFT(theta_t, {(C -> SE) kept}),  loss on the SE tokens only

`seal train` (knowledge incorporation, seal/knowledge/task.py) and `seal arc train`
(seal/arc/task.py) are this loop over two tasks; each task's module states its reward and
its departures from the paper. Departures common to both:
- rewards are measured on the *base* model updated by the self-edit (as the reference code's
  inner-loop server does), so a round's reward reflects only the data the generator wrote;
- the M-step trains a LoRA on the policy and merges it into its weights each round (the
  generator starts as a copy of the base model; the base itself never changes);
- equal rewards are ordered by the task's finer score where it has one (`restem.tie_break`:
  knowledge incorporation's gold-answer log-prob), not by sample index: with a containment
  reward over a passage's 4-5 questions the best is tied on about half the passages;
- optionally (`restem.confirm logprob`, knowledge incorporation) a self-edit is kept only if a
  second, finer score from the same updates agrees that it beat its control;
- seeds come from the run's seed and the piece of work (`jobs.job_seed`), so a round samples,
  trains and scores the same whether or not it was interrupted.

Run folder: rounds/round_<t>/{samples.jsonl, base.jsonl (when the reward has a baseline),
<task.job_file> (one record per inner-loop job, appended as each finishes), <task.selfedit_file>,
sft.jsonl, model/, done.json, estep_from.json (round 1, when restem.estep_from took its E-step)},
final.json. A killed run restarted with the same --out skips every finished sample, baseline,
group of inner-loop jobs and round.
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seal.config import GenerationConfig, InnerLoopConfig, ModelConfig
from seal.engine.jobs import job_seed, run_saved_jobs, sample_selfedits
from seal.engine.task import Plan, Session, Task
from seal.runs import RunError, append_jsonl, atomic_write_json, progress, read_jsonl, write_jsonl
from seal.stats import sd
from seal.training import lora
from seal.training.generation import HFGenerator, make_generator
from seal.training.inner_loop import TrainExample, train_adapters
from seal.training.models import load_model, save_model


def select_kept(rewards: dict[tuple[str, int], float], keep: str, keep_fraction: float = 1.0,
                tiebreak: dict[tuple[str, int], float] | None = None) -> list[tuple[str, int, float]]:
    """The filter of rejection sampling: which (context, sample) pairs become SFT data, sorted.
    `best-positive` (the paper): per context the best self-edit with r > 0; `all-positive`:
    every one with r > 0; `top-fraction`: the best `keep_fraction` of all. Equal rewards are
    ordered by `tiebreak` (larger first; the task's finer score, `Task.tiebreak`; a missing or NaN
    one is last), then go to the lowest (context id, sample), never to the order rewards arrived
    in, which differs between executors (Ray finishes jobs out of order) and between a resumed
    run and an uninterrupted one."""
    tb = tiebreak or {}

    def rank(k: tuple[str, int]) -> tuple[float, float]:
        t = tb.get(k)
        return rewards[k], -math.inf if t is None or math.isnan(t) else t

    keys = sorted(k for k, r in rewards.items() if r is not None)
    if keep == "best-positive":
        best: dict[str, tuple[str, int]] = {}
        for k in keys:
            if rewards[k] > 0 and (k[0] not in best or rank(k) > rank(best[k[0]])):
                best[k[0]] = k
        return sorted((cid, j, rewards[(cid, j)]) for cid, j in best.values())
    if keep == "all-positive":
        return [(cid, j, rewards[(cid, j)]) for cid, j in keys if rewards[(cid, j)] > 0]
    keys.sort(key=rank, reverse=True)  # stable even reversed: equal ranks stay in (context, sample) order
    n = max(1, int(round(keep_fraction * len(keys)))) if keys else 0
    return sorted((cid, j, rewards[(cid, j)]) for cid, j in keys[:n])


def sft(model, tok, examples: list[TrainExample], inner: InnerLoopConfig, seed: int) -> dict:
    """M-step: LoRA SFT on prompt -> self-edit (loss on the self-edit only, `inner.loss_on`),
    merged into the weights of `model`. Returns train_adapters' statistics."""
    lora.attach(model, inner.lora, 1)
    try:
        stats = train_adapters(model, tok, [examples], inner, [seed])
        lora.merge(model, 0)
    finally:
        lora.detach(model)
    return stats


def completion_logprob(model, tok, examples: list[TrainExample]) -> float | None:
    """Mean over examples of the per-token log-probability of each completion given its prompt:
    how likely the generator finds the self-edits ReSTEM kept (it should rise after SFT)."""
    from seal.training.inner_loop import answer_logprobs

    if not examples:
        return None
    lps = answer_logprobs(model, tok, [e.prompt for e in examples], [e.completion for e in examples],
                          [-1] * len(examples))
    return sum(lps) / len(lps)


def finished_round(rdir: Path, rnd: int, model_cfg: ModelConfig):
    """For a round finished earlier (done.json exists): (its record, the model it saved or
    None if it changed nothing). None when the round still has to run."""
    if not (rdir / "done.json").exists():
        return None
    info = json.loads((rdir / "done.json").read_text())
    print(f"round {rnd}: done earlier (kept {info['n_kept']} self-edits)")
    model = None
    if info.get("model_changed"):
        model, _ = load_model(ModelConfig(**{**model_cfg.__dict__, "name": str(rdir / "model")}))
    return info, model


def last_model(run_dir: Path, upto: int) -> Path | None:
    """The model folder of the last of rounds 1..`upto` that changed the model (None: none did)."""
    return next((run_dir / "rounds" / f"round_{r}" / "model" for r in range(upto, 0, -1)
                 if (run_dir / "rounds" / f"round_{r}" / "model").exists()), None)


def finish(run, rounds: int, unchanged: str, **extra) -> Path | None:
    """Record the last round's model as the run's final model (final.json, with `extra`, e.g. the
    data counts) and close the run."""
    final = last_model(run.path, rounds)
    atomic_write_json(run.path / "final.json", {"model": str(final) if final else None, **extra})
    run.close()
    print(f"final model: {final or unchanged}")
    return final


@dataclass
class Backends:
    """Where a round's heavy pieces run; the defaults keep everything in this process.

    - `executor`: the E-step's inner-loop jobs (seal/engine/executors.py; None: here, on the base model);
    - `generation`: what samples self-edits (`hf`: transformers on the in-process policy; `vllm`:
      a vLLM engine on the policy's saved folder, made per round since the M-step changes the
      weights themselves);
    - `sft_processes`: the M-step on N processes under `accelerate` (seal/engine/sft_distributed.py),
      which finetunes the policy's folder into the round's model folder."""

    executor: Any = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    sft_processes: int = 1


@contextmanager
def open_backends(cfg, sft_processes: int = 1):
    """The Backends a command's config names (`cfg.executor`, `cfg.generation`, with `cfg.model`
    and `cfg.threads`): a missing Ray, an unreachable cluster or a missing vLLM is refused here,
    before any work; Ray workers are released at the end."""
    from seal.engine.executors import open_executor

    if cfg.generation.backend == "vllm":
        from seal.training.generation_vllm import import_vllm

        import_vllm()
    with open_executor(cfg.executor, cfg.model, cfg.threads) as executor:
        yield Backends(executor, cfg.generation, sft_processes)


def run_rounds(task: Task, run, base, tok, chat: bool, model_cfg: ModelConfig, rounds: int, seed: int,
               unchanged: str, backends: Backends | None = None, **final_extra) -> Path | None:
    """ReSTEM rounds 1..`rounds` of `task` in the open run `run` (seal.runs) with the base model
    `base`; rounds finished earlier are skipped (their model is reloaded). Closes the run and
    returns the final model's folder (None: no round changed the model; `unchanged` says why)."""
    if not isinstance(task, Task):
        raise TypeError(f"{type(task).__name__} does not implement seal.engine.task.Task")
    backends = backends or Backends()
    session = Session(run.path, base, tok, chat, HFGenerator(base, tok), backends.executor)
    policy = None  # the generator; a copy of the base model once an M-step changes it
    for rnd in range(1, rounds + 1):
        rdir = run.path / "rounds" / f"round_{rnd}"
        rdir.mkdir(parents=True, exist_ok=True)
        if (earlier := finished_round(rdir, rnd, model_cfg)) is not None:
            policy = earlier[1] if earlier[1] is not None else policy
            continue
        policy, info = run_round(task, session, rdir, rnd, policy, seed, model_cfg, backends)
        run.log("round", step=rnd, **{k: v for k, v in info.items() if v is not None})
    return finish(run, rounds, unchanged, **final_extra)


ESTEP_FREE = frozenset({"out", "threads", "executor", "data.path", "restem.rounds", "restem.keep", "restem.keep_fraction",
                        "restem.tie_break", "restem.confirm", "restem.sft_lr", "restem.sft_epochs", "restem.sft_batch_size",
                        "restem.sft_lora", "restem.sft_max_seq_len", "restem.sft_processes", "restem.estep_from"})
"""Settings (dotted, or a whole section) that round 1's E-step does not depend on: the M-step's,
the round count, and how the work is run (`data.path`: the data file is compared by its sha256
instead). `restem.estep_from` may join runs that differ only there."""


def estep_differences(mine: dict, theirs: dict, free: frozenset[str] = ESTEP_FREE) -> list[str]:
    """The dotted settings (`to_dict` form) on which two runs' round-1 E-steps may differ. A
    setting missing from `theirs` (a config saved before the setting existed, when it may have
    behaved otherwise than its default now) counts as different."""
    out: list[str] = []

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key in sorted(set(a) | set(b)):
            name = prefix + key
            if name in free:
                continue
            x, y = a.get(key), b.get(key)
            if isinstance(x, dict) and isinstance(y, dict):
                walk(x, y, name + ".")
            elif x != y or key not in a or key not in b:
                out.append(name)

    walk(mine, theirs, "")
    return out


TAKEN = "estep_from.json"
"""In a round's folder: where its E-step was taken from (`take_estep`)."""


def take_estep(src: Path, run_dir: Path, job_file: str, run_files: tuple[str, ...] = ()) -> list[str]:
    """Copy round 1's E-step from the run folder `src` into the run folder `run_dir` (whose
    settings the caller has checked with `estep_differences`): the samples, the unadapted
    baseline, every inner-loop record (`job_file`), the base generator's held-apart check (its
    samples and its and the controls' records; the `after` side is the new model's, so it is not
    taken), and `run_files`, run-level files the E-step read (e.g. probes). A file `run_dir`
    already has is left alone, and a finished round 1 gets nothing, so a resumed run may call this
    again. `TAKEN` in round 1's folder names the source, so the round says its E-step was taken,
    not resumed. Returns the files written."""
    s, d = Path(src) / "rounds" / "round_1", Path(run_dir) / "rounds" / "round_1"
    if not (s / "done.json").exists():
        raise RunError(f"{src}: has no finished round 1 (rounds/round_1/done.json) to take the E-step from")
    if (d / "done.json").exists():  # this run's round 1 is finished: nothing to take
        return []
    every = lambda r: True  # noqa: E731
    plan = [(s / name, d / name, every) for name in ("samples.jsonl", "base.jsonl", job_file, "check_base.jsonl")]
    plan += [(s / "check_samples.jsonl", d / "check_samples.jsonl", lambda r: r.get("which") == "before"),
             # generator_check scores [before, after] pairs: sample 0 the base generator's, 1 the new model's
             (s / "check.jsonl", d / "check.jsonl", lambda r: r.get("sample") != 1)]
    plan += [(Path(src) / name, Path(run_dir) / name, every) for name in run_files]
    written = []
    d.mkdir(parents=True, exist_ok=True)
    for a, b, wanted in plan:
        if a.exists() and not b.exists():
            write_jsonl(b, [r for r in read_jsonl(a) if wanted(r)])
            written.append(str(b.relative_to(run_dir)))
    if written:
        atomic_write_json(d / TAKEN, {"src": str(src), "files": written})
    return written


def policy_folder(model_cfg: ModelConfig, run_dir: Path, rnd: int) -> str:
    """Where round `rnd`'s policy lies on disk: the model of the last earlier round that changed
    it, else the base model's folder (or hub id)."""
    from seal.training.generation_vllm import model_path

    return str(last_model(run_dir, rnd - 1) or model_path(model_cfg))


def policy_sampler(policy, s: Session, model_cfg: ModelConfig, gen_cfg: GenerationConfig, rnd: int):
    """What samples round `rnd`'s self-edits (see Backends.generation)."""
    if gen_cfg.backend == "hf":
        return HFGenerator(policy if policy is not None else s.model, s.tok, decoder=gen_cfg.decoder, dtype=gen_cfg.dtype)
    return make_generator(None, s.tok, "vllm", path=policy_folder(model_cfg, s.run_dir, rnd),
                          gpu_memory_utilization=gen_cfg.gpu_memory_utilization, max_loras=gen_cfg.max_loras)


def run_round(task: Task, s: Session, rdir: Path, rnd: int, policy, seed: int, model_cfg: ModelConfig | None = None,
              backends: Backends | None = None):
    """One ReSTEM round, each step resumable where it stands. Returns (the policy after the
    M-step, None while it is still the base model; the round's done.json record)."""
    t0 = time.time()
    taken = json.loads((rdir / TAKEN).read_text())["src"] if (rdir / TAKEN).exists() else None
    # a resumed round, or one whose E-step was taken: `seconds` below covers only this session's part
    resumed = (rdir / "samples.jsonl").exists() and taken is None
    backends = backends or Backends()
    contexts = task.round_contexts(rnd, s)
    unit = task.unit

    # E-step (1): sample self-edits from the current policy
    done = {r[task.id_field]: r["completions"] for r in read_jsonl(rdir / "samples.jsonl")}
    bar = progress(len(contexts), f"round {rnd}: sampling self-edits", unit)
    samples = sample_selfedits(task, policy_sampler(policy, s, model_cfg, backends.generation, rnd), s.tok, s.chat,
                               contexts, task.sampling.k, job_seed(seed, "round", rnd), done,
                               lambda c, comps: append_jsonl(rdir / "samples.jsonl",
                                                             {task.id_field: c.id, "completions": comps}),
                               progress=bar.update)
    bar.close()

    # E-step (2): the unadapted model's check, when the reward is a gain over it
    baseline = saved_baseline(task, s, contexts, rdir / "base.jsonl")

    # E-step (3): score every self-edit by its inner-loop update(s) of the base model
    plan = task.plan(rnd, contexts, samples, s.tok, s.chat)
    n_selfedits = sum(len(samples[c.id]) for c in contexts)
    if plan.unusable:
        print(f"round {rnd}: {len(plan.unusable)} of {n_selfedits} self-edits {plan.unusable_note}")
    records = run_saved_jobs(task.inner_loop, s, plan.jobs, rdir / task.job_file,
                             lambda job, result: task.job_record(rnd, job, result, baseline), task.record_key,
                             f"round {rnd}: inner loop")
    rewards = selfedit_rewards(task, plan, records)
    if task.selfedit_file:
        write_jsonl(rdir / task.selfedit_file,
                    [{"round": rnd, task.id_field: cid, "sample": j, **plan.info.get((cid, j), {}),
                      "reward": rewards[(cid, j)]} for cid, j in plan.scored_by if (cid, j) in rewards])

    # filter and M-step
    confirmed = confirmed_rewards(rewards, selfedit_confirms(task, plan, records))
    kept = select_kept(confirmed, task.keep, task.keep_fraction, selfedit_tiebreaks(task, plan, records))
    by_id = {c.id: c for c in contexts}
    n_check = getattr(task, "generator_check", 0) if kept else 0
    if n_check:  # the held-apart self-edits of the generator this round started from, before SFT changes it
        held = task.held_apart(n_check)
        before = check_samples(task, s, rdir, rnd, held, "before",
                               policy_sampler(policy, s, model_cfg, backends.generation, rnd), seed)
    examples, sft_lines = [], []
    for cid, j, r in kept:
        ex = task.sft_example(by_id[cid], samples[cid][j], s.tok, s.chat)
        examples += [ex] if ex is not None else []
        extra = {"selfedit": ex.completion} if ex is not None and ex.completion != samples[cid][j] else {}
        sft_lines.append({task.id_field: cid, "sample": j, "reward": r, **extra})
    write_jsonl(rdir / "sft.jsonl", sft_lines)
    sft_stats, movement = None, {}
    if examples:
        # did the M-step move the generator toward what it kept? (mean log-prob per token of the
        # kept self-edits given their prompts, before and after SFT)
        movement["kept_logprob_before"] = completion_logprob(policy if policy is not None else s.model, s.tok,
                                                             examples)
        if backends.sft_processes > 1:  # data-parallel under accelerate; it writes rdir/model
            from seal.engine.sft_distributed import launch

            sft_stats = launch(model_cfg, policy_folder(model_cfg, s.run_dir, rnd), task.sft_config, examples, rdir,
                               job_seed(seed, "sft", rnd), backends.sft_processes)
            policy, _ = load_model(ModelConfig(**{**model_cfg.__dict__, "name": str(rdir / "model")}))
        else:
            if policy is None:
                policy = copy.deepcopy(s.model)
            sft_stats = sft(policy, s.tok, examples, task.sft_config, job_seed(seed, "sft", rnd))
            save_model(policy, s.tok, rdir / "model")
        movement["kept_logprob_after"] = completion_logprob(policy, s.tok, examples)
    vals = list(rewards.values())
    info = {"round": rnd, f"n_{unit}s": len(contexts), "n_selfedits": n_selfedits, "n_jobs": len(plan.jobs),
            "n_scored": len(vals), "n_kept": len(kept),
            "mean_reward": sum(vals) / len(vals) if vals else None,
            "frac_positive": sum(v > 0 for v in vals) / len(vals) if vals else None,
            "mean_kept_reward": sum(r for _, _, r in kept) / len(kept) if kept else None,
            "n_unconfirmed_positive": sum(r > 0 for k, r in rewards.items() if k not in confirmed),
            "reward_sd": sd(vals), "reward_quantiles": _quantiles(vals),
            "model_changed": bool(examples), "n_sft_examples": len(examples),
            "sft_tokens": sft_stats["tokens"][0] if sft_stats else 0,
            "sft_truncated": sft_stats["n_truncated"][0] if sft_stats else 0,
            "sft_dropped": sft_stats["n_dropped"][0] if sft_stats else 0, **movement}
    info.update(task.round_stats(rnd, contexts, samples, plan, records, rewards, kept, info, s.tok))
    if n_check and examples:
        after = check_samples(task, s, rdir, rnd, held, "after",
                              policy_sampler(policy, s, model_cfg, backends.generation, rnd + 1), seed)
        info["generator_check"] = generator_check(task, s, rdir, rnd, held, before, after, seed)
    info["seconds"] = time.time() - t0
    info["resumed"] = resumed
    info["estep_from"] = taken
    # the inner-loop jobs' own seconds, summed over every session that ran them (a resumed round's
    # `seconds` is only the last session's wall time)
    info["job_seconds"] = sum(r.get("seconds") or 0.0 for r in records.values())
    atomic_write_json(rdir / "done.json", info)
    print(f"round {rnd}: mean reward {_fmt(info['mean_reward'])} (sd {_fmt(info['reward_sd'])}), kept "
          f"{len(kept)}/{len(vals)}"
          + (f" ({info['n_unconfirmed_positive']} positive unconfirmed by restem.confirm)"
             if info["n_unconfirmed_positive"] else "") + f", kept log-prob {_fmt(movement.get('kept_logprob_before'))} -> "
          f"{_fmt(movement.get('kept_logprob_after'))}, {info['seconds']:.0f} s"
          + (" this session (resumed)" if resumed else f" this session (E-step taken from {taken})" if taken else "")
          + f"; inner-loop jobs {info['job_seconds']:.0f} s")
    for line in task.round_notes(rnd, info):
        print(line)
    if info.get("generator_check"):
        print(info["generator_check"]["sentence"])
    return policy, info


def saved_baseline(task: Task, s: Session, contexts: list, path: Path) -> dict[str, dict]:
    """The unadapted model's check of each context (task.reward_baseline), by context id: read
    from `path`, and what is missing computed and appended there."""
    baseline = {r[task.id_field]: r for r in read_jsonl(path)}
    todo = [c for c in contexts if c.id not in baseline]
    if todo:
        for cid, rec in task.reward_baseline(s, todo).items():
            baseline[cid] = {task.id_field: cid, **rec}
            append_jsonl(path, baseline[cid])
    return baseline


def check_samples(task: Task, s: Session, rdir: Path, rnd: int, contexts: list, which: str, gen, seed: int
                  ) -> dict[str, str]:
    """One self-edit per held-apart context from `gen` (`which`: the generator before or after
    the round's M-step), saved in check_samples.jsonl (a resumed run reads them back)."""
    path = rdir / "check_samples.jsonl"
    done = {r[task.id_field]: r["completions"] for r in read_jsonl(path) if r["which"] == which}
    out = sample_selfedits(task, gen, s.tok, s.chat, contexts, 1, job_seed(seed, "check", rnd, which), done,
                           lambda c, comps: append_jsonl(path, {"which": which, task.id_field: c.id,
                                                                "completions": comps}))
    return {cid: comps[0] for cid, comps in out.items()}


def generator_check(task: Task, s: Session, rdir: Path, rnd: int, contexts: list, before: dict[str, str],
                    after: dict[str, str], seed: int) -> dict:
    """Is round `rnd`'s new generator worse than the one it started from? Both self-edits of each
    held-apart context are scored like the round's (same inner loop, seeds shared within a
    context, check.jsonl), and the paired reward difference (after - before) is bootstrapped over
    them all. A self-edit that parses to nothing counts as reward 0 (no update: no gain), so a
    generator that stops writing usable self-edits is not excused, and the sentence counts them."""
    from seal.stats import bootstrap_mean, paired_bootstrap

    baseline = saved_baseline(task, s, contexts, rdir / "check_base.jsonl")
    pairs = {c.id: [before[c.id], after[c.id]] for c in contexts}
    plan = task.plan(rnd, contexts, pairs, s.tok, s.chat)
    records = run_saved_jobs(task.inner_loop, s, plan.jobs, rdir / "check.jsonl",
                             lambda job, result: task.job_record(rnd, job, result, baseline), task.record_key,
                             f"round {rnd}: generator check")
    r = selfedit_rewards(task, plan, records)
    b = [r.get((c.id, 0), 0.0) for c in contexts]
    a = [r.get((c.id, 1), 0.0) for c in contexts]
    diff = paired_bootstrap(a, b, seed=seed)
    unusable = {"before": sum((c.id, 0) in plan.unusable for c in contexts),
                "after": sum((c.id, 1) in plan.unusable for c in contexts)}
    verdict, sentence = check_sentence(rnd, len(contexts), task.unit, diff, unusable)
    return {"n_contexts": len(contexts), "before": bootstrap_mean(b, seed=seed), "after": bootstrap_mean(a, seed=seed),
            "after_minus_before": diff, "verdict": verdict,
            "unusable": unusable, "sentence": sentence}


def check_sentence(rnd: int, n: int, unit: str, diff: dict, unusable: dict[str, int]) -> tuple[str, str]:
    """The generator check's verdict and its one-line report, from the paired difference `diff`
    (after - before, seal.stats.paired_bootstrap) over `n` held-apart contexts and the count of
    self-edits on each side that parse to nothing (a generator that learned to write nothing
    usable says so)."""
    from seal.stats import interval_sign

    sign = interval_sign(diff["lo"], diff["hi"]) if diff["n"] else None
    verdict = {1: "better than", -1: "worse than", 0: "not distinguishable from", None: "not comparable with"}[sign]
    if not diff["n"]:
        return verdict, f"round {rnd}: generator check: no held-apart {unit} to compare"
    sentence = (f"round {rnd}: on {n} held-apart {unit}s the new generator's self-edits earn {diff['mean']:+.3f} "
                f"[{diff['lo']:+.3f}, {diff['hi']:+.3f}] reward against those of the generator it started from: "
                f"{verdict} it" + ("; it is still the next round's generator" if verdict == "worse than" else ""))
    if unusable["before"] or unusable["after"]:
        sentence += (f" ({unusable['after']} of the new generator's {n} self-edits and {unusable['before']} of the "
                     f"old one's parse to nothing and count as reward 0)")
    return verdict, sentence


def selfedit_rewards(task: Task, plan: Plan, records: dict[str, dict], score=None) -> dict[tuple[str, int], float]:
    """r(SE) for every self-edit that has one, by (context id, sample), in plan order (the same
    whichever order the executor finished the jobs in; select_kept breaks ties by key).
    `score`: another function of a self-edit's records instead of `task.reward`."""
    score = score or task.reward
    out = {}
    for se in plan.scored_by:
        r = score([records[k] for k in plan.scored_by[se] if k in records])
        if r is not None:
            out[se] = r
    return out


def selfedit_tiebreaks(task: Task, plan: Plan, records: dict[str, dict]) -> dict[tuple[str, int], float] | None:
    """The task's finer score of every self-edit, for ordering equal rewards (`Task.tiebreak`,
    optional: None where the task has none or `restem.tie_break` is `first`)."""
    score = getattr(task, "tiebreak", None)
    return None if score is None else selfedit_rewards(task, plan, records, score) or None


def selfedit_confirms(task: Task, plan: Plan, records: dict[str, dict]) -> dict[tuple[str, int], float] | None:
    """Each self-edit's second score that must also be above 0 for it to be kept (`Task.confirm`,
    optional: None where the task has none or `restem.confirm` is `none`)."""
    score = getattr(task, "confirm", None)
    return None if score is None else selfedit_rewards(task, plan, records, score)


def confirmed_rewards(rewards: dict[tuple[str, int], float],
                      confirms: dict[tuple[str, int], float] | None) -> dict[tuple[str, int], float]:
    """The rewards of the self-edits the filter may keep: all of them without a second score,
    else those whose second score is above 0 (a missing one is not)."""
    if confirms is None:
        return rewards
    return {k: r for k, r in rewards.items() if (confirms.get(k) or 0.0) > 0}


def _quantiles(vals: list[float]) -> dict | None:
    if not vals:
        return None
    v = sorted(vals)
    return {q: v[min(len(v) - 1, int(round(f * (len(v) - 1))))] for q, f in (("min", 0), ("q25", .25), ("median", .5),
                                                                                 ("q75", .75), ("max", 1))}


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
