"""Shared fixtures: a tiny random-weight Llama with a small byte-level BPE tokenizer, built in
the test session (no network), saved as a model folder so tests exercise the real loading path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("SEAL_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Every `auto` dtype is fp32 in tests (seal.training.models.FORCE_FP32_ENV): which samples a random tiny
# model writes must not depend on whether this CPU has AVX-512 BF16 or AMX. Set here, before any
# fixture runs, so module- and session-scoped fixtures and worker processes see it too. A test
# marked `machine_dtype` runs with the variable as the caller's environment had it (unset: bf16
# wherever the CPU does it fast); `.ci/run` runs those again with SEAL_FORCE_FP32=1.
_CALLER_FORCE_FP32 = os.environ.get("SEAL_FORCE_FP32")
os.environ["SEAL_FORCE_FP32"] = "1"


@pytest.fixture(autouse=True)
def _machine_dtype(request, monkeypatch):
    if request.node.get_closest_marker("machine_dtype") is None:
        monkeypatch.setenv("SEAL_FORCE_FP32", "1")
    elif _CALLER_FORCE_FP32 is None:
        monkeypatch.delenv("SEAL_FORCE_FP32", raising=False)
    else:
        monkeypatch.setenv("SEAL_FORCE_FP32", _CALLER_FORCE_FP32)

FIXTURES = Path(__file__).parent / "fixtures"

CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = json.loads((FIXTURES / "squad_tiny.json").read_text())
    texts = [p["context"] for p in corpus] + [q["question"] + " " + q["answer"] for p in corpus for q in p["questions"]]
    texts += ["Answer the question with a short phrase, from memory.", "Read the following passage and list implications."]
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id)
    model = LlamaForCausalLM(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def script():
    """Load one of the repository's scripts/<name>.py as a module: `script("check_redraw").main(...)`."""
    import importlib.util

    folder = Path(__file__).resolve().parents[1] / "scripts"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    return load


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def squad_tiny() -> Path:
    return FIXTURES / "squad_tiny.json"


class FixedSelfEdits:
    """A Generator that returns `write(prompt, j)` as the j-th of n samples for each prompt, in
    place of sampling: tests that check what the engine does with self-edits (grading, racing,
    kept sets, records) then do not depend on what a random tiny model happens to write."""

    def __init__(self, write):
        self.write = write

    def generate(self, prompts, *, n=1, **_):
        return [[self.write(p, j) for j in range(n)] for p in prompts]


def passage_lines(prompt: str, j: int) -> str:
    """Self-edit j for a prompt: two bullet lines of eight words cut from the prompt at an offset
    that depends on j (parsable by every template, different for every j)."""
    words = [w for w in prompt.replace("<|im_start|>", " ").replace("<|im_end|>", " ").split() if w.isascii()]
    start = (5 * j) % max(1, len(words) - 16)
    return f"- {' '.join(words[start:start + 8])}\n\n- {' '.join(words[start + 8:start + 16])}"


@pytest.fixture
def fixed_selfedits(monkeypatch):
    """Self-edit sampling (seal.training.generation.sample_resumable, wherever it is called from) writes
    fixed texts: `passage_lines` by default, or the function the test passes to the returned
    setter. Everything else (probes, answers, log-probs) still runs on the model."""
    import seal.engine.jobs
    import seal.training.generation

    real = seal.training.generation.sample_resumable
    writer = {"write": passage_lines}

    def fixed(gen, items, prompt_of, n, **kw):
        return real(FixedSelfEdits(writer["write"]), items, prompt_of, n, **kw)

    monkeypatch.setattr(seal.training.generation, "sample_resumable", fixed)
    monkeypatch.setattr(seal.engine.jobs, "sample_resumable", fixed)

    def use(write):
        writer["write"] = write
    return use
