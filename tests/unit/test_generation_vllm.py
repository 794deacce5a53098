"""The vLLM generator (seal/training/generation_vllm.py): request building and the guarded import run
everywhere (a stand-in `vllm` module records what seal asks for); the real engine runs only
where vLLM and a GPU are present."""

from __future__ import annotations

import json
import sys
import types

import pytest

from seal.config import ConfigError, LoRAConfig, ModelConfig
from seal.training.generation import make_generator
from seal.training.generation_vllm import (
    VLLMGenerator,
    export_adapters,
    is_vllm_available,
    lora_request_args,
    model_path,
    sampling_kwargs,
)


def test_backend_vllm_without_vllm_is_one_line(monkeypatch):
    monkeypatch.setattr("seal.training.generation_vllm.is_vllm_available", lambda: False)
    with pytest.raises(ConfigError) as e:
        make_generator(None, None, backend="vllm", path="some/model")
    msg = str(e.value)
    assert "generation.backend" in msg and "pip install vllm" in msg and len(msg.splitlines()) == 1
    with pytest.raises(ValueError, match="unknown generation backend"):
        make_generator(None, None, backend="tgi")


def test_sampling_params_greedy_and_seeded_per_prompt():
    g = sampling_kwargs(3, n=2, max_new_tokens=7, temperature=0.0, top_p=0.9, seed=5, stop=[2])
    assert g["temperature"] == 0.0 and "seed" not in g and g["n"] == 2 and g["max_tokens"] == 7
    s0 = sampling_kwargs(0, n=1, max_new_tokens=7, temperature=1.0, top_p=0.9, seed=5, stop=[2, 9])
    s1 = sampling_kwargs(1, n=1, max_new_tokens=7, temperature=1.0, top_p=0.9, seed=5, stop=[2, 9])
    assert s0["seed"] != s1["seed"] and s0["top_p"] == 0.9 and s0["stop_token_ids"] == [2, 9]
    assert s0 == sampling_kwargs(0, n=1, max_new_tokens=7, temperature=1.0, top_p=0.9, seed=5, stop=[2, 9])


def test_lora_requests_per_row():
    reqs = lora_request_args([1, -1, 0], ["a0", "a1"], 3)
    assert reqs[1] is None
    assert reqs[0] == {"lora_name": "seal-1", "lora_int_id": 2, "lora_path": "a1"}
    assert reqs[2]["lora_int_id"] == 1
    assert lora_request_args(None, [], 2) == [None, None]
    with pytest.raises(ValueError, match="names no adapter"):
        lora_request_args([2], ["a0"], 1)


class _FakeLLM:
    def __init__(self, **kw):
        self.kw, self.calls = kw, []

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, params, lora_request))
        out = types.SimpleNamespace
        return [out(outputs=[out(text=f"{p}|{i}") for i in range(sp.kw["n"])]) for p, sp in zip(prompts, params)]


def _fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM = _FakeLLM
    vllm.SamplingParams = lambda **kw: types.SimpleNamespace(kw=kw)
    lora_mod, req_mod = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    req_mod.LoRARequest = lambda **kw: ("lora", kw["lora_int_id"], kw["lora_path"])
    for name, mod in (("vllm", vllm), ("vllm.lora", lora_mod), ("vllm.lora.request", req_mod)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr("seal.training.generation_vllm.is_vllm_available", lambda: True)


def test_generate_passes_adapters_per_request(tiny_model_dir, monkeypatch):
    from seal.training.models import load_model

    _fake_vllm(monkeypatch)
    _, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    gen = make_generator(None, tok, backend="vllm", path=str(tiny_model_dir), chat=True)
    assert isinstance(gen, VLLMGenerator)
    out = gen.generate(["a", "b"], n=2, temperature=1.0, seed=3)
    assert out == [["a|0", "a|1"], ["b|0", "b|1"]]
    llm = gen.llm
    assert llm.kw["enable_lora"] and llm.kw["model"] == str(tiny_model_dir)
    assert llm.calls[-1][2] is None  # no adapters: plain requests
    tuned = gen.with_adapters(["/ad/0", "/ad/1"])
    assert tuned.llm is llm  # same engine, nothing reloaded
    tuned.generate(["a", "b", "c"], rows=[1, -1, 0])
    _, params, loras = llm.calls[-1]
    assert loras == [("lora", 2, "/ad/1"), None, ("lora", 1, "/ad/0")]
    assert params[0].kw["temperature"] == 0.0 and params[0].kw["stop_token_ids"] == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_exported_adapters_are_peft_folders(tiny_model_dir, tmp_path):
    import torch

    from seal.training import lora
    from seal.training.models import load_model

    model, _ = load_model(ModelConfig(name=str(tiny_model_dir)))
    lora.attach(model, LoRAConfig(rank=4, alpha=8, targets=("q_proj", "v_proj")), 2)
    lora.reset(model._seal_lora, [1, 2])
    try:
        paths = export_adapters(model, tmp_path / "adapters", str(tiny_model_dir))
    finally:
        lora.detach(model)
    assert len(paths) == 2
    cfg = json.loads((tmp_path / "adapters" / "adapter_1" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and cfg["target_modules"] == ["q_proj", "v_proj"]
    from safetensors.torch import load_file
    w = load_file(str(tmp_path / "adapters" / "adapter_0" / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.") for k in w) and any(torch.count_nonzero(v) for v in w.values())


def test_model_path_for_the_default_model(tmp_path):
    assert model_path(ModelConfig(name="default", cache_dir=str(tmp_path))).startswith(str(tmp_path))
    assert model_path(ModelConfig(name="org/some-model")) == "org/some-model"


@pytest.mark.skipif(not is_vllm_available(), reason="vLLM is not installed (it needs a CUDA GPU: pip install vllm)")
def test_real_vllm_greedy_matches_hf(tiny_model_dir):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU")
    from seal.training.generation import HFGenerator
    from seal.training.models import load_model

    model, tok = load_model(ModelConfig(name=str(tiny_model_dir)))
    prompts = ["Answer the question", "Read the following passage"]
    hf = HFGenerator(model, tok, chat=False).generate(prompts, max_new_tokens=8)
    vl = VLLMGenerator(str(tiny_model_dir), tok, chat=False).generate(prompts, max_new_tokens=8)
    assert vl == hf
