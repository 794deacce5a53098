"""Each inner-loop speed-up computes what the plain path computes (up to float summation order)."""

import dataclasses

import pytest
import torch

from seal.config import InnerLoopConfig, LoRAConfig, ModelConfig
from seal.training import lora
from seal.training.inner_loop import (
    Speedups,
    TrainExample,
    _AdapterAdamW,
    _hidden,
    answer_logprobs,
    collate,
    head_nll,
    right_padded,
    tokenize_examples,
    train_adapters,
)
from seal.training.models import load_model

PASSAGE = TrainExample("Velmora\nVelmora is a harbor town on Orlet Island, founded by salt traders in 1820.")
TEXTS = [  # each self-edit's data ends with the same passage, as SEAL trains on both
    [TrainExample("Velmora is a harbor town founded by salt traders."), TrainExample("The lighthouse is the Ambertine Tower."),
     PASSAGE],
    [TrainExample("The pellicant frog eats copper beetles on Orlet Island."), PASSAGE],
    [PASSAGE, PASSAGE],  # the same sequence twice in one adapter's batch
]
CFG = InnerLoopConfig(lora=LoRAConfig(rank=4, alpha=8), lr=5e-3, epochs=3, steps="packed", batch_size=3, dtype="fp32")


def test_fused_head_matches_checkpointed_cross_entropy():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=True).requires_grad_(False)
    h = torch.randn(37, 16, requires_grad=True)
    tgt = torch.randint(0, 50, (37,))
    w = torch.rand(37)
    outs = []
    for fused in (True, False):
        h.grad = None
        nll = head_nll(head, h, tgt, chunk=8, fused=fused)  # several chunks, a ragged last one
        (nll * w).sum().backward()
        outs.append((nll.detach(), h.grad.clone()))
    ref = torch.nn.functional.cross_entropy(head(h.detach()), tgt, reduction="none")
    assert torch.allclose(outs[0][0], ref, atol=1e-5)
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-5)
    assert outs[0][1].abs().sum() > 0


def test_fused_head_falls_back_for_a_trainable_head():
    head = torch.nn.Linear(8, 20)  # weight requires grad: the fused path would drop its gradient
    h, tgt = torch.randn(5, 8), torch.randint(0, 20, (5,))
    head_nll(head, h, tgt).sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def test_mask_free_hidden_states_equal_masked_at_real_tokens(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    rows = [(0, t) for t in tokenize_examples(tok, TEXTS[0] + TEXTS[1][:1], CFG)]
    ids, attn, _, _ = collate(rows, tok.pad_token_id, "cpu")
    assert right_padded(attn) and not bool(attn.all())  # a real padded batch
    assert not right_padded(torch.tensor([[0, 1, 1]]))
    with torch.no_grad():
        free, masked = _hidden(model, ids, attn, True), _hidden(model, ids, attn, False)
    real = attn.bool()
    assert torch.allclose(free[real], masked[real], atol=1e-5)


def test_foreach_adamw_equals_per_tensor_loop():
    torch.manual_seed(0)
    results = []
    for foreach in (True, False):
        torch.manual_seed(0)
        params = [[torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))] for _ in range(2)]
        opt = _AdapterAdamW(params, lr=1e-2, weight_decay=0.1, max_grad_norm=0.5, foreach=foreach)
        norms = []
        for step in range(4):
            for a, group in enumerate(params):
                for p in group:
                    p.grad = torch.randn_like(p) * (step + 1)
            norms.append(opt.step([True, step % 2 == 0]))
        results.append((params, norms))
    (pa, na), (pb, nb) = results
    assert [x for s in na for x in s] == pytest.approx([x for s in nb for x in s], rel=1e-6)
    for ga, gb in zip(pa, pb):
        for x, y in zip(ga, gb):
            assert torch.allclose(x, y, atol=1e-6)


@pytest.mark.parametrize("off", [f.name for f in dataclasses.fields(Speedups)])
def test_training_with_each_speedup_off_gives_the_same_adapters(tiny_model_dir, off):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    trained = []
    for speed in (Speedups(), Speedups(**{off: False})):
        lora.attach(model, CFG.lora, 3)
        stats = train_adapters(model, tok, TEXTS, CFG, [1, 2, 3], speed=speed)
        trained.append(([lora.adapter_state(model._seal_lora, i) for i in range(3)], stats["final_loss"],
                        sum(stats["executed_lens"])))
        lora.detach(model)
    (a, la, ea), (b, lb, eb) = trained
    if off == "share_first_step":  # the passage ran once in the first step instead of four times
        n_passage = len(tokenize_examples(tok, [PASSAGE], CFG)[0].ids)
        assert eb - ea == 3 * n_passage
    assert la == pytest.approx(lb, abs=1e-4)
    for sa, sb in zip(a, b):
        for k in sa:
            assert torch.allclose(sa[k], sb[k], atol=1e-4), k
    assert any(not torch.equal(a[0][k], torch.zeros_like(a[0][k])) for k in a[0] if k.endswith("lora_B"))


def test_mask_free_scoring_equals_masked(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    prompts = ["Q: where is Velmora?\nA:", "Q: a much longer question about the pellicant frog of Orlet?\nA:"]
    answers = ["a harbor", "copper beetles and more"]
    a = answer_logprobs(model, tok, prompts, answers, [-1, -1], mask_free=True)
    b = answer_logprobs(model, tok, prompts, answers, [-1, -1], mask_free=False)
    assert a == pytest.approx(b, abs=1e-5)


def test_layers_reading_one_input_are_grouped_for_the_fused_a_product(tiny_model_dir):
    model, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    state = lora.attach(model, LoRAConfig(rank=4, alpha=8), 2)
    try:
        groups = {id(layer.shared): [n.rsplit(".", 1)[1] for n, m in state.layers.items() if m.shared is layer.shared]
                  for layer in state.layers.values() if layer.shared is not None}
        assert sorted(map(tuple, groups.values())) == [("gate_proj", "up_proj")] * 2 + [("q_proj", "k_proj", "v_proj")] * 2
        assert all(state.layers[n].shared is None for n in state.layers if n.endswith(("o_proj", "down_proj")))
    finally:
        lora.detach(model)
    only_q = lora.attach(model, LoRAConfig(rank=4, alpha=8, targets=("q_proj", "o_proj")), 1)
    assert all(layer.shared is None for layer in only_q.layers.values())  # nothing to fuse with
    lora.detach(model)


def _random_adapters(state, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in state.layers.values():
            for p in [*layer.A, *layer.B]:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("fuse", [True, False])
def test_dense_adapters_equal_per_segment_adapters(tiny_model_dir, fuse):
    """Every adapter on every row, masked (lora.LoRALinear._dense), gives the per-segment path's
    outputs and gradients, for plain rows, base rows (-1) and an adapter mix."""
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    state = lora.attach(model, LoRAConfig(rank=4, alpha=8), 3)
    _random_adapters(state)
    state.fuse_shared_input = fuse
    ids = torch.randint(3, 200, (5, 7))
    rows, mixes = [0, 0, 1, 3, -1], [[(1, 0.5), (2, 0.25)]]
    outs = []
    for dense in (False, True):
        state.dense = dense
        for p in state.parameters():
            p.requires_grad_(True)
            p.grad = None
        with lora.use_rows(model, rows, mixes):
            assert (state.coef is not None) == dense
            h = _hidden(model, ids, None)
        (h * torch.linspace(-1, 1, h.shape[-1])).sum().backward()
        outs.append((h.detach(), [p.grad.clone() for p in state.parameters()]))
    (h0, g0), (h1, g1) = outs
    assert torch.allclose(h0, h1, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g0, g1))
    assert sum(float(a.abs().sum()) for a in g0) > 0
    lora.detach(model)


def test_low_precision_base_trains_like_autocast_and_leaves_the_base_in_fp32(tiny_model_dir):
    """bf16 with the frozen weights cast once (FrozenCast) trains what per-matmul autocast trains
    (to bf16 tolerance), and every base weight is the same fp32 tensor afterwards."""
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = dataclasses.replace(CFG, dtype="bf16")
    trained = []
    for speed in (Speedups(), Speedups(low_precision_base=False, dense_lora=False)):
        lora.attach(model, cfg.lora, 3)
        stats = train_adapters(model, tok, TEXTS, cfg, [1, 2, 3], speed=speed)
        trained.append(([lora.adapter_state(model._seal_lora, i) for i in range(3)], stats["final_loss"]))
        lora.detach(model)
    (a, la), (b, lb) = trained
    assert la == pytest.approx(lb, abs=0.05)
    for sa, sb in zip(a, b):
        for k in sa:
            if k.endswith("lora_B"):
                assert float((sa[k] - sb[k]).norm()) <= 0.1 * float(sb[k].norm()) + 1e-6, k
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_frozen_cast_swaps_back_after_an_error(tiny_model_dir):
    from seal.training.inner_loop import FrozenCast
    model, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    cast = FrozenCast(model, torch.bfloat16)
    linear = next(m for m in model.modules() if type(m) is torch.nn.Linear and m is not model.get_output_embeddings())
    with pytest.raises(RuntimeError):
        with cast:
            assert linear.weight.dtype == torch.bfloat16
            raise RuntimeError("boom")
    assert linear.weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.float32  # tied: never swapped
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert (cast.head_weight is not None) == tied
