import torch

from seal.config import InnerLoopConfig, LoRAConfig, ModelConfig
from seal.training import lora
from seal.training.inner_loop import TrainExample, answer_logprobs, train_adapters
from seal.training.models import load_model

TEXTS = [
    [TrainExample("Velmora is a harbor town founded by salt traders."), TrainExample("The lighthouse is the Ambertine Tower.")],
    [TrainExample("The pellicant frog eats copper beetles on Orlet Island.")],
    [TrainExample("Brevka holds the Tamsin Festival every April.", prompt="Q: when? ")],
]


def _cfg(**kw):
    base = dict(lora=LoRAConfig(rank=4, alpha=8), lr=5e-3, epochs=3, steps="packed", batch_size=2, dtype="fp32")
    base.update(kw)
    return InnerLoopConfig(**base)


def test_training_changes_adapters_not_base(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = lora.attach(model, _cfg().lora, len(TEXTS))
    lora.reset(state, [1, 2, 3])
    init = [lora.adapter_state(state, i) for i in range(3)]
    stats = train_adapters(model, tok, TEXTS, _cfg(), [1, 2, 3])
    for i in range(3):
        after = lora.adapter_state(state, i)
        assert any(not torch.equal(after[k], init[i][k]) for k in after), f"adapter {i} did not change"
        assert all(t > 0 for t in stats["tokens"])
    lora.detach(model)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"base weight {k} changed"


def test_batched_adapters_match_training_alone(tiny_model_dir):
    """k adapters trained together learn what each learns alone (per-adapter loss and AdamW)."""
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = _cfg()
    lora.attach(model, cfg.lora, 3)
    train_adapters(model, tok, TEXTS, cfg, [1, 2, 3])
    together = [lora.adapter_state(model._seal_lora, i) for i in range(3)]
    lora.detach(model)
    for i in range(3):
        lora.attach(model, cfg.lora, 1)
        train_adapters(model, tok, [TEXTS[i]], cfg, [i + 1])
        alone = lora.adapter_state(model._seal_lora, 0)
        lora.detach(model)
        for k in alone:
            assert torch.allclose(alone[k], together[i][k], atol=1e-5), (i, k)


def test_rows_select_adapters_and_merge(tiny_model_dir):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    prompts, answers = ["Q: who founded Velmora? A:"] * 2, ["salt traders"] * 2
    base_lp = answer_logprobs(model, tok, prompts, answers, [-1, -1])
    lora.attach(model, _cfg().lora, 2)
    train_adapters(model, tok, [TEXTS[0], TEXTS[1]], _cfg(), [5, 6])
    lp = answer_logprobs(model, tok, prompts, answers, [0, -1])
    assert abs(lp[1] - base_lp[1]) < 1e-5  # row -1 is the untouched base model
    assert abs(lp[0] - base_lp[0]) > 1e-4  # row 0 uses the trained adapter
    # rows in any order (the gather path) agree with the sorted (slice) path
    lp_rev = answer_logprobs(model, tok, prompts[::-1], answers, [-1, 0])
    assert abs(lp_rev[1] - lp[0]) < 1e-4
    lora.merge(model, 0)
    merged = answer_logprobs(model, tok, prompts[:1], answers[:1], [-1])
    assert abs(merged[0] - lp[0]) < 1e-4


def test_selective_output_layer_matches_full_logits(tiny_model_dir):
    """token_losses and answer_logprobs skip the output layer where nothing is scored; the
    numbers must equal those from the model's full logits."""
    import torch.nn.functional as F

    from seal.training.inner_loop import Tokenized, collate, token_losses

    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    rows = [(0, Tokenized(tok("Velmora is a harbor town.")["input_ids"], 1)),
            (0, Tokenized(tok("The frog eats copper beetles on the island.")["input_ids"], 3))]
    ids, attn, labels, _ = collate(rows, tok.pad_token_id, torch.device("cpu"))
    mine = token_losses(model, ids, attn, labels, torch.float32)
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1]
    ref = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100,
                          reduction="none").view(mine.shape)
    assert torch.allclose(mine, ref, atol=1e-5)
    lp = answer_logprobs(model, tok, ["Velmora is a"], ["harbor town."], [-1])[0]
    p_ids, a_ids = tok("Velmora is a")["input_ids"], tok("harbor town.")["input_ids"]
    full = torch.log_softmax(model(input_ids=torch.tensor([p_ids + a_ids])).logits[0, :-1], -1)
    want = sum(full[len(p_ids) - 1 + i, a].item() for i, a in enumerate(a_ids)) / len(a_ids)
    assert abs(lp - want) < 1e-5
