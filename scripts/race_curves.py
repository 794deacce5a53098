"""Choose the racing rule (seal/engine/racing.py) on recorded learning curves (issue: "A ReSTEM round in
minutes").

collect   for each passage, its k self-edits (read from a `seal train` run's samples.jsonl) are
          trained side by side at the inner-loop defaults, graded after every epoch (the reward's
          metric with greedy answers, and the gold-answer log-prob; `--rung-score logprob`: the
          log-prob alone, no generation, about half the cost), nobody stopped; one record per
          self-edit with its whole curve is appended to <out>/curves.jsonl (resumable). The final
          epoch is always graded in full, as exhaustive evaluation grades it.
simulate  replays every candidate rule (first rung, eta, rung score) on the curves: with common
          seeds a survivor's final reward is the recorded one, so a rule differs from exhaustive
          evaluation only by whom it stops. Per rule: how often the kept self-edit (best-positive,
          as ReSTEM keeps) is exhaustive evaluation's, the kept reward's mean loss, and the share
          of training epochs and rung gradings it spends. Writes --report (JSON).

    python scripts/race_curves.py collect --run results-runs/labelfree-r1 --data ../shared/data/squad/dev.json \
        --offset 120 --limit 16 --out results-runs/race-curves
    python scripts/race_curves.py simulate --out results-runs/race-curves --report results/race_curves.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from seal import knowledge as K
from seal.config import (
    EvalConfig,
    InnerLoopConfig,
    ModelConfig,
    SelfEditConfig,
    to_dict,
)
from seal.engine.jobs import job_seed, run_inner_jobs
from seal.engine.racing import Race, rung_epochs, score_key, survivors
from seal.runs import append_jsonl, atomic_write_json, read_jsonl, versions


def collect(args) -> None:
    import torch

    from seal.training.generation import HFGenerator
    from seal.training.models import load_model, uses_chat

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    passages, _ = K.load_selection(argparse.Namespace(path=args.data, limit=args.limit, offset=args.offset), args.seed)
    samples = {r["passage_id"]: r["completions"] for r in read_jsonl(Path(args.run) / "rounds/round_1/samples.jsonl")}
    passages = [p for p in passages if p.id in samples]
    inner, ev, se = InnerLoopConfig(), EvalConfig(), SelfEditConfig(template=args.template)
    atomic_write_json(out / "config.json", {"run": args.run, "data": args.data, "data_sha256": K.file_sha256(args.data),
                                            "offset": args.offset, "limit": args.limit, "seed": args.seed,
                                            "passages": [p.id for p in passages], "inner": to_dict(inner),
                                            "eval": to_dict(ev), "template": args.template, "rung_score": args.rung_score,
                                            "versions": versions()})
    model, tok = load_model(ModelConfig())
    chat = uses_chat(tok, ModelConfig())
    gen = HFGenerator(model, tok)
    ecfg = K.reward_eval_config(ev)
    have_base = {r["passage_id"] for r in read_jsonl(out / "base.jsonl")}
    for pid, g in K.base_scores(model, tok, gen, chat, [p for p in passages if p.id not in have_base], ecfg).items():
        append_jsonl(out / "base.jsonl", {"passage_id": pid, "metrics": K.mean_metrics(g)})
    done = {r["key"] for r in read_jsonl(out / "curves.jsonl")}
    jobs = []
    for p in passages:
        for j, c in enumerate(samples[p.id]):
            items = K.parse_selfedit(c, se.template)
            if items:  # unparsable self-edits get no reward in ReSTEM either
                jobs.append(K.Job(f"{p.id}/{j}", [p.id], K.training_examples(p, items, se.include_passage),
                                  p.questions, job_seed(args.seed, "inner", 1, p.id, 0), group=p.id))
    every = Race(rungs=tuple(range(1, inner.epochs)), eta=1.0, score=args.rung_score)  # eta 1: nobody is stopped

    def save(job, res):
        pid, j = job.key.split("/")
        append_jsonl(out / "curves.jsonl", {"key": job.key, "passage_id": pid, "sample": int(j),
                                            "curve": res["race"]["rungs"] + [{"epoch": inner.epochs,
                                                                               "metrics": res["metrics"]}],
                                            "tokens": res["train"]["tokens"], "seconds": res["seconds"]})
        print(f"{job.key}: {res['metrics']}", flush=True)

    run_inner_jobs(K.QAInnerLoop(inner, ecfg, race=every), model, tok, gen, chat, jobs, save, done=done)


def exhaustive_keep(final: dict[int, float]) -> int | None:
    """ReSTEM's best-positive filter over one passage's rewards (first best on ties; None: none > 0)."""
    best = None
    for j in sorted(final):
        if final[j] > 0 and (best is None or final[j] > final[best]):
            best = j
    return best


GRADE_GEN, GRADE_LOGPROB = 1.8, 0.15
"""Cost of grading one self-edit, in epochs of its training: with greedy answers (containment)
and log-prob only. From `seal bench inner-loop` (results/bench_inner_loop.md): 5 epochs took
~4.5 s of an evaluation's 6.7 s, answer generation added 2.2 s, the log-prob pass ~0.2 s."""


def simulate_rule(curves: dict[str, dict[int, list[dict]]], base: dict[str, dict], reward: str, epochs: int,
                  first: int, eta: float, score: str) -> dict:
    rungs = rung_epochs(first, eta, epochs)
    same, loss, trained, full, gradings, per_passage = 0, [], 0, 0, 0, []
    for pid, by_sample in curves.items():
        b = base[pid][reward]
        final = {j: c[-1]["metrics"][reward] - b for j, c in by_sample.items()}
        alive = sorted(by_sample)
        stop = {j: epochs for j in alive}
        for e in rungs:
            if len(alive) < 2:
                break
            gradings += len(alive)
            keys = {j: score_key(by_sample[j][e - 1]["metrics"], score, reward) for j in alive}
            kept = survivors(keys, eta)
            for j in alive:
                if j not in kept:
                    stop[j] = e
            alive = kept
        ex = exhaustive_keep(final)
        rc = exhaustive_keep({j: final[j] for j in alive})
        same += ex == rc
        loss.append((final[ex] if ex is not None else 0.0) - (final[rc] if rc is not None else 0.0))
        trained += sum(stop.values())
        full += epochs * len(by_sample)
        per_passage.append({"passage_id": pid, "exhaustive": ex, "racing": rc, "stopped_at": stop})
    n = len(curves)
    n_se = sum(len(c) for c in curves.values())
    finals = sum(1 for p in per_passage for e in p["stopped_at"].values() if e == epochs)
    cost = trained + gradings * (GRADE_GEN if score == "reward" and reward != "logprob" else GRADE_LOGPROB) \
        + finals * (GRADE_GEN if reward != "logprob" else GRADE_LOGPROB)
    full_cost = full + n_se * (GRADE_GEN if reward != "logprob" else GRADE_LOGPROB)
    return {"first": first, "eta": eta, "score": score, "rungs": list(rungs), "passages": n,
            "cost_share": cost / full_cost,
            "same_kept": same / n, "kept_reward_loss_mean": sum(loss) / n, "kept_reward_loss_max": max(loss),
            "epoch_share": trained / full, "rung_gradings_per_selfedit": gradings / sum(len(c) for c in curves.values()),
            "per_passage": per_passage}


def noise_floor(curves: dict[str, dict[int, list[dict]]], base: dict[str, dict], reward: str) -> dict:
    """What a passage's best-positive pick is worth against its runner-up: how far apart the
    rewards a choice is made between are (the reward's own resolution at this model)."""
    gaps, ties = [], 0
    for pid, by_sample in curves.items():
        final = sorted((c[-1]["metrics"][reward] - base[pid][reward] for c in by_sample.values()), reverse=True)
        if len(final) > 1:
            gaps.append(final[0] - final[1])
            ties += final[0] == final[1]
    return {"best_minus_second_mean": sum(gaps) / len(gaps) if gaps else None,
            "passages_with_tied_best": ties, "passages": len(gaps)}


def simulate(args) -> None:
    out = Path(args.out)
    cfg = json.loads((out / "config.json").read_text())
    reward, epochs = cfg["eval"]["reward"], cfg["inner"]["epochs"]
    base = {r["passage_id"]: r["metrics"] for r in read_jsonl(out / "base.jsonl")}
    curves: dict[str, dict[int, list[dict]]] = {}
    for r in read_jsonl(out / "curves.jsonl"):
        curves.setdefault(r["passage_id"], {})[r["sample"]] = r["curve"]
    scores = ("reward", "logprob") if cfg.get("rung_score", "reward") == "reward" else ("logprob",)
    rules = [simulate_rule(curves, base, reward, epochs, f, eta, sc)
             for f, eta, sc in itertools.product((1, 2, 3), (1.5, 2.0, 3.0, 5.0), scores)]
    rules = [r for r in rules if r["rungs"]]
    # Spearman of each rung's ranking with the final reward, within passages (how early the order settles)
    from seal.stats import spearman

    settle = {}
    for e in range(1, epochs):
        for sc in scores:
            rhos = []
            for by_sample in curves.values():
                js = sorted(by_sample)
                a = [score_key(by_sample[j][e - 1]["metrics"], sc, reward)[0] for j in js]
                b = [by_sample[j][-1]["metrics"][reward] for j in js]
                if (rho := spearman(a, b)) is not None:
                    rhos.append(rho)
            settle[f"epoch{e}/{sc}"] = {"spearman_mean": sum(rhos) / len(rhos) if rhos else None, "n": len(rhos)}
    report = {"config": cfg, "reward": reward, "epochs": epochs, "passages": len(curves),
              "selfedits": sum(len(c) for c in curves.values()), "noise": noise_floor(curves, base, reward),
              "rank_settling": settle,
              "rules": sorted(rules, key=lambda r: (-r["same_kept"], r["epoch_share"]))}
    atomic_write_json(Path(args.report), report)
    print(f"{len(curves)} passages, {report['selfedits']} self-edits; noise {report['noise']}")
    for k, v in settle.items():
        print(f"  rank vs final at {k}: {v['spearman_mean']}")
    print(f"{'first':>5} {'eta':>4} {'score':>8} {'rungs':>10} {'same':>6} {'loss':>7} {'epochs':>7} {'gradings':>8} "
          f"{'cost':>6}")
    for r in report["rules"]:
        print(f"{r['first']:>5} {r['eta']:>4} {r['score']:>8} {r['rungs']!s:>10} {r['same_kept']:>6.3f} "
              f"{r['kept_reward_loss_mean']:>7.3f} {r['epoch_share']:>7.3f} {r['rung_gradings_per_selfedit']:>8.2f} "
              f"{r['cost_share']:>6.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--run", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--offset", type=int, default=0)
    c.add_argument("--limit", type=int, default=16)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--template", default="implications")
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--rung-score", choices=("reward", "logprob"), default="reward",
                   help="what every rung grades: the reward's metric and the log-prob, or the log-prob alone")
    c.add_argument("--out", required=True)
    s = sub.add_parser("simulate")
    s.add_argument("--out", required=True)
    s.add_argument("--report", required=True)
    args = ap.parse_args()
    collect(args) if args.cmd == "collect" else simulate(args)


if __name__ == "__main__":
    main()
