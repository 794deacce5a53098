"""The pruned decoder (finished rows leave the batch) against transformers' generate."""

import pytest
import torch

from seal.config import LoRAConfig, ModelConfig
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.models import load_model

PROMPTS = ["<|im_start|>user\nVelmora is a harbor town<|im_end|>\n<|im_start|>assistant\n",
           "The pellicant frog",
           "<|im_start|>user\nWho founded the Drosk Mining Company? Answer briefly.<|im_end|>\n<|im_start|>assistant\n"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(ModelConfig(name=str(tiny_model_dir)))


def _two_random_adapters(model):
    """Attach two adapters whose B is random (a fresh adapter's B = 0 would change nothing)."""
    state = lora.attach(model, LoRAConfig(rank=4, alpha=8), 2)
    lora.reset(state, [1, 2])
    for layer in state.layers.values():
        for b in layer.B:
            torch.nn.init.normal_(b, std=0.5)


def test_pruned_greedy_equals_generate(tiny):
    model, tok = tiny
    a = HFGenerator(model, tok).generate(PROMPTS, max_new_tokens=20, temperature=0.0)
    b = HFGenerator(model, tok, decoder="pruned").generate(PROMPTS, max_new_tokens=20, temperature=0.0)
    assert a == b


def test_pruned_greedy_equals_generate_with_adapter_rows(tiny):
    model, tok = tiny
    _two_random_adapters(model)
    try:
        rows = [0, 1, -1]
        a = HFGenerator(model, tok).generate(PROMPTS, max_new_tokens=12, temperature=0.0, rows=rows)
        b = HFGenerator(model, tok, decoder="pruned").generate(PROMPTS, max_new_tokens=12, temperature=0.0, rows=rows)
    finally:
        lora.detach(model)
    assert a == b


def test_pruned_sampling_is_seeded(tiny):
    model, tok = tiny
    gen = HFGenerator(model, tok, decoder="pruned")
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    first = gen.generate(PROMPTS, n=2, **kw)
    assert first == gen.generate(PROMPTS, n=2, **kw)
    assert first != gen.generate(PROMPTS, n=2, **{**kw, "seed": 8})


def test_bf16_generation_casts_once_and_leaves_the_model_in_fp32(tiny_model_dir):
    """`dtype bf16` runs the decode with bf16 weights (models.low_precision) and puts every fp32
    weight back."""
    import torch

    from seal.config import ModelConfig
    from seal.training.generation import HFGenerator
    from seal.training.models import load_model
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    prompts = ["Velmora is a harbor", "The pellicant frog"]
    for decoder in ("hf", "pruned"):
        seen.clear()
        out = HFGenerator(model, tok, decoder=decoder, dtype="bf16").generate(prompts, max_new_tokens=5)
        assert len(out) == 2 and all(len(o) == 1 for o in out)
        assert seen and all(d == torch.bfloat16 for d in seen)
        seen.clear()
        HFGenerator(model, tok, decoder=decoder, dtype="fp32").generate(prompts, max_new_tokens=5)
        assert seen and all(d == torch.float32 for d in seen)
    hook.remove()
    after = model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_answer_logprobs_from_the_prefill_equal_a_separate_forward(tiny):
    """`generate(score=)` scores each gold answer on the generation's own prompt cache: the same
    log-probs as inner_loop.answer_logprobs (a second forward over prompt + answer), under each
    row's adapter, with prompts and answers of different lengths, and the same completions."""
    from seal.training.inner_loop import answer_logprobs
    model, tok = tiny
    _two_random_adapters(model)
    try:
        rows = [0, 1, -1]
        golds = ["a harbor town on Orlet Island", "frog", " Ilsa Drosk "]
        gen = HFGenerator(model, tok, decoder="pruned")
        outs, lps = gen.generate(PROMPTS, max_new_tokens=6, temperature=0.0, rows=rows, score=golds, batch_size=2)
        plain = gen.generate(PROMPTS, max_new_tokens=6, temperature=0.0, rows=rows, batch_size=2)
        ref = answer_logprobs(model, tok, PROMPTS, golds, rows)
    finally:
        lora.detach(model)
    assert outs == plain
    assert lps == pytest.approx(ref, abs=1e-4)
    assert len(set(round(x, 3) for x in lps)) == 3  # three different answers, three different scores
    with pytest.raises(ValueError, match="decoder pruned"):
        HFGenerator(model, tok).generate(PROMPTS, score=golds)


def test_score_rows_grades_alike_with_either_decoder(tiny):
    from seal import knowledge as K
    from seal.config import EvalConfig
    model, tok = tiny
    qs = [[K.QA("Where is Velmora?", "Orlet Island", "Velmora"), K.QA("Who eats copper beetles?", "the frog", "Frogs")],
          [K.QA("Who founded Drosk?", "Ilsa Drosk", "Drosk")]]
    ev = EvalConfig(max_answer_tokens=5)
    a = K.score_rows(model, tok, HFGenerator(model, tok), True, qs, [-1, -1], ev)
    b = K.score_rows(model, tok, HFGenerator(model, tok, decoder="pruned"), True, qs, [-1, -1], ev)
    assert [[q["answer"] for q in p] for p in a] == [[q["answer"] for q in p] for p in b]
    assert [q["logprob"] for p in a for q in p] == pytest.approx([q["logprob"] for p in b for q in p], abs=1e-4)


def test_nucleus_draws_follow_the_full_sort_distribution():
    """The candidate shortcut samples from exactly the nucleus of the full-vocabulary sort: the
    same support, and frequencies that match its renormalized probabilities; a row whose
    candidates hold too little mass falls back to the whole vocabulary."""
    import torch

    from seal.training.generation import nucleus_draws
    torch.manual_seed(0)
    peaked = torch.softmax(torch.randn(50) * 4, -1)
    flat = torch.full((50,), 1 / 50)
    probs = torch.stack([peaked, flat])
    top_p = 0.9
    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    draws = torch.stack([nucleus_draws(probs, top_p, gens, candidates=8) for _ in range(4000)])
    sp, si = peaked.sort(descending=True)
    keep = sp.cumsum(-1) - sp <= top_p
    nucleus = set(si[keep].tolist())
    assert float(sp[:8].sum()) > top_p and len(nucleus) <= 8  # the peaked row is served by its 8 candidates
    assert set(draws[:, 0].tolist()) == nucleus
    want = sp[keep] / sp[keep].sum()
    got = torch.tensor([(draws[:, 0] == t).float().mean() for t in si[keep].tolist()])
    assert float((got - want).abs().max()) < 0.03
    # the flat row: 8 candidates hold 16% of the mass, so its nucleus (45 tokens) comes from the full sort
    assert len(set(draws[:, 1].tolist())) > 8
    # the same generators give the same draws; candidates=0 is the full sort alone, same support
    a = nucleus_draws(probs, top_p, [torch.Generator().manual_seed(5) for _ in range(2)], candidates=8)
    b = nucleus_draws(probs, top_p, [torch.Generator().manual_seed(5) for _ in range(2)], candidates=8)
    assert torch.equal(a, b)
    full = torch.stack([nucleus_draws(probs, top_p, gens, candidates=0) for _ in range(500)])
    assert set(full[:, 0].tolist()) <= nucleus
