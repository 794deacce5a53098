"""Real-model tests on the default SmolLM2-135M-Instruct (minutes on CPU): `pytest -m slow`."""

import pytest
import torch

from seal import knowledge as K
from seal.config import InnerLoopConfig, ModelConfig, SelfEditConfig
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.inner_loop import answer_logprobs, train_adapters
from seal.training.models import load_model, uses_chat

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    pytest.importorskip("gguf")
    model, tok = load_model(ModelConfig(name="default"))
    return model, tok


def test_default_model_loads_unquantized(smol):
    model, tok = smol
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32 and uses_chat(tok, ModelConfig())


def test_passage_update_teaches_the_fact(smol, squad_tiny):
    """LoRA on a fictional passage raises the log-prob of its answers; the base is untouched."""
    model, tok = smol
    p = K.load_passages(squad_tiny)[0][0]
    chat = uses_chat(tok, ModelConfig())
    prompts = [K.qa_input(tok, q, chat) for q in p.questions]
    answers = [q.answer for q in p.questions]
    before = answer_logprobs(model, tok, prompts, answers, [-1] * len(prompts))
    weights = {k: v.clone() for k, v in model.state_dict().items() if "layers.0." in k}
    state = lora.attach(model, InnerLoopConfig().lora, 1)
    try:
        stats = train_adapters(model, tok, [K.training_examples(p, [], True)], InnerLoopConfig(epochs=5), [0])
        after = answer_logprobs(model, tok, prompts, answers, [0] * len(prompts))
        assert any(float(w.abs().sum()) > 0 for w in state.parameters(0)[1::2])  # B moved off zero
    finally:
        lora.detach(model)
    assert stats["final_loss"][0] < 3.0
    assert sum(after) / len(after) > sum(before) / len(before) + 0.2
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k])


def test_selfedit_generation_parses(smol, squad_tiny):
    model, tok = smol
    p = K.load_passages(squad_tiny)[0][0]
    out = K.sample_selfedits(HFGenerator(model, tok), tok, True, [p], SelfEditConfig(max_new_tokens=96), 2, 0, {},
                             lambda *_: None)
    items = [K.parse_selfedit(c, "implications") for c in out[p.id]]
    assert len(out[p.id]) == 2 and any(items)
