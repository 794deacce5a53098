"""Interleaved A/B of self-edit sampling's speed-ups: the workload's self-edit prompts sampled as
`seal train` samples them (pruned decoder, `auto` dtype, SelfEditConfig's temperature and top-p)
by each variant in turn, `--rounds` times:

  before                 nucleus sampling sorts the whole vocabulary every step
  + nucleus candidates   the top-1024 candidates first (generation.NUCLEUS_CANDIDATES)

(results/bench_ab_sampling.json also has a third variant, "+ matmul decode": bf16 decode steps'
attention as matmuls, measured at commit 966cad7 and removed since, as no faster than SDPA.)

Draws with candidates differ from the full sort's (fewer random numbers per draw), so the texts
differ too: tokens/s is counted on what each variant wrote. Also counts how often a row's top
1024 held too little mass (the count costs every variant one top-k per step).

    python bench/ab_sampling.py --rounds 2 --out results/bench_ab_sampling.json
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from seal import knowledge as K
from seal.bench.machine import machine_info
from seal.bench.workload import ab_arguments, ab_model, workload_hash
from seal.config import SelfEditConfig, to_dict
from seal.training import generation
from seal.training.generation import HFGenerator


def main() -> None:
    ap = ab_arguments(__doc__, "results/bench_ab_sampling.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    wl = json.loads(Path(args.workload).read_text())
    model, tok, chat = ab_model(args)
    passages = [K.Passage(p["id"], p["title"], p["context"], []) for p in wl["passages"]]
    se = SelfEditConfig(k=wl["k"])
    gen = HFGenerator(model, tok, decoder="pruned", dtype="auto")
    fallbacks = {"rows": 0, "full_sort": 0}
    draws = generation.nucleus_draws

    def counting(probs, top_p, gens, candidates=None):
        # the count costs one top-k per step; both variants pay it, so the A/B stays fair
        fallbacks["rows"] += len(gens)
        fallbacks["full_sort"] += int((probs.topk(min(1024, probs.shape[-1]), -1).values.sum(-1) <= top_p).sum())
        return draws(probs, top_p, gens, candidates)

    generation.nucleus_draws = counting
    variants = {"before": 0, "+ nucleus candidates": 1024}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for name, k in variants.items():
            generation.NUCLEUS_CANDIDATES = k
            before = dict(fallbacks)
            t = time.perf_counter()
            comps = K.sample_selfedits(gen, tok, chat, passages, se, se.k, args.seed, {}, lambda p, c: None)
            secs = time.perf_counter() - t
            toks = sum(min(se.max_new_tokens, len(tok(c, add_special_tokens=False)["input_ids"]) + 1)
                       for cs in comps.values() for c in cs)
            runs[name].append({"seconds": secs, "tokens": toks, "tokens_per_second": toks / secs,
                               "row_draws": fallbacks["rows"] - before["rows"],
                               "rows_past_1024": fallbacks["full_sort"] - before["full_sort"]})
            print(f"round {r} {name}: {toks} tokens in {secs:.1f} s = {toks / secs:.1f} tokens/s", flush=True)
    best = {n: max(x["tokens_per_second"] for x in v) for n, v in runs.items()}
    out = {"command": "python bench/ab_sampling.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
           "workload": args.workload, "workload_hash": workload_hash(wl), "seed": args.seed,
           "selfedit_config": to_dict(se), "machine": machine_info(args.threads), "runs": runs,
           "best_tokens_per_second": best, "speedup_best_vs_before": {n: b / best["before"] for n, b in best.items()}}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"best tokens/s {best}; vs before {out['speedup_best_vs_before']}; wrote {args.out}")


if __name__ == "__main__":
    main()
