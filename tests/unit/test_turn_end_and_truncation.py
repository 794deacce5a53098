"""End-of-turn tokens for chat models whose EOS differs (Qwen's ChatML: turns end with <|im_end|>,
EOS is <|endoftext|>), and counted, never silent, truncation of training sequences."""

import pytest
import torch

from seal.config import ConfigError, InnerLoopConfig, LoRAConfig, ModelConfig, ReSTEMConfig, RunConfig
from seal.engine.restem import sft
from seal.knowledge.task import sft_config
from seal.training import lora
from seal.training.generation import HFGenerator
from seal.training.inner_loop import TrainExample, tokenize_examples, train_adapters
from seal.training.models import end_of_turn_ids, format_prompt, load_model

CFG = InnerLoopConfig(lora=LoRAConfig(rank=4, alpha=8), lr=5e-3, epochs=1, steps="packed", batch_size=2, dtype="fp32")


def _qwen_like(tiny_model_dir):
    """The tiny model with Qwen2.5's split: ChatML closes turns with <|im_end|>, EOS is <|endoftext|>."""
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    tok.eos_token = "<|endoftext|>"
    return model, tok


def test_end_of_turn_ids_read_from_the_chat_template(tiny_model_dir):
    _, tok = _qwen_like(tiny_model_dir)
    im_end, eos = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    assert im_end != eos and tok.eos_token_id == eos
    assert end_of_turn_ids(tok, True) == [im_end, eos]
    assert end_of_turn_ids(tok, False) == [eos]
    tok.chat_template = None  # no template: EOS only
    assert end_of_turn_ids(tok, True) == [eos]


def test_end_of_turn_is_eos_for_smollm2_style_tokenizers(tiny_model_dir):
    # the fixture, like SmolLM2-135M-Instruct, has EOS = <|im_end|>: one id, nothing changes
    _, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    assert tok.eos_token == "<|im_end|>"
    assert end_of_turn_ids(tok, True) == end_of_turn_ids(tok, False) == [tok.eos_token_id]


def test_chat_sft_targets_end_with_the_end_of_turn_token(tiny_model_dir):
    _, tok = _qwen_like(tiny_model_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    prompt = format_prompt(tok, "Read the following passage and list implications.", chat=True)
    chat, plain, passage = tokenize_examples(tok, [TrainExample("Velmora is a harbor town.", prompt),
                                                   TrainExample("Velmora is a harbor town.", "Passage:\n"),
                                                   TrainExample("Velmora is a harbor town.")], CFG)
    assert chat.ids[-1] == im_end and tok.eos_token_id not in chat.ids[chat.loss_from:]
    assert plain.ids[-1] == tok.eos_token_id  # plain prompts and bare passages keep EOS
    assert passage.ids[-1] == tok.eos_token_id


def test_sampling_stops_at_the_end_of_turn_token(tiny_model_dir):
    model, tok = _qwen_like(tiny_model_dir)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    head = torch.nn.Linear(model.config.hidden_size, len(tok), bias=True)  # always predicts <|im_end|>
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[im_end] = 10.0
    model.lm_head = head
    seen = []
    real = model.generate

    def spy(**kw):
        out = real(**kw)
        seen.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    model.generate = spy
    prompt = format_prompt(tok, "Where is Velmora?", chat=True)
    HFGenerator(model, tok).generate([prompt], max_new_tokens=6)
    assert seen == [1]  # stopped at the first <|im_end|>, not after 6 tokens
    HFGenerator(model, tok, chat=False).generate([prompt], max_new_tokens=6)
    assert seen[-1] == 6  # plain prompts stop at EOS only


def test_truncated_sequences_are_counted_and_warned(tiny_model_dir, capsys):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    long = TrainExample(" ".join(["Velmora is a harbor town on Orlet Island."] * 20))
    short = TrainExample("Velmora is a harbor town.")
    cfg = InnerLoopConfig(**{**CFG.__dict__, "max_seq_len": 32})
    lora.attach(model, cfg.lora, 2)
    try:
        stats = train_adapters(model, tok, [[long, short], [short]], cfg, [1, 2])
    finally:
        lora.detach(model)
    assert stats["n_truncated"] == [1, 0] and stats["n_dropped"] == [0, 0]
    assert max(stats["executed_lens"]) == 32
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "1 of 3 training sequences cut to max_seq_len=32" in warnings[0]

    counts = {}
    tokenize_examples(tok, [short], cfg, counts)
    assert counts == {"n_truncated": 0, "n_dropped": 0}


def test_sft_uses_its_max_len_and_drops_prompt_only_examples_loudly(tiny_model_dir, capsys):
    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    cfg = RunConfig(restem=ReSTEMConfig(sft_epochs=1, sft_batch_size=2, sft_max_seq_len=48,
                                        sft_lora=LoRAConfig(rank=4, alpha=8)),
                    inner=InnerLoopConfig(dtype="fp32"))
    long_prompt = format_prompt(tok, " ".join(["Read the following passage and list implications."] * 10), chat=True)
    assert len(tok(long_prompt, add_special_tokens=False)["input_ids"]) > 48
    short_prompt = format_prompt(tok, "List implications.", chat=True)
    examples = [TrainExample("Velmora is a harbor town.", long_prompt),  # no target token fits: dropped
                TrainExample(" ".join(["Velmora is a harbor town."] * 20), short_prompt),  # cut
                TrainExample("Velmora is a harbor town.", short_prompt)]
    stats = sft(model, tok, examples, sft_config(cfg), seed=0)
    assert stats["n_dropped"] == [1] and stats["n_truncated"] == [1] and stats["examples"] == [2]
    assert "1 of 3 training sequences cut to max_seq_len=48 tokens, 1 dropped" in capsys.readouterr().err


def test_sft_max_seq_len_setting():
    assert ReSTEMConfig().sft_max_seq_len == 2048
    with pytest.raises(ConfigError, match="sft_max_seq_len"):
        ReSTEMConfig(sft_max_seq_len=0)
