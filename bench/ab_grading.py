"""A/B of `Speedups.share_prefill` on the real model: for workload passages, train the k adapters
once, then grade them (tasks/knowledge.score_rows, the reward's settings) alternately with the
gold answers' log-probs from a forward of their own (transformers' generate + answer_logprobs)
and from the greedy answers' own prefill (the pruned decoder), and compare times, answers and
log-probs. Writes results/bench_ab_grading.json.

    python bench/ab_grading.py --passages 0 1 --rounds 2
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from seal import knowledge as K
from seal.bench.machine import machine_info
from seal.bench.workload import ab_arguments, ab_model, passage_jobs, workload_hash
from seal.config import EvalConfig, InnerLoopConfig
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.inner_loop import Speedups, train_adapters


def main() -> None:
    ap = ab_arguments(__doc__, "results/bench_ab_grading.json")
    ap.add_argument("--passages", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    wl = json.loads(Path(args.workload).read_text())
    model, tok, chat = ab_model(args)
    inner, ev = InnerLoopConfig(), K.reward_eval_config(EvalConfig())
    variants = {"separate forward": Speedups(share_prefill=False), "shared prefill": Speedups()}
    per_passage = []
    for pi in args.passages:
        _, pid, jobs = passage_jobs(args.workload, pi)
        lora.attach(model, inner.lora, len(jobs))
        try:
            train_adapters(model, tok, [j.examples for j in jobs], inner, [j.seed for j in jobs])
            qs, rows = [j.questions for j in jobs], list(range(len(jobs)))
            secs: dict[str, list[float]] = {n: [] for n in variants}
            graded = {}
            for _ in range(args.rounds):
                for name, speed in variants.items():
                    t = time.perf_counter()
                    graded[name] = K.score_rows(model, tok, HFGenerator(model, tok), chat, qs, rows, ev, speed=speed)
                    secs[name].append(time.perf_counter() - t)
        finally:
            lora.detach(model)
        a, b = ([q for p in graded[n] for q in p] for n in variants)
        rec = {"passage_id": pid, "questions": len(a), "seconds": secs,
               "same_answers": sum(x["answer"] == y["answer"] for x, y in zip(a, b)),
               "max_abs_logprob_diff": max(abs(x["logprob"] - y["logprob"]) for x, y in zip(a, b)),
               "separate_over_shared_best": min(secs["separate forward"]) / min(secs["shared prefill"])}
        per_passage.append(rec)
        print(f"passage {pid}: best {min(secs['separate forward']):.2f} s separate, {min(secs['shared prefill']):.2f} s "
              f"shared ({rec['separate_over_shared_best']:.2f}x); same answers {rec['same_answers']}/{len(a)}, "
              f"max |d logprob| {rec['max_abs_logprob_diff']:.1e}", flush=True)
    out = {"command": "python bench/ab_grading.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
           "workload": args.workload, "workload_hash": workload_hash(wl), "seed": wl.get("seed"),
           "inner_loop_config": dataclasses.asdict(inner), "eval_config": dataclasses.asdict(ev),
           "machine": machine_info(args.threads), "passages": per_passage}
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
