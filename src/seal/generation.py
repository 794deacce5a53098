"""Text generation behind one small protocol.

`Generator.generate(prompts, ...)` returns one list of completions per prompt. `HFGenerator`
runs the in-process transformers model (batched, left-padded, KV cache) and honours the LoRA
adapter of each row, so answers of many adapted models are generated in one batch. Another
backend (e.g. vLLM on a GPU) plugs in by implementing the same protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from . import lora
from .models import end_of_turn_ids, model_device


class Generator(Protocol):
    def generate(self, prompts: list[str], *, n: int = 1, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, rows: list[int] | None = None,
                 batch_size: int = 16, progress=None) -> list[list[str]]: ...


@dataclass
class HFGenerator:
    model: object
    tok: object
    chat: bool | None = None
    """Whether prompts are chat turns: sampling then stops at the chat template's end-of-turn token
    as well as at EOS (`models.end_of_turn_ids`). None: whenever the tokenizer has a chat template
    (stopping there is harmless for plain prompts)."""

    @torch.no_grad()
    def generate(self, prompts, *, n=1, max_new_tokens=256, temperature=0.0, top_p=1.0, seed=0, rows=None,
                 batch_size=16, progress=None):
        """Greedy when temperature == 0, else nucleus sampling; `n` samples per prompt.

        Sampling is seeded per batch from `seed`, so the same call gives the same text.
        """
        tok, model = self.tok, self.model
        device = model_device(model)
        old_side = tok.padding_side
        tok.padding_side = "left"
        flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
        out: list[list[str]] = [[] for _ in prompts]
        chat = bool(getattr(tok, "chat_template", None)) if self.chat is None else self.chat
        stop = end_of_turn_ids(tok, chat)
        stop_ids = stop if len(stop) > 1 else (stop[0] if stop else None)
        try:
            for start in range(0, len(flat), batch_size):
                chunk = flat[start : start + batch_size]
                enc = tok([p for _, p in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(device) for k, v in enc.items()}
                r = None if rows is None else [rows[i] for i, _ in chunk]
                kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id,
                              eos_token_id=stop_ids)
                if temperature > 0:
                    kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
                    torch.manual_seed(seed * 100003 + start)
                else:
                    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
                with lora.use_rows(model, r):
                    gen = model.generate(**enc, **kwargs)
                new = gen[:, enc["input_ids"].shape[1]:]
                for (i, _), ids in zip(chunk, new):
                    out[i].append(tok.decode(ids, skip_special_tokens=True))
                if progress is not None:
                    progress(len(chunk))
        finally:
            tok.padding_side = old_side
        return out


def sample_resumable(gen: Generator, items: list, prompt_of, n: int, *, max_new_tokens: int, temperature: float,
                     top_p: float, batch_size: int, seed: int, done: dict[str, list[str]], on_sampled,
                     progress=None) -> dict[str, list[str]]:
    """n sampled completions per item (keyed by `item.id`); items in `done` are not sampled again.

    Chunks of items and each chunk's seed are fixed by the full item list, so a resumed run
    samples exactly what an uninterrupted one would have. `prompt_of(item)` gives the prompt, or
    None for an item whose completions are all empty (nothing to sample). on_sampled(item,
    completions) saves each as soon as its chunk is done.
    """
    out = dict(done)
    per_batch = max(1, batch_size // n)  # items per generate call (n rows each)
    for start in range(0, len(items), per_batch):
        chunk = items[start : start + per_batch]
        if all(it.id in out for it in chunk):
            continue
        prompts = [prompt_of(it) for it in chunk]
        if all(p is None for p in prompts):
            comps = [[""] * n for _ in chunk]
        else:
            comps = gen.generate(prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                 seed=seed * 7919 + start, batch_size=batch_size)
        for it, c in zip(chunk, comps):
            if it.id not in out:
                out[it.id] = c
                on_sampled(it, c)
        if progress is not None:
            progress(len(chunk))
    return out


def make_generator(model, tok, backend: str = "hf", chat: bool | None = None) -> Generator:
    if backend == "hf":
        return HFGenerator(model, tok, chat)
    raise ValueError(f"unknown generation backend {backend!r} (available: hf)")
