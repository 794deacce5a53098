"""A/B of the fused head's scratch buffers (inner_loop._buffer): the head's forward as it was
before them (fresh [chunk x vocab] logits and log-prob tensors per chunk, `_fresh_forward`
below) against the current one, interleaved in one process, each training one workload
passage's k adapters per round. Writes results/bench_ab_head_buffers.json.

    python bench/ab_head_buffers.py --passage 0 --rounds 3
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seal.bench.machine import machine_info
from seal.bench.workload import ab_arguments, ab_model, passage_jobs, workload_hash
from seal.config import InnerLoopConfig
from seal.training import inner_loop as IL
from seal.training import lora


def _fresh_forward(ctx, h, weight, bias, tgt, chunk, workspace):
    """The fused head's forward before the scratch buffers (workspace unused)."""
    nll = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    grad = torch.empty(h.shape, dtype=torch.float32, device=h.device)
    for i in range(0, h.shape[0], chunk):
        hc = h[i : i + chunk].to(weight.dtype)
        logp = torch.log_softmax(F.linear(hc, weight, bias), -1, dtype=torch.float32)
        tc = tgt[i : i + chunk].unsqueeze(-1)
        nll[i : i + chunk] = -logp.gather(-1, tc).squeeze(-1)
        p = logp.exp_()
        p.scatter_add_(-1, tc, torch.full_like(tc, -1.0, dtype=p.dtype))
        grad[i : i + chunk] = (p.to(weight.dtype) @ weight).float()
    ctx.save_for_backward(grad)
    ctx.h_dtype = h.dtype
    return nll


def main() -> None:
    ap = ab_arguments(__doc__, "results/bench_ab_head_buffers.json", rounds=3)
    ap.add_argument("--passage", type=int, default=0)
    args = ap.parse_args()
    wl, pid, jobs = passage_jobs(args.workload, args.passage)
    model, tok, _ = ab_model(args)
    inner = InnerLoopConfig()
    forwards = {"buffers": IL._LinearCrossEntropy.forward, "fresh": staticmethod(_fresh_forward)}
    secs: dict[str, list[float]] = {n: [] for n in forwards}
    losses = {}
    try:
        for r in range(args.rounds):
            for name, fwd in forwards.items():
                IL._LinearCrossEntropy.forward = fwd
                lora.attach(model, inner.lora, len(jobs))
                t = time.perf_counter()
                stats = IL.train_adapters(model, tok, [j.examples for j in jobs], inner, [j.seed for j in jobs])
                secs[name].append(time.perf_counter() - t)
                losses[name] = stats["final_loss"]
                lora.detach(model)
                print(f"round {r + 1}  {name:8s} {secs[name][-1]:.1f} s", flush=True)
    finally:
        IL._LinearCrossEntropy.forward = forwards["buffers"]
    ratio = [f / b for f, b in zip(secs["fresh"], secs["buffers"])]
    out = {"command": "python bench/ab_head_buffers.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
           "workload": args.workload, "workload_hash": workload_hash(wl), "passage_id": pid, "seed": wl.get("seed"),
           "inner_loop_config": dataclasses.asdict(inner), "machine": machine_info(args.threads), "seconds": secs,
           "fresh_over_buffers_per_round": ratio,
           "fresh_over_buffers_best": min(secs["fresh"]) / min(secs["buffers"]),
           "same_final_losses": losses["fresh"] == losses["buffers"]}
    print(f"fresh / buffers: best {out['fresh_over_buffers_best']:.3f}x, per round {[round(x, 3) for x in ratio]}; "
          f"same final losses: {out['same_final_losses']}")
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
