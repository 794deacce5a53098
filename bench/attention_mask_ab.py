"""Interleaved A/B of `Speedups.mask_free` alone: forward + backward of the model body (no
output layer, no LoRA) on right-padded batches, with and without the padding mask.

Also prints the body's achieved GFLOP/s (4 x non-embedding matmul parameters per token), the
ceiling the full inner loop (LoRA, output layer, optimizer) is measured against.

    python bench/attention_mask_ab.py --out results/bench_attention_mask_ab.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seal.config import ModelConfig
from seal.training.inner_loop import _hidden
from seal.training.models import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/bench_attention_mask_ab.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, _ = load_model(ModelConfig(name=args.model))
    for p in model.parameters():
        p.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(True)  # so the backward runs through the body
    body = sum(m.weight.numel() for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings())
    rows = {}
    for shape in [(5, 375), (24, 80)]:  # the benchmark's passage rows; its self-edit lines
        ids = torch.randint(100, 1000, shape)
        attn = torch.ones(shape, dtype=torch.long)
        attn[0, -10:] = 0  # one padded row, as collate builds them
        for _ in range(args.reps):
            for mask_free in (True, False):
                t = time.perf_counter()
                _hidden(model, ids, attn, mask_free).float().pow(2).mean().backward()
                rows.setdefault(f"{shape[0]}x{shape[1]} mask_free={mask_free}", []).append(time.perf_counter() - t)
    out = {"command": "python bench/attention_mask_ab.py", "config": vars(args), "torch": torch.__version__,
           "body_matmul_params": body, "seconds": rows, "results": {}}
    for name, v in rows.items():
        best = min(v[1:]) if len(v) > 1 else v[0]  # the first repeat warms up
        b, t = (int(x) for x in name.split()[0].split("x"))
        out["results"][name] = {"best_seconds": best, "body_gflops": 4 * body * b * t / best / 1e9}
        print(f"{name:<28} best {best:6.2f} s   body {out['results'][name]['body_gflops']:6.1f} GFLOP/s")
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
