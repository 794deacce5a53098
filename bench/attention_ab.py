"""SDPA's CPU flash kernel against seal's matmul attention (seal/training/attention.py) at the inner loop's
sequence lengths, forward + backward, SmolLM2's heads (9 query, 3 key-value, 64 wide), bf16
inputs (the matmul path is timed past its cut-off too, to show where the cut-off lies; it never
runs in fp32); then, on the model itself, how far each bf16 path's final hidden states are from fp32.
Writes results/bench_attention_ab.json.

    python bench/attention_ab.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seal.bench.machine import machine_info
from seal.config import ModelConfig
from seal.training import attention as A
from seal.training.models import load_model

SHAPES = [(5, 28), (2, 148), (4, 200), (4, 256), (4, 300), (5, 375)]  # (rows, tokens)


def _best_ms(fn, reps: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def kernel_times(dtype) -> list[dict]:
    out = []
    for b, t in SHAPES:
        torch.manual_seed(0)
        q = torch.randn(b, 9, t, 64, dtype=dtype, requires_grad=True)
        k, v = (torch.randn(b, 3, t, 64, dtype=dtype, requires_grad=True) for _ in range(2))
        go = torch.randn(b, 9, t, 64, dtype=dtype)

        def flash():
            F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True).backward(go)

        def matmuls():
            o, _ = A.short_causal_attention(None, q, k, v, None)
            o.transpose(1, 2).backward(go)

        rec = {"rows": b, "tokens": t, "dtype": str(dtype).removeprefix("torch."), "sdpa_ms": _best_ms(flash)}
        saved = A.MAX_TOKENS
        A.MAX_TOKENS = max(A.MAX_TOKENS, t)
        try:
            rec["matmul_ms"] = _best_ms(matmuls)
        finally:
            A.MAX_TOKENS = saved
        out.append(rec)
        print(f"{rec['dtype']:8s} {b} x {t:3d} tokens: sdpa {rec['sdpa_ms']:6.2f} ms, matmul "
              f"{rec['matmul_ms']:6.2f} ms", flush=True)
    return out


def hidden_state_error(model_name: str) -> dict:
    model, _ = load_model(ModelConfig(name=model_name))
    torch.manual_seed(0)
    ids = torch.randint(0, 1000, (4, 200))
    rel = lambda a, b: float((a - b).norm() / b.norm())  # noqa: E731
    with torch.no_grad():
        ref = model.model(input_ids=ids).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sdpa = model.model(input_ids=ids).last_hidden_state.float()
            with A.use_short_attention(model):
                short = model.model(input_ids=ids).last_hidden_state.float()
    out = {"batch": [4, 200], "bf16_sdpa_vs_fp32": rel(sdpa, ref), "bf16_matmul_vs_fp32": rel(short, ref),
           "matmul_vs_sdpa": rel(short, sdpa)}
    print(f"final hidden states, relative distance to fp32: bf16 sdpa {out['bf16_sdpa_vs_fp32']:.4f}, "
          f"bf16 matmul attention {out['bf16_matmul_vs_fp32']:.4f}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default="results/bench_attention_ab.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = {"command": "python bench/attention_ab.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
           "seed": 0, "machine": machine_info(args.threads), "max_tokens": A.MAX_TOKENS,
           "kernels": kernel_times(torch.bfloat16),
           "hidden_states": hidden_state_error(args.model)}
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
