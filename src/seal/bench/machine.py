"""What a benchmark measures the machine and the model by: peak and current RSS, the CPU's model
and flags, a measured matmul peak, and the analytic FLOP model of training, scoring and sampling."""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import time
from pathlib import Path


def rss_peak_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def rss_now_mib() -> float | None:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma") if f in have]
    except OSError:
        pass
    return []


def machine_info(threads: int) -> dict:
    import torch
    import transformers
    try:
        import peft
        peft_v = peft.__version__
    except ImportError:
        peft_v = None
    return {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "logical_cpus": os.cpu_count(),
            "torch_threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft_v, "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def matmul_peak(fp32_size: int = 2048, bf16_size: int = 512, reps: int = 5) -> dict:
    """Best GFLOP/s of square matmuls (2 n^3 FLOPs each) in fp32 and bf16, over sizes n, n/2 and
    n/4 and `reps` repeats each (the best size differs between machines and thread counts).

    bf16 starts from a smaller size: on CPUs without AVX-512 BF16 / AMX it is emulated and a
    2048 matmul would take about a minute. "machine" is the better of the two: the physical limit
    whatever dtype one trains in."""
    import torch
    out = {}
    for name, dtype, n0, r in (("fp32", torch.float32, fp32_size, reps), ("bf16", torch.bfloat16, bf16_size, 3)):
        best = {"gflops": 0.0}
        for n in sorted({max(64, n0 // 4), max(64, n0 // 2), n0}):
            g = torch.Generator().manual_seed(0)
            a = torch.randn(n, n, generator=g).to(dtype)
            b = torch.randn(n, n, generator=g).to(dtype)
            a @ b  # warm-up
            secs = math.inf
            for _ in range(r):
                t = time.perf_counter()
                a @ b
                secs = min(secs, time.perf_counter() - t)
            if 2 * n**3 / secs / 1e9 > best["gflops"]:
                best = {"size": n, "reps": r, "best_seconds": secs, "gflops": 2 * n**3 / secs / 1e9}
        out[name] = best
    top = max(("fp32", "bf16"), key=lambda k: out[k]["gflops"])
    out["machine"] = dict(out[top], dtype=top)
    return out


# ----------------------------------------------------------------------------- FLOP model

def model_dims(model) -> dict:
    """Matmul parameters (every nn.Linear weight, the tied lm_head included once as a matmul; the
    embedding lookup is no matmul) and the attention sizes."""
    from torch import nn
    n_lin = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {"matmul_params": int(n_lin), "total_params": int(sum(p.numel() for p in model.parameters())),
            "layers": int(cfg.num_hidden_layers), "attn_dim": int(heads * head_dim)}


def fwd_flops(dims: dict, T: int) -> float:
    """Forward FLOPs of one sequence of T tokens: 2 N per token for the matmuls plus causal
    attention (QK^T and AV: 2 * 2 * d_attn per (query, key) pair, T^2/2 pairs, per layer)."""
    return 2.0 * dims["matmul_params"] * T + 2.0 * dims["layers"] * dims["attn_dim"] * T * T


def sequence_train_flops(dims: dict, T: int) -> float:
    """Training FLOPs of one sequence: forward + backward to the inputs only (frozen base
    weights get no weight gradient): 4 N per token; attention backward needs gradients of both
    of its activation operands, so attention counts 3x its forward. LoRA terms (< 2% here) are
    left out."""
    return train_flops_totals(dims, T, T * T)


def train_flops_totals(dims: dict, tokens: float, sq_tokens: float) -> float:
    """`sequence_train_flops` summed over sequences, from their total tokens and total squared lengths."""
    return 4.0 * dims["matmul_params"] * tokens + 6.0 * dims["layers"] * dims["attn_dim"] * sq_tokens


def gen_flops(dims: dict, prompt_len: int, new_tokens: int) -> float:
    """Greedy generation with a KV cache: the prompt's forward, then one token at a time
    (2 N each plus attention over the context so far)."""
    f = fwd_flops(dims, prompt_len)
    for i in range(new_tokens):
        f += 2.0 * dims["matmul_params"] + 4.0 * dims["layers"] * dims["attn_dim"] * (prompt_len + i)
    return f
