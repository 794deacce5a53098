"""`seal train`: the outer loop, ReSTEM (paper section 3.1; Singh et al., 2023).

SEAL trains the generator's policy over self-edits, SE ~ LM_theta(. | C), to maximize the
reward r(SE, tau) of the model updated on SE. ReSTEM approximates this policy gradient by
rejection sampling and supervised finetuning, round after round:

    for round t = 1..R:
        draw N contexts C (passages) from the training split
        E-step:  sample k self-edits SE_1..k ~ LM_theta_t(. | C) for each C
                 score each: r = metric(SFT(theta_base, SE) on C's questions) - metric(theta_base)
        filter:  keep, per C, the best SE if r > 0 (paper), or every SE with r > 0, ...
        M-step:  theta_{t+1} = SFT(theta_t, {(C -> SE) kept}),  loss on the SE tokens only

Departures from the paper, each a setting in ReSTEMConfig / InnerLoopConfig:
- the reward is measured on the *base* model updated by the self-edit (as the reference code's
  inner-loop server does), so a round's reward reflects only the data the generator wrote;
- the reward metric is local (default: gold-answer log-probability gain, see tasks/knowledge.py)
  instead of GPT-4.1 grading;
- `restem.reward_questions probes` computes the reward without labels: on probe questions that
  the base model writes and answers with the passage in view (seal/probes.py), written once per
  run. The data's own questions, when there are any, are graded beside them for comparison only
  (`gold_reward`), and `reward_agreement` reports how often both rewards keep the same self-edit;
- each round draws fresh, disjoint passages from the seeded shuffle of the training file;
- the M-step trains a LoRA on the generator and merges it into its weights each round.

Run folder: probes.jsonl (reward_questions probes), rounds/round_<t>/{samples.jsonl, base.jsonl, rewards.jsonl, sft.jsonl, model/,
done.json}. Every inner-loop result is appended as it finishes; a killed run restarted with the
same --out skips every finished group of evaluations and every finished round.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path

from . import lora
from .config import ConfigError, InnerLoopConfig, ModelConfig, RunConfig
from .evaluate import job_seed, prepare_passages
from .generation import HFGenerator
from .inner_loop import TrainExample, train_adapters
from .models import check_model_name, load_model, save_model, uses_chat
from .probes import Probe, write_probes
from .racing import Race
from .runs import append_jsonl, atomic_write_json, open_run, progress, read_jsonl
from .stats import bootstrap_mean, sd, spearman
from .tasks import knowledge as K


def round_passages(pool: list[K.Passage], cfg: RunConfig, rnd: int) -> list[K.Passage]:
    n = min(cfg.restem.passages_per_round, len(pool))  # never the same passage twice in a round
    start = ((rnd - 1) * n) % max(1, len(pool))
    chosen = pool[start : start + n]
    if len(chosen) < n:  # wrap around when the pool is smaller than R * N
        chosen += pool[: n - len(chosen)]
    return chosen


def select_kept(rewards: dict[tuple[str, int], float], cfg: RunConfig) -> list[tuple[str, int, float]]:
    """The filter of rejection sampling: which (passage, sample) pairs become SFT data."""
    items = [(pid, j, r) for (pid, j), r in rewards.items() if r is not None]
    if cfg.restem.keep == "best-positive":
        best: dict[str, tuple[str, int, float]] = {}
        for pid, j, r in items:
            if r > 0 and (pid not in best or r > best[pid][2]):
                best[pid] = (pid, j, r)
        return sorted(best.values())
    if cfg.restem.keep == "all-positive":
        return sorted(x for x in items if x[2] > 0)
    items.sort(key=lambda x: -x[2])
    n = max(1, int(round(cfg.restem.keep_fraction * len(items)))) if items else 0
    return sorted(items[:n])


def reward_agreement(probe: dict[tuple[str, int], float], gold: dict[tuple[str, int], float], cfg: RunConfig) -> dict:
    """How well a label-free reward (`probe`) stands in for the gold one over the same self-edits,
    keyed (passage id, sample): Spearman's rank correlation within each passage (the ranking
    ReSTEM uses; mean over passages where both rewards vary) and pooled; per passage whether the
    filter (`restem.keep`) keeps the same self-edits under both; and the gold reward of what each
    keeps, against choosing at random (mean gold reward of all self-edits)."""
    keys = sorted(k for k in probe if probe[k] is not None and gold.get(k) is not None)
    pids = sorted({pid for pid, _ in keys})
    within = [rho for pid in pids
              for a, b in [([probe[k] for k in keys if k[0] == pid], [gold[k] for k in keys if k[0] == pid])]
              if (rho := spearman(a, b)) is not None]
    kept_p = {(pid, j) for pid, j, _ in select_kept({k: probe[k] for k in keys}, cfg)}
    kept_g = {(pid, j) for pid, j, _ in select_kept({k: gold[k] for k in keys}, cfg)}
    same = [float({k for k in kept_p if k[0] == pid} == {k for k in kept_g if k[0] == pid}) for pid in pids]

    def per_passage(chosen):  # mean gold reward per passage of what a rule kept (0 when nothing: no update)
        return [sum(gold[k] for k in chosen if k[0] == pid) / max(1, sum(k[0] == pid for k in chosen)) for pid in pids]

    rnd = [sum(gold[k] for k in keys if k[0] == pid) / sum(k[0] == pid for k in keys) for pid in pids]
    probe_kept, gold_kept = per_passage(kept_p), per_passage(kept_g)
    return {"n_passages": len(pids), "n_selfedits": len(keys),
            "spearman_within_mean": sum(within) / len(within) if within else None,
            "spearman_within_n": len(within),
            "spearman_pooled": spearman([probe[k] for k in keys], [gold[k] for k in keys]),
            "same_kept": bootstrap_mean(same, seed=cfg.seed) if same else None,
            "kept_gold_reward": {"probe": bootstrap_mean(probe_kept, seed=cfg.seed) if pids else None,
                                 "gold": bootstrap_mean(gold_kept, seed=cfg.seed) if pids else None,
                                 "random": bootstrap_mean(rnd, seed=cfg.seed) if pids else None},
            "note": "kept_gold_reward: per passage, the mean gold reward of the self-edits each reward's filter "
                    "keeps (0 where it keeps none); random: the mean over all its self-edits"}


def run_probes(path: Path, gen, tok, chat: bool, passages: list[K.Passage], cfg: RunConfig) -> dict[str, list[Probe]]:
    """The probes of `passages` (reward_questions probes), written by the base model once per run
    and appended to `path` as each is made (a resumed run reads them back)."""
    have = {r["passage_id"]: [Probe(**q) for q in r["probes"]] for r in read_jsonl(path)}
    todo = [p for p in passages if p.id not in have]
    bar = progress(len(todo), "writing probe questions", "passage")
    for p in todo:
        have[p.id] = write_probes(gen, tok, chat, p, cfg.restem.probes, job_seed(cfg.seed, "probes", p.id),
                                  max_answer_tokens=cfg.eval.max_answer_tokens)
        append_jsonl(path, {"passage_id": p.id, "probes": [dataclasses.asdict(q) for q in have[p.id]]})
        bar.update(1)
    bar.close()
    return have


def graded_passages(chosen: list[K.Passage], probes: dict[str, list[Probe]] | None) -> tuple[list[K.Passage], dict]:
    """The passages as the E-step grades them, and how many leading questions of each make its
    reward: the data's questions (gold), or its probes followed by the data's questions (probes;
    passages without a probe are left out)."""
    if probes is None:
        return chosen, {p.id: len(p.questions) for p in chosen}
    out = [dataclasses.replace(p, questions=list(probes[p.id]) + list(p.questions)) for p in chosen if probes.get(p.id)]
    return out, {p.id: len(probes[p.id]) for p in out}


def reward_jobs(chosen: list[K.Passage], samples: dict[str, list[str]], cfg: RunConfig, rnd: int):
    """The E-step's inner-loop jobs: every parsable self-edit x `inner.seeds` seeds.

    Common random numbers: the k self-edits of a passage share each inner-loop seed (LoRA init
    and batch order) and train side by side in one batch, so their rewards differ by the data
    they wrote, not by the luck of the update. Returns (jobs, unparsable (passage, sample)s)."""
    jobs, empty = [], []
    for p in chosen:
        for j, c in enumerate(samples[p.id]):
            items = K.parse_selfedit(c, cfg.selfedit.template)
            if not items:
                empty.append((p.id, j))  # unusable self-edit: no reward, never kept
                continue
            for s in range(cfg.inner.seeds):
                jobs.append(K.Job(f"{p.id}/{j}/{s}", [p.id], K.training_examples(p, items, cfg.selfedit.include_passage),
                                  p.questions, job_seed(cfg.seed, "inner", rnd, p.id, s), group=f"{p.id}/{s}"))
    return jobs, empty


def completion_logprob(model, tok, examples: list[TrainExample]) -> float | None:
    """Mean over examples of the per-token log-probability of each completion given its prompt:
    how likely the generator finds the self-edits ReSTEM kept (it should rise after SFT)."""
    from .inner_loop import answer_logprobs

    if not examples:
        return None
    lps = answer_logprobs(model, tok, [e.prompt for e in examples], [e.completion for e in examples],
                          [-1] * len(examples))
    return sum(lps) / len(lps)


def selfedit_stats(completions: list[str], tok, template: str) -> dict:
    """Length and diversity of self-edits: mean tokens, mean parsed items, and distinct-2 (unique
    word bigrams / all bigrams over the set), whose fall across rounds signals the collapse of
    diversity that self-edit RL is known for."""
    if not completions:
        return {"n": 0, "mean_tokens": None, "mean_items": None, "distinct_2": None}
    toks = [len(tok(c, add_special_tokens=False)["input_ids"]) for c in completions]
    bigrams = [tuple(w[i : i + 2]) for c in completions for w in [c.lower().split()] for i in range(len(w) - 1)]
    return {"n": len(completions), "mean_tokens": sum(toks) / len(toks),
            "mean_items": sum(len(K.parse_selfedit(c, template)) for c in completions) / len(completions),
            "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else None}


def _quantiles(vals: list[float]) -> dict | None:
    if not vals:
        return None
    v = sorted(vals)
    return {q: v[min(len(v) - 1, int(round(f * (len(v) - 1))))] for q, f in (("min", 0), ("q25", .25), ("median", .5),
                                                                                 ("q75", .75), ("max", 1))}


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def sft_merge(model, tok, examples: list[TrainExample], inner: InnerLoopConfig, seed: int) -> dict:
    """M-step: LoRA SFT on prompt -> self-edit (loss on the self-edit only), merged into the
    weights. Shared by every domain's outer loop."""
    lora.attach(model, inner.lora, 1)
    try:
        stats = train_adapters(model, tok, [examples], inner, [seed])
        lora.merge(model, 0)
    finally:
        lora.detach(model)
    return stats


def sft(generator, tok, examples: list[TrainExample], cfg: RunConfig, seed: int) -> dict:
    inner = InnerLoopConfig(lora=cfg.restem.sft_lora, lr=cfg.restem.sft_lr, epochs=cfg.restem.sft_epochs,
                            batch_size=cfg.restem.sft_batch_size, max_seq_len=cfg.restem.sft_max_seq_len,
                            loss_on="completion", dtype=cfg.inner.dtype, max_grad_norm=cfg.inner.max_grad_norm,
                            parallel_adapters=1)
    return sft_merge(generator, tok, examples, inner, seed)


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


def finish(run, rounds: int, unchanged: str, **extra) -> Path | None:
    """Record the last round's model as the run's final model (final.json, with `extra`, e.g. the
    data counts) and close the run."""
    final = None
    for rnd in range(rounds, 0, -1):
        if (run.path / "rounds" / f"round_{rnd}" / "model").exists():
            final = run.path / "rounds" / f"round_{rnd}" / "model"
            break
    atomic_write_json(run.path / "final.json", {"model": str(final) if final else None, **extra})
    run.close()
    print(f"final model: {final or unchanged}")
    return final


def train(cfg: RunConfig, argv: list[str], passages: list[K.Passage] | None = None, data_sha: str | None = None,
          command: str = "train") -> Path:
    if cfg.selfedit.template == "none":
        raise ConfigError("seal train needs a self-edit template other than 'none'")
    label_free = cfg.restem.reward_questions == "probes"
    if passages is None:
        passages, counts = K.load_selection(cfg.data, cfg.seed, require_questions=not label_free)
        data_sha = K.file_sha256(cfg.data.path)
    else:
        counts = {"passages": len(passages), "questions": sum(len(p.questions) for p in passages)}
    check_model_name(cfg.model.name)
    run = open_run(command, cfg, argv, cfg.data.path, data_sha, len(passages))
    print(f"run folder: {run.path}" + (" (resumed)" if run.resumed else ""))
    base, tok = load_model(cfg.model)
    chat = uses_chat(tok, cfg.model)
    lora.check_targets(base, cfg.restem.sft_lora, "restem.sft_lora.targets")  # before a round's E-step, not after it
    passages = prepare_passages(cfg, base, tok, chat, passages, counts, cfg.data.path or "passages")
    if cfg.restem.passages_per_round > len(passages):
        print(f"restem.passages_per_round {cfg.restem.passages_per_round} > {len(passages)} passages: "
              f"each round uses all {len(passages)}")
    run.log("data", **{k: v for k, v in counts.items() if isinstance(v, int)})
    base_gen = HFGenerator(base, tok)
    generator = None  # the policy; a copy of the base model until a round changes it

    for rnd in range(1, cfg.restem.rounds + 1):
        rdir = run.path / "rounds" / f"round_{rnd}"
        rdir.mkdir(parents=True, exist_ok=True)
        if (earlier := finished_round(rdir, rnd, cfg.model)) is not None:
            generator = earlier[1] if earlier[1] is not None else generator
            continue
        t0 = time.time()
        policy = generator if generator is not None else base
        chosen = round_passages(passages, cfg, rnd)
        probes = run_probes(run.path / "probes.jsonl", base_gen, tok, chat, chosen, cfg) if label_free else None
        chosen, n_reward = graded_passages(chosen, probes)
        if label_free and len(chosen) < len(round_passages(passages, cfg, rnd)):
            print(f"round {rnd}: {len(round_passages(passages, cfg, rnd)) - len(chosen)} passage(s) got no probe "
                  "question and are left out of this round")

        # E-step (1): sample self-edits from the current policy
        done = {r["passage_id"]: r["completions"] for r in read_jsonl(rdir / "samples.jsonl")}
        bar = progress(len(chosen), f"round {rnd}: sampling self-edits", "passage")
        samples = K.sample_selfedits(HFGenerator(policy, tok), tok, chat, chosen, cfg.selfedit, cfg.selfedit.k,
                                     job_seed(cfg.seed, "round", rnd), done,
                                     lambda p, c: append_jsonl(rdir / "samples.jsonl", {"passage_id": p.id, "completions": c}),
                                     progress=bar.update)
        bar.close()

        # E-step (2): the base model's grades before any update
        base_grades = {r["passage_id"]: r["questions"] for r in read_jsonl(rdir / "base.jsonl")}
        todo = [p for p in chosen if p.id not in base_grades]
        if todo:
            for pid, g in K.base_scores(base, tok, base_gen, chat, todo, K.reward_eval_config(cfg.eval)).items():
                base_grades[pid] = g
                append_jsonl(rdir / "base.jsonl", {"passage_id": pid, "questions": g})
        metric = cfg.eval.reward

        def split(pid, graded):  # (reward metric on the reward questions, on the data's questions beside probes)
            n = n_reward[pid]
            return (K.mean_metrics(graded[:n])[metric],
                    K.mean_metrics(graded[n:])[metric] if label_free and len(graded) > n else None)

        base_metric = {pid: split(pid, g) for pid, g in base_grades.items() if pid in n_reward}

        # E-step (3): score every self-edit by its inner-loop update
        jobs, empty = reward_jobs(chosen, samples, cfg, rnd)
        if empty:
            print(f"round {rnd}: {len(empty)} of {sum(len(samples[p.id]) for p in chosen)} self-edits parse to no "
                  f"training item ({cfg.selfedit.template} template); they get no reward and are never kept")
        results = {f"{r['passage_id']}/{r['sample']}/{r['seed']}": r for r in read_jsonl(rdir / "rewards.jsonl")}
        bar = progress(len(jobs), f"round {rnd}: inner loop", "self-edit")
        bar.update(sum(j.key in results for j in jobs))

        def save(job, res, rnd=rnd):
            pid, j, s = job.key.split("/")
            if res.get("raced_out"):  # stopped at a rung: no reward, never kept
                rec = {"round": rnd, "passage_id": pid, "sample": int(j), "seed": int(s), "reward": None,
                       "raced_out": True, "race": res["race"], "train": res["train"], "seconds": res["seconds"]}
                results[job.key] = rec
                append_jsonl(rdir / "rewards.jsonl", rec)
                return
            value, gold = split(pid, res["questions"])
            rec = {"round": rnd, "passage_id": pid, "sample": int(j), "seed": int(s),
                   "reward": value - base_metric[pid][0], "metrics": K.mean_metrics(res["questions"][:n_reward[pid]]),
                   "train": res["train"], "seconds": res["seconds"]}
            if gold is not None:
                rec["gold_reward"] = gold - base_metric[pid][1]
                rec["gold_metrics"] = K.mean_metrics(res["questions"][n_reward[pid]:])
            if "race" in res:
                rec["race"] = res["race"]
            results[job.key] = rec
            append_jsonl(rdir / "rewards.jsonl", rec)

        K.run_jobs(base, tok, base_gen, chat, jobs, cfg.inner, K.reward_eval_config(cfg.eval), save, progress=bar.update,
                   done=set(results), race=Race.from_config(cfg.restem, cfg.inner.epochs))
        bar.close()

        # filter and M-step
        by_sample: dict[tuple[str, int], list[float]] = {}
        for r in results.values():
            if r["reward"] is not None:
                by_sample.setdefault((r["passage_id"], r["sample"]), []).append(r["reward"])
        rewards = {key: sum(v) / len(v) for key, v in by_sample.items()}
        kept = select_kept(rewards, cfg)
        gold_by_sample: dict[tuple[str, int], list[float]] = {}
        for r in results.values():
            if r.get("gold_reward") is not None:
                gold_by_sample.setdefault((r["passage_id"], r["sample"]), []).append(r["gold_reward"])
        agreement = reward_agreement(rewards, {k: sum(v) / len(v) for k, v in gold_by_sample.items()},
                                     cfg) if gold_by_sample else None
        prompts = {p.id: K.selfedit_input(tok, p, cfg.selfedit, chat) for p in chosen}
        examples = [TrainExample(samples[pid][j], prompts[pid]) for pid, j, _ in kept]
        (rdir / "sft.jsonl").write_text("".join(json.dumps({"passage_id": pid, "sample": j, "reward": r}) + "\n"
                                                for pid, j, r in kept))
        sft_stats, movement = None, {}
        if examples:
            if generator is None:
                generator = copy.deepcopy(base)
            movement["kept_logprob_before"] = completion_logprob(generator, tok, examples)
            sft_stats = sft(generator, tok, examples, cfg, job_seed(cfg.seed, "sft", rnd))
            movement["kept_logprob_after"] = completion_logprob(generator, tok, examples)
            save_model(generator, tok, rdir / "model")
        vals = list(rewards.values())
        info = {"round": rnd, "reward_questions": cfg.restem.reward_questions, "n_passages": len(chosen), "n_selfedits": sum(len(samples[p.id]) for p in chosen),
                "n_empty": len(empty), "n_scored": len(vals), "n_kept": len(kept),
                "n_raced_out": sum(bool(r.get("raced_out")) for r in results.values()),
                "mean_reward": sum(vals) / len(vals) if vals else None,
                "frac_positive": sum(v > 0 for v in vals) / len(vals) if vals else None,
                "mean_kept_reward": sum(r for _, _, r in kept) / len(kept) if kept else None,
                "reward_sd": sd(vals), "reward_quantiles": _quantiles(vals),
                "model_changed": bool(examples), "sft_tokens": sft_stats["tokens"][0] if sft_stats else 0,
                "sft_truncated": sft_stats["n_truncated"][0] if sft_stats else 0,
                "sft_dropped": sft_stats["n_dropped"][0] if sft_stats else 0,
                # did the M-step move the generator toward what it kept? (mean log-prob per token
                # of the kept self-edits given their prompts, before and after SFT)
                **movement,
                "selfedits": selfedit_stats([c for p in chosen for c in samples[p.id]], tok, cfg.selfedit.template),
                "kept_selfedits": selfedit_stats([samples[pid][j] for pid, j, _ in kept], tok, cfg.selfedit.template),
                "agreement_with_gold": agreement, "seconds": time.time() - t0}
        atomic_write_json(rdir / "done.json", info)
        run.log("round", step=rnd, **{k: v for k, v in info.items() if v is not None})
        print(f"round {rnd}: mean reward {_fmt(info['mean_reward'])} (sd {_fmt(info['reward_sd'])}), kept "
              f"{len(kept)}/{len(vals)}, kept log-prob {_fmt(movement.get('kept_logprob_before'))} -> "
              f"{_fmt(movement.get('kept_logprob_after'))}, distinct-2 {_fmt(info['selfedits']['distinct_2'])}, "
              f"{info['seconds']:.0f} s")
        if agreement:
            print(f"round {rnd}: probe vs gold reward over {agreement['n_selfedits']} self-edits: Spearman within a "
                  f"passage {_fmt(agreement['spearman_within_mean'])} (mean of {agreement['spearman_within_n']}), "
                  f"pooled {_fmt(agreement['spearman_pooled'])}; same self-edits kept on "
                  f"{_fmt((agreement['same_kept'] or {}).get('mean'))} of passages")
    finish(run, cfg.restem.rounds, "unchanged (no self-edit earned a positive reward)", data=counts)
    return run.path
