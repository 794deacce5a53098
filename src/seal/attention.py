"""Causal self-attention for short training sequences in bf16 on a CPU (`Speedups.short_attention`).

PyTorch's CPU flash-attention kernel is slow in bf16 at the lengths the inner loop trains on
(self-edit lines of 20-150 tokens, passages of ~300-400): on a 2-core AMX Xeon its forward +
backward took 2.7 ms for 5 x 28 tokens and 5.8 ms for 2 x 148 (SmolLM2's 9 query / 3 key-value
heads of 64), where the same attention as three plain matmuls and an fp32 softmax took 0.8 and
2.5 ms; at 375 tokens the flash kernel was faster again (33 vs 41 ms), and in fp32 it was as
fast or faster at every length (`bench/attention_ab.py`). So this path runs only under bf16 on a
CPU and for sequences of at most `MAX_TOKENS`; everything else goes to transformers' SDPA path.

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
