"""Inner-loop sweep and reward study on SQuAD dev passages (issue: "SEAL must learn").

One process loads the model once, samples self-edits once per template, grades the unadapted
model once, and then runs every *arm* (inner-loop settings x training data x seed) over the same
passages, appending one record per update to `<out>/updates.jsonl` (resumable: rerun the same
command and finished updates are skipped). `scripts/inner_sweep_report.py` turns the records
into the tables committed under results/.

Plans:
  sweep    inner-loop settings (epochs, lr, rank, targets, batch) for passage-only and
           implications updates, scored by accuracy gain (containment, F1) and log-prob gain
  rewards  the chosen settings on every self-edit template, each update at two seeds (reward
           noise floor and candidate rewards vs accuracy at the *other* seed), plus the spread
           that batch composition leaves (the same update alone vs beside others)

    .venv/bin/python scripts/inner_sweep.py --plan sweep --data ../shared/data/squad/dev.json \
        --offset 100 --limit 16 --out results-runs/sweep
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from seal import knowledge as K
from seal.config import EvalConfig, InnerLoopConfig, LoRAConfig, ModelConfig, SelfEditConfig, to_dict
from seal.engine.jobs import job_seed, run_inner_jobs
from seal.runs import append_jsonl, atomic_write_json, read_jsonl, versions
from seal.training.generation import HFGenerator
from seal.training.models import load_model, pick_dtype, uses_chat

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def inner(rank=16, alpha=32.0, lr=1e-3, epochs=3, batch=8, targets=None) -> InnerLoopConfig:
    lcfg = LoRAConfig(rank=rank, alpha=alpha)
    if targets:
        lcfg.targets = tuple(targets)
    return InnerLoopConfig(lora=lcfg, lr=lr, epochs=epochs, batch_size=batch)


SWEEP = {  # name -> inner-loop settings
    "r16-e3-lr1e-3": inner(),  # the defaults before this issue
    "r32-e5-lr1e-3": inner(32, 64, epochs=5),
    "r32-e5-lr2e-3": inner(32, 64, lr=2e-3, epochs=5),
    "r32-e10-lr1e-3": inner(32, 64, epochs=10),
}


def plan_arms(plan: str, chosen: str) -> list[dict]:
    if plan == "sweep":
        return [{"arm": f"{name}/{data}", "inner": name, "data": data, "seed": 0}
                for name in SWEEP for data in ("passage", "implications")]
    if plan == "rewards":
        arms = []
        for seed in (0, 1):
            for data in ("passage", "implications", "implications-long", "rewrite", "self-qa"):
                arms.append({"arm": f"{chosen}/{data}/s{seed}", "inner": chosen, "data": data, "seed": seed})
        # batch composition: the implications updates again, each alone (one adapter per batch)
        arms.append({"arm": f"{chosen}/implications/s0/alone", "inner": chosen, "data": "implications", "seed": 0,
                     "alone": True})
        return arms
    raise SystemExit(f"unknown plan {plan!r}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", choices=("sweep", "rewards"), required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--offset", type=int, default=100)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inner", default="r32-e10-lr1e-3", help="the rewards plan's inner-loop settings (a SWEEP name)")
    ap.add_argument("--arms", default="", help="comma-separated arm names to run (default: all of the plan)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    passages = K.select(K.load_passages(args.data)[0], args.limit, args.seed, args.offset)
    arms = plan_arms(args.plan, args.inner)
    if args.arms:
        wanted = set(args.arms.split(","))
        arms = [a for a in arms if a["arm"] in wanted]
    mcfg = ModelConfig()
    atomic_write_json(out / "manifest.json", {
        "plan": args.plan, "argv": vars(args), "data": args.data, "data_sha256": K.file_sha256(args.data),
        "passage_ids": [p.id for p in passages], "model": mcfg.name, "versions": versions(),
        "dtype": str(pick_dtype(args.dtype, torch.device("cpu"))), "torch_threads": torch.get_num_threads(),
        "inner": {name: to_dict(c) for name, c in SWEEP.items()}, "arms": arms})
    model, tok = load_model(mcfg)
    chat = uses_chat(tok, mcfg)
    gen = HFGenerator(model, tok)
    ev = EvalConfig()

    # the unadapted model, graded once
    base = {r["passage_id"]: r["questions"] for r in read_jsonl(out / "base.jsonl")}
    todo = [p for p in passages if p.id not in base]
    if todo:
        for pid, g in K.base_scores(model, tok, gen, chat, todo, ev).items():
            base[pid] = g
            append_jsonl(out / "base.jsonl", {"passage_id": pid, "questions": g})

    # one self-edit per passage and template, sampled once and shared by every arm
    templates = sorted({a["data"] for a in arms} - {"passage"})
    selfedits: dict[str, dict[str, list[str]]] = {}
    saved = read_jsonl(out / "selfedits.jsonl")
    for t in templates:
        done = {r["passage_id"]: r["completions"] for r in saved if r["template"] == t}
        selfedits[t] = K.sample_selfedits(
            gen, tok, chat, passages, SelfEditConfig(template=t), 1, job_seed(args.seed, "selfedit", t), done,
            lambda p, c, t=t: append_jsonl(out / "selfedits.jsonl", {"template": t, "passage_id": p.id, "completions": c}))

    finished = {r["key"] for r in read_jsonl(out / "updates.jsonl")}
    for arm in arms:
        cfg = copy.deepcopy(SWEEP[arm["inner"]])
        cfg.dtype = args.dtype
        if arm.get("alone"):
            cfg.parallel_adapters = 1
        jobs = []
        for p in passages:
            items = [] if arm["data"] == "passage" else K.parse_selfedit(selfedits[arm["data"]][p.id][0], arm["data"])
            jobs.append(K.Job(f"{arm['arm']}/{p.id}", [p.id], K.training_examples(p, items, True), p.questions,
                              job_seed(args.seed, p.id, arm["seed"]), group=arm["arm"]))
        if all(j.key in finished for j in jobs):
            continue
        t0 = time.time()

        def save(job, res, arm=arm):
            pid = job.passage_ids[0]
            bm = K.mean_metrics(base[pid])
            rec = {"key": job.key, **arm, "passage_id": pid, "n_items": len(job.examples) - 1,
                   "metrics": res["metrics"], "gain": {m: res["metrics"][m] - bm[m] for m in res["metrics"]},
                   "questions": res["questions"], "train": res["train"], "seconds": res["seconds"],
                   "train_seconds": res["train_seconds"]}
            append_jsonl(out / "updates.jsonl", rec)

        run_inner_jobs(K.QAInnerLoop(cfg, ev), model, tok, gen, chat, jobs, save, done=finished)
        print(f"{arm['arm']}: {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
