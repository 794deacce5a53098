"""vLLM behind the `Generator` protocol (seal/training/generation.py), for GPUs.

Sampling self-edits is decode-bound: each new token reads all the weights once for the whole
batch, so throughput comes from batching many sequences and from a fast decode kernel with a
paged KV cache, which is what vLLM is. `VLLMGenerator.generate` takes the same arguments as
`HFGenerator.generate` and returns the same shape (one list of `n` completions per prompt).

LoRA adapters are passed per request, never merged and reloaded: `rows[i]` names the adapter of
prompt i (an index into `adapters`, a list of PEFT adapter folders; -1: the base model), and
each prompt goes to vLLM with its own `LoRARequest`. `export_adapters` writes seal's in-memory
adapters (seal/training/lora.py) as such folders, in the PEFT layout `seal adapt`'s registry uses.

Differences from `HFGenerator`, on purpose:
- randomness: each prompt's request carries its own seed (`seed * 1_000_003 + i`), so a prompt's
  samples do not depend on which prompts share its batch (HFGenerator's `hf` decoder seeds per
  batch, its `pruned` decoder per row, like this). vLLM's sampler is not torch's, so the text
  differs from HFGenerator's for the same seed; greedy text agrees up to kernel numerics.
- `batch_size` and `progress` are accepted and ignored: vLLM schedules its own batches.

The import is guarded: without vLLM nothing here is imported by the rest of seal, and asking
for `generation.backend vllm` says how to install it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

from seal.config import ConfigError


def is_vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def import_vllm():
    """The vllm module, or a one-line error naming the setting and the install."""
    if not is_vllm_available():
        raise ConfigError("generation.backend vllm needs vLLM and a CUDA GPU: pip install vllm "
                          "(or use --generation.backend hf)")
    import vllm
    return vllm


def sampling_kwargs(i: int, *, n: int, max_new_tokens: int, temperature: float, top_p: float, seed: int,
                    stop: list[int]) -> dict:
    """vllm.SamplingParams arguments for prompt i: greedy when temperature == 0 (then top_p and
    the seed do not matter), else nucleus sampling seeded per prompt."""
    kw = {"n": n, "max_tokens": max_new_tokens, "stop_token_ids": list(stop), "skip_special_tokens": True}
    if temperature > 0:
        kw.update(temperature=temperature, top_p=top_p, seed=(seed * 1_000_003 + i) % (2**31))
    else:
        kw.update(temperature=0.0, top_p=1.0)
    return kw


def lora_request_args(rows: list[int] | None, adapters: list[str], n_prompts: int) -> list[dict | None]:
    """Per prompt, the vllm LoRARequest arguments of its row's adapter (None: the base model).
    vLLM identifies an adapter by a positive integer id; adapter j gets id j + 1."""
    if rows is None:
        return [None] * n_prompts
    if len(rows) != n_prompts:
        raise ValueError(f"{len(rows)} rows for {n_prompts} prompts")
    out = []
    for r in rows:
        if r < 0:
            out.append(None)
        elif r >= len(adapters):
            raise ValueError(f"row {r} names no adapter ({len(adapters)} given)")
        else:
            out.append({"lora_name": f"seal-{r}", "lora_int_id": r + 1, "lora_path": str(adapters[r])})
    return out


@dataclass
class VLLMGenerator:
    """Text from a vLLM engine on `model_path` (a model folder or hub id)."""

    model_path: str
    tok: object
    chat: bool | None = None
    """As HFGenerator.chat: whether sampling also stops at the chat template's end-of-turn token."""
    adapters: list[str] = field(default_factory=list)
    """PEFT adapter folders that `rows` index."""
    gpu_memory_utilization: float = 0.4
    max_loras: int = 8
    max_lora_rank: int = 64
    llm: object = None
    """The engine (made on first use unless given, e.g. shared by `with_adapters`)."""

    def engine(self):
        if self.llm is None:
            vllm = import_vllm()
            self.llm = vllm.LLM(model=self.model_path, tokenizer=self.model_path, enable_lora=True,
                                max_loras=self.max_loras, max_lora_rank=self.max_lora_rank,
                                gpu_memory_utilization=self.gpu_memory_utilization)
        return self.llm

    def with_adapters(self, adapters: list[str | Path]) -> VLLMGenerator:
        """The same engine, with `rows` indexing these adapter folders (nothing is reloaded)."""
        return VLLMGenerator(self.model_path, self.tok, self.chat, [str(a) for a in adapters],
                             self.gpu_memory_utilization, self.max_loras, self.max_lora_rank, self.engine())

    def generate(self, prompts, *, n=1, max_new_tokens=256, temperature=0.0, top_p=1.0, seed=0, rows=None,
                 batch_size=16, progress=None):
        from vllm import SamplingParams
        from vllm.lora.request import LoRARequest

        from seal.training.models import end_of_turn_ids

        llm = self.engine()
        chat = bool(getattr(self.tok, "chat_template", None)) if self.chat is None else self.chat
        stop = end_of_turn_ids(self.tok, chat)
        params = [SamplingParams(**sampling_kwargs(i, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                                                   top_p=top_p, seed=seed, stop=stop)) for i in range(len(prompts))]
        loras = [None if a is None else LoRARequest(**a) for a in lora_request_args(rows, self.adapters, len(prompts))]
        outs = llm.generate(list(prompts), params, use_tqdm=False,
                            lora_request=loras if any(x is not None for x in loras) else None)
        if progress is not None:
            progress(len(prompts) * n)
        return [[c.text for c in o.outputs] for o in outs]


def export_adapters(model, folder: Path, base_model: str) -> list[str]:
    """Write every adapter attached to `model` (seal/training/lora.py) as a PEFT folder under `folder`
    (adapter_0, adapter_1, ...), for `VLLMGenerator.with_adapters`. Returns the folders."""
    from seal.training.lora import adapter_state
    from seal.training.peft_folder import peft_config, write_adapter_folder

    state = getattr(model, "_seal_lora", None)
    if state is None:
        raise RuntimeError("no LoRA adapters attached")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    targets = tuple(sorted({name.rpartition(".")[2] for name in state.layers}))
    out = []
    for i in range(state.n):
        path = folder / f"adapter_{i}"
        if path.exists():
            import shutil
            shutil.rmtree(path)
        write_adapter_folder(path, adapter_state(state, i),
                             peft_config(state.cfg.rank, state.cfg.alpha, targets, base_model))
        out.append(str(path))
    return out


def model_path(model_cfg) -> str:
    """The folder (or hub id) a vLLM engine loads for `model_cfg`: for the default model and
    .gguf files, the safetensors copy `load_model` caches (load the model once first)."""
    from seal.training.models import DEFAULT_NAME, cache_root

    name = model_cfg.name
    if name == "default":
        return str(cache_root(model_cfg) / DEFAULT_NAME)
    if name.endswith(".gguf"):
        return str(cache_root(model_cfg) / ("gguf-" + Path(name).expanduser().resolve().stem))
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name
