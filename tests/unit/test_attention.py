"""The short-sequence causal attention (seal/training/attention.py) computes SDPA's attention, and only
takes the calls it covers."""

import pytest
import torch
import torch.nn.functional as F

from seal.config import InnerLoopConfig, LoRAConfig, ModelConfig
from seal.training import attention as A
from seal.training import lora
from seal.training.inner_loop import Speedups, TrainExample, train_adapters
from seal.training.models import load_model

PASSAGE = TrainExample("Velmora\nVelmora is a harbor town on Orlet Island, founded by salt traders in 1820.")
TEXTS = [[TrainExample("Velmora is a harbor town founded by salt traders."), PASSAGE],
         [TrainExample("The pellicant frog eats copper beetles on Orlet Island."), PASSAGE],
         [PASSAGE]]
CFG = InnerLoopConfig(lora=LoRAConfig(rank=4, alpha=8), lr=5e-3, epochs=3, steps="packed", batch_size=3, dtype="bf16")


def _qkv(b=3, h=6, g=2, t=17, d=8, dtype=torch.bfloat16):
    torch.manual_seed(0)
    return [torch.randn(b, n, t, d, dtype=dtype, requires_grad=True) for n in (h, g, g)]


def test_matches_sdpa_with_grouped_heads_forward_and_backward():
    q, k, v = _qkv()
    go = torch.randn(3, 17, 6, 8)
    out, _ = A.short_causal_attention(None, q, k, v, None)
    assert out.shape == (3, 17, 6, 8) and out.dtype == torch.bfloat16
    (out.float() * go).sum().backward()
    got = [x.grad.float().clone() for x in (q, k, v)]
    # reference: the same bf16 inputs in fp32, keys/values repeated per query head
    qf, kf, vf = (x.detach().float().requires_grad_(True) for x in (q, k, v))
    ref = F.scaled_dot_product_attention(qf, kf.repeat_interleave(3, 1), vf.repeat_interleave(3, 1),
                                         is_causal=True).transpose(1, 2)
    (ref * go).sum().backward()
    assert torch.allclose(out.float(), ref, atol=3e-2), float((out.float() - ref).abs().max())
    for a, b in zip(got, (qf.grad, kf.grad, vf.grad)):
        assert float((a - b).norm()) <= 0.03 * float(b.norm()), float((a - b).norm() / b.norm())


def test_causal_no_position_sees_a_later_one():
    q, k, v = _qkv(b=1, t=9)
    out0, _ = A.short_causal_attention(None, q, k, v, None)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[:, :, 5:] += 3.0
    v2[:, :, 5:] -= 2.0
    out1, _ = A.short_causal_attention(None, q, k2, v2, None)
    assert torch.equal(out0[:, :5], out1[:, :5])
    assert not torch.equal(out0[:, 5:], out1[:, 5:])


@pytest.mark.parametrize("case", ["mask", "fp32", "long", "one_token", "dropout"])
def test_calls_it_does_not_cover_go_to_sdpa_unchanged(case):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    t = {"long": A.MAX_TOKENS + 1, "one_token": 1}.get(case, 12)
    q, k, v = _qkv(t=t, dtype=torch.float32 if case == "fp32" else torch.bfloat16)
    mask = torch.ones(1, 1, t, t, dtype=torch.bool).tril() if case == "mask" else None
    dropout = 0.5 if case == "dropout" else 0.0
    assert not A.applies(q, k, mask, dropout, {})

    class M:  # what sdpa_attention_forward reads from the attention module
        num_key_value_groups = 3
        is_causal = True
        training = False

    torch.manual_seed(1)
    got, _ = A.short_causal_attention(M(), q, k, v, mask, dropout=dropout)
    torch.manual_seed(1)
    want, _ = sdpa_attention_forward(M(), q, k, v, mask, dropout=dropout)
    assert torch.equal(got, want)


def test_applies_under_bf16_autocast_to_fp32_queries():
    q, k, v = _qkv(dtype=torch.float32)  # rotary embeddings hand fp32 queries to attention under autocast
    assert not A.applies(q, k, None, 0.0, {})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert A.applies(q, k, None, 0.0, {})


def test_use_short_attention_switches_back_after_an_error(tiny_model_dir):
    model, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError):
        with A.use_short_attention(model):
            assert model.config._attn_implementation == A.NAME
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    with A.use_short_attention(model, enabled=False):
        assert model.config._attn_implementation == "sdpa"


def test_bf16_training_takes_the_matmul_path_and_trains_like_sdpa(tiny_model_dir, monkeypatch):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    calls = {"short": 0}
    covered = A.applies

    def counting(*args):
        ok = covered(*args)
        calls["short"] += ok
        return ok

    monkeypatch.setattr(A, "applies", counting)
    cfg = CFG
    trained = []
    for speed in (Speedups(), Speedups(short_attention=False)):
        lora.attach(model, cfg.lora, 3)
        stats = train_adapters(model, tok, TEXTS, cfg, [1, 2, 3], speed=speed)
        trained.append(([lora.adapter_state(model._seal_lora, i) for i in range(3)], stats["final_loss"]))
        lora.detach(model)
        if speed.short_attention:
            assert calls["short"] > 0  # every layer's forward in every micro-batch
            n_on = calls["short"]
    assert calls["short"] == n_on  # switched off: never called
    assert model.config._attn_implementation == "sdpa"
    (a, la), (b, lb) = trained
    assert la == pytest.approx(lb, abs=0.05)
    for sa, sb in zip(a, b):
        for key in sa:
            if key.endswith("lora_B"):
                assert float(sb[key].norm()) > 0
                assert float((sa[key] - sb[key]).norm()) <= 0.1 * float(sb[key].norm()), key
