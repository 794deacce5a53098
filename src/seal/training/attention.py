"""Causal self-attention for short training sequences in bf16 on a CPU (`Speedups.short_attention`).

PyTorch's CPU flash-attention kernel is slow in bf16 at the lengths the inner loop trains on
(self-edit lines of 20-150 tokens, passages of ~300-400). On a 2-core AMX Xeon, forward +
backward with SmolLM2's heads (9 query, 3 key-value, 64 wide) on bf16 inputs
(bench/attention_ab.py, results/bench_attention_ab.json) took 2.6 ms for 5 x 28 tokens, 5.1 ms
for 2 x 148 and 10.3 ms for 4 x 200, where the same attention as three plain matmuls and an fp32
softmax took 0.9, 3.9 and 6.5 ms; from 256 tokens on the flash kernel was faster in isolation
(10.8 against 14.4 ms at 4 x 256, 27.8 against 44.2 at 5 x 375). In the inner loop itself (fp32
queries under autocast), the cut-off at 320 tokens gained 1.09x best of 3 on one passage's update
(per round 1.00-1.09x; results/bench_ab_short_attention.json), and a cut-off at 200 1.04x best of
3 (per round 0.92-1.04x; results/bench_ab_short_attention_cut200.json): both within the machine's
noise per round, so `MAX_TOKENS` stays at the better-measured 320 until a longer A/B decides. This path runs only under bf16 on a CPU; everything else goes to
transformers' SDPA path. On SmolLM2 the final hidden states of a 4 x 200 batch are 0.57% from
fp32 with it, 0.53% with bf16 SDPA. Decode steps (one query against a KV cache) stay on SDPA: the
same stacked-heads matmul for them changed bf16 self-edit sampling by +8% and -1% in two
interleaved rounds (results/bench_ab_sampling.json, "+ matmul decode", code at commit 966cad7),
no gain worth a second path.

For query heads grouped over key-value heads (GQA, h = g * r + i uses key-value head g), the r
query heads of a group are stacked along the rows, so each group is one matmul against its own
keys, with no repeated key/value copies:

    S_g = [Q_{g,0}; ...; Q_{g,r-1}] K_g^T * scale      [r T, T], causal mask per stacked block
    O_g = softmax_fp32(S_g) V_g                          (probabilities rounded to bf16 for the matmul)

The result equals SDPA's up to rounding: the scores S are rounded to bf16 before the fp32 softmax
(the flash kernel keeps them in fp32), an error of the same size as the rounding of Q and K
themselves to bf16, which both paths share.
"""

from __future__ import annotations

import contextlib

import torch

NAME = "seal_short_causal"
MAX_TOKENS = 320
"""Longest sequence (the padded micro-batch length) that takes the matmul path."""

_masks: dict[tuple, torch.Tensor] = {}


def _mask(r: int, t: int, device) -> torch.Tensor:
    """[r t, t] True above the diagonal of every stacked t x t block (the positions to hide)."""
    key = (r, t, str(device))
    m = _masks.get(key)
    if m is None:
        if len(_masks) > 64:
            _masks.clear()
        m = _masks[key] = torch.ones(t, t, dtype=torch.bool, device=device).triu(1).repeat(r, 1)
    return m


def _low_precision(query: torch.Tensor) -> bool:
    """bf16 inputs, or bf16 autocast (where rotary embeddings hand fp32 queries to attention and
    SDPA runs on their bf16 casts)."""
    return query.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def applies(query: torch.Tensor, key: torch.Tensor, attention_mask, dropout: float, kwargs: dict) -> bool:
    """Whether a call is plain causal self-attention that the matmul path covers."""
    t = query.shape[2]
    return (attention_mask is None and query.device.type == "cpu" and _low_precision(query)
            and 1 < t <= MAX_TOKENS and key.shape[2] == t and not dropout
            and query.shape[1] % key.shape[1] == 0 and kwargs.get("is_causal", True) is not False
            and kwargs.get("softcap") is None and kwargs.get("position_bias") is None
            and kwargs.get("sliding_window") is None and kwargs.get("s_aux") is None)


def short_causal_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                           scaling: float | None = None, **kwargs):
    """A transformers attention function (AttentionInterface): query [b, h, t, d], key/value
    [b, g, t, d] -> ([b, t, h, d], None). Calls it does not cover go to SDPA unchanged."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not applies(query, key, attention_mask, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    b, h, t, d = query.shape
    g = key.shape[1]
    r = h // g
    scale = d ** -0.5 if scaling is None else scaling
    lowp = torch.bfloat16
    s = (query * scale).to(lowp).reshape(b, g, r * t, d) @ key.to(lowp).transpose(-1, -2)
    s = s.masked_fill_(_mask(r, t, query.device), float("-inf"))
    p = torch.softmax(s, -1, dtype=torch.float32).to(lowp)
    out = (p @ value.to(lowp)).reshape(b, h, t, d)
    return out.transpose(1, 2).contiguous(), None


_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, short_causal_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


@contextlib.contextmanager
def use_short_attention(model, enabled: bool = True):
    """Within the block, the model's attention layers call `short_causal_attention` (which hands
    whatever it does not cover to SDPA). A no-op for models not on transformers' SDPA path."""
    config = getattr(model, "config", None)
    old = getattr(config, "_attn_implementation", None)
    if not enabled or old != "sdpa":
        yield
        return
    _register()
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = old
