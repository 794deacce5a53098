"""Interleaved A/B of the inner loop's speed-ups, in one process: every variant trains the same
k adapters (one workload passage, default InnerLoopConfig) once per round, rounds repeat, and
the minimum per variant is reported. Interleaving puts the machine's noise on every variant
alike, which `seal bench inner-loop --ablate` (one subprocess per variant, run one after the
other) cannot. Peak RSS is not measured here (one process); see the --ablate table for it.

    python bench/ab_inner_loop.py --passage 0 --rounds 2 --out results/bench_ab_speedups.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from seal.bench.inner_loop import speedup_variants
from seal.bench.machine import machine_info
from seal.bench.workload import ab_arguments, ab_model, passage_jobs, workload_hash
from seal.config import InnerLoopConfig, to_dict
from seal.training import lora
from seal.training.inner_loop import Speedups, train_adapters
from seal.training.models import pick_dtype


def variants() -> dict[str, tuple[int, Speedups, str]]:
    """name -> (parallel adapters, switches, inner.dtype)."""
    out = {name: (pa, Speedups(**off), "auto") for name, (pa, off) in speedup_variants().items()}
    out["all on, one adapter at a time"] = (1, Speedups(), "auto")
    out["all on, fp32"] = (5, Speedups(), "fp32")  # what bf16 buys where `auto` picks it (AVX-512 BF16/AMX)
    return out


def main() -> None:
    ap = ab_arguments(__doc__, "results/bench_ab_speedups.json", workload="bench/workload.json")
    ap.add_argument("--passage", type=int, default=0, help="workload passage whose k self-edits are trained")
    ap.add_argument("--variants", nargs="*", default=[], metavar="NAME",
                    help="only these variants (names as printed, e.g. 'all off'); 'all on' is always run. A name that "
                         "starts with '-' goes as --variants=-fuse_lora_a (argparse reads a lone -x as an option)")
    args = ap.parse_args()
    chosen = {n: v for n, v in variants().items() if not args.variants or n in args.variants or n == "all on"}
    unknown = set(args.variants) - set(variants())
    if unknown:
        ap.error(f"unknown variant(s) {sorted(unknown)}; known: {list(variants())}")
    wl, pid, jobs = passage_jobs(args.workload, args.passage)
    model, tok, _ = ab_model(args)
    inner = InnerLoopConfig()
    times: dict[str, list[float]] = {}
    tokens = 0
    for r in range(args.rounds):
        for name, (pa, speed, dtype) in chosen.items():
            t = time.perf_counter()
            tokens = 0
            for s in range(0, len(jobs), pa):
                group = jobs[s : s + pa]
                lora.attach(model, inner.lora, len(group))
                try:
                    st = train_adapters(model, tok, [j.examples for j in group], dataclasses.replace(inner, dtype=dtype),
                                        [j.seed for j in group], speed=speed)
                finally:
                    lora.detach(model)
                tokens += sum(st["tokens"])
            times.setdefault(name, []).append(time.perf_counter() - t)
            print(f"round {r + 1}  {name:<32} {times[name][-1]:6.1f} s", flush=True)
    best_on = min(times["all on"])
    rows = {n: {"seconds": v, "best": min(v), "train_tokens_per_s": tokens / min(v), "vs_all_on": min(v) / best_on}
            for n, v in times.items()}
    m = machine_info(args.threads)
    print(f"\nmachine: {m['cpu_model']}, flags {' '.join(m['cpu_flags'])}; inner.dtype auto = "
          f"{pick_dtype('auto', torch.device('cpu'))}")
    print(f"{'variant':<32}{'best s':>8}{'tok/s':>8}{'time vs all on':>16}")
    for n, x in rows.items():
        print(f"{n:<32}{x['best']:>8.1f}{x['train_tokens_per_s']:>8.0f}{x['vs_all_on']:>15.2f}x")
    out = {"command": "python bench/ab_inner_loop.py", "config": vars(args), "seed": wl["seed"],
           "workload_hash": workload_hash(wl), "workload_sha256": hashlib.sha256(Path(args.workload).read_bytes()).hexdigest(),
           "data_sha256": wl["data_sha256"], "passage_id": pid, "selfedits": len(jobs), "inner_loop_config": to_dict(inner),
           "machine": machine_info(args.threads), "auto_dtype": str(pick_dtype("auto", torch.device("cpu"))),
           "torch": torch.__version__, "variants": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
