"""Text generation behind one small protocol.

`Generator.generate(prompts, ...)` returns one list of completions per prompt. `HFGenerator`
runs the in-process transformers model (batched, left-padded, KV cache) and honours the LoRA
adapter of each row, so answers of many adapted models are generated in one batch. Another
backend plugs in by implementing the same protocol: `VLLMGenerator` (seal/training/generation_vllm.py, a
GPU engine with LoRA adapters passed per request) is chosen by `make_generator(backend="vllm")`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Protocol

import torch

from seal.training import lora
from seal.training.models import end_of_turn_ids, low_precision, model_device, pick_dtype


class Generator(Protocol):
    def generate(self, prompts: list[str], *, n: int = 1, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, rows: list[int] | None = None,
                 batch_size: int = 16, progress=None) -> list[list[str]]: ...


@torch.no_grad()
def _score_on_prompt(model, cache, cache_kw: str, attn, last_logits, answers: list[list[int]], rows) -> list[float]:
    """Mean log-probability of each row's `answers` token ids right after its prompt, from the
    prompt's KV cache (a copy: the caller's stays at the prompt) and the prompt's last-position
    logits. The same quantity as inner_loop.answer_logprobs, without a second forward over the
    prompts; 0.0 for an empty answer."""
    import copy

    n = attn.shape[0]
    longest = max((len(a) for a in answers), default=0)
    lp = torch.zeros(n, max(longest, 1))
    first = torch.log_softmax(last_logits, -1)
    for j, a in enumerate(answers):
        if a:
            lp[j, 0] = first[j, a[0]]
    if longest > 1:  # every answer token but the last is an input
        dev = attn.device
        ids = torch.zeros(n, longest - 1, dtype=torch.long)
        mask = torch.zeros(n, longest - 1, dtype=attn.dtype)
        for j, a in enumerate(answers):
            ids[j, : len(a) - 1] = torch.tensor(a[:-1], dtype=torch.long)
            mask[j, : len(a) - 1] = 1
        pos = attn.long().sum(-1, keepdim=True).cpu() + torch.arange(longest - 1)[None]
        with lora.use_rows(model, rows):
            logits = model(input_ids=ids.to(dev), attention_mask=torch.cat([attn, mask.to(dev)], 1),
                           position_ids=pos.to(dev), use_cache=True,
                           **{cache_kw: copy.deepcopy(cache)}).logits.float().cpu()
        logp = torch.log_softmax(logits, -1)
        for j, a in enumerate(answers):
            for k in range(1, len(a)):
                lp[j, k] = logp[j, k - 1, a[k]]
    return [float(lp[j, : len(a)].sum()) / max(len(a), 1) for j, a in enumerate(answers)]


NUCLEUS_CANDIDATES = 1024
"""Nucleus sampling looks at the most probable 1024 tokens of a row first. When they hold more
than top_p of its probability (nearly always for an LM's next token), the nucleus lies among
them, so the full-vocabulary sort and the draw over every token are skipped: on SmolLM2's 49k
vocabulary both cost more than a decode step's matmuls. 0: always sort the whole vocabulary."""


def nucleus_draws(probs: torch.Tensor, top_p: float, gens: list[torch.Generator],
                  candidates: int | None = None) -> torch.Tensor:
    """One token per row of `probs` [rows, vocab] from its nucleus (Holtzman et al., 2020: the
    smallest set of most probable tokens whose mass reaches top_p, renormalized), drawn with the
    row's own generator. The distribution is exactly that of sorting the whole vocabulary (the
    candidates are used only when they hold the whole nucleus); the random draws differ, since a
    draw over fewer tokens uses fewer random numbers."""
    k = NUCLEUS_CANDIDATES if candidates is None else candidates
    vocab = probs.shape[-1]
    top = probs.topk(k, -1) if 0 < k < vocab else None
    out = []
    for j, gen in enumerate(gens):
        if top is not None and float(top.values[j].sum()) > top_p:
            sp, si = top.values[j], top.indices[j]
        else:  # the nucleus may reach past the candidates
            sp, si = probs[j].sort(descending=True)
        sp = sp.masked_fill(sp.cumsum(-1) - sp > top_p, 0.0)  # keep the smallest prefix whose mass reaches top_p
        out.append(si[torch.multinomial(sp, 1, generator=gen)[0]])
    return torch.stack(out)


@torch.no_grad()
def decode_pruned(model, enc: dict, *, max_new_tokens: int, temperature: float, top_p: float, stop: list[int],
                  seed: int, rows: list[int] | None = None, score: list[list[int]] | None = None):
    """Batched decoding (KV cache) that drops each row from the batch as soon as it ends, so a
    step costs what the rows still writing need, not what the longest one needs (sampled
    self-edits range from a few to `max_new_tokens` tokens). Greedy when temperature == 0, else
    nucleus sampling with one random stream per row (seeded from `seed` and the row's index),
    so a row's text does not depend on which rows beside it are still running.
    Returns each row's new token ids (without its stop token); with `score` (token ids per row),
    also each row's mean log-probability of those ids after its prompt, from the same prefill
    (`_score_on_prompt`): (new ids, log-probs)."""
    from transformers import DynamicCache

    if score is not None and max_new_tokens < 1:
        raise ValueError("scoring answers on the prefill needs max_new_tokens >= 1")
    ids, attn = enc["input_ids"], enc["attention_mask"]
    n = ids.shape[0]
    alive = torch.arange(n)
    out: list[list[int]] = [[] for _ in range(n)]
    gens = [torch.Generator().manual_seed((seed * 1_000_003 + i) % (2**63 - 1)) for i in range(n)] if temperature > 0 else None
    stop_t = torch.tensor(stop or [-1])
    cache = DynamicCache()
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
    step_ids = ids
    for t in range(max_new_tokens):
        r = None if rows is None else [rows[i] for i in alive.tolist()]
        with lora.use_rows(model, r):
            logits = model(input_ids=step_ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1,
                           **{cache_kw: cache}).logits[:, -1].float().cpu()
        if t == 0 and score is not None:
            scored = _score_on_prompt(model, cache, cache_kw, attn, logits, score, r)
        if gens is None:
            nxt = logits.argmax(-1)
        else:
            nxt = nucleus_draws(torch.softmax(logits / temperature, -1), top_p, [gens[int(i)] for i in alive])
        done = torch.isin(nxt, stop_t)
        for j, i in enumerate(alive.tolist()):
            if not done[j]:
                out[i].append(int(nxt[j]))
        if t == max_new_tokens - 1:
            break
        keep = (~done).nonzero().flatten()
        if len(keep) == 0:
            break
        dev = attn.device
        if len(keep) < len(alive):
            cache.batch_select_indices(keep.to(dev))
            alive, attn, nxt = alive[keep], attn[keep.to(dev)], nxt[keep]
        attn = torch.cat([attn, attn.new_ones(len(alive), 1)], dim=1)
        pos = attn.long().sum(-1, keepdim=True) - 1
        step_ids = nxt[:, None].to(dev)
    return out if score is None else (out, scored)


@dataclass
class HFGenerator:
    model: object
    tok: object
    chat: bool | None = None
    """Whether prompts are chat turns: sampling then stops at the chat template's end-of-turn token
    as well as at EOS (`models.end_of_turn_ids`). None: whenever the tokenizer has a chat template
    (stopping there is harmless for plain prompts)."""
    decoder: str = "hf"
    """`hf`: transformers' `generate` (every row runs until the batch's longest is done); `pruned`:
    `decode_pruned` (a finished row leaves the batch; its own seeded random stream per row)."""
    dtype: str = "fp32"
    """`fp32`, `bf16` (weights cast once per call, autocast: `models.low_precision`) or `auto`
    (bf16 where the CPU has AVX-512 BF16 or AMX, or on a GPU; `GenerationConfig.dtype`)."""

    @torch.no_grad()
    def generate(self, prompts, *, n=1, max_new_tokens=256, temperature=0.0, top_p=1.0, seed=0, rows=None,
                 batch_size=16, progress=None, score: list[str] | None = None):
        """Greedy when temperature == 0, else nucleus sampling; `n` samples per prompt.

        Sampling is seeded per batch from `seed`, so the same call gives the same text.
        `score` (decoder `pruned`, n == 1): a text per prompt whose mean token log-probability
        after the prompt is computed from the generation's own prefill (as
        inner_loop.answer_logprobs computes it with a forward of its own); returns
        (completions, log-probs).
        """
        from seal.training.inner_loop import answer_ids

        if score is not None and (self.decoder != "pruned" or n != 1 or len(score) != len(prompts)):
            raise ValueError("score needs decoder pruned, n == 1 and one text per prompt")
        scored: list[float] = [0.0] * len(prompts)
        tok, model = self.tok, self.model
        device = model_device(model)
        old_side = tok.padding_side
        tok.padding_side = "left"
        flat = [(i, p) for i, p in enumerate(prompts) for _ in range(n)]
        out: list[list[str]] = [[] for _ in prompts]
        chat = bool(getattr(tok, "chat_template", None)) if self.chat is None else self.chat
        stop = end_of_turn_ids(tok, chat)
        stop_ids = stop if len(stop) > 1 else (stop[0] if stop else None)
        with low_precision(model, pick_dtype(self.dtype, device)):
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
                    if self.decoder == "pruned":
                        stops = [stop_ids] if isinstance(stop_ids, int) else list(stop_ids or [])
                        want = None if score is None else [answer_ids(tok, score[i]) for i, _ in chunk]
                        new = decode_pruned(model, enc, max_new_tokens=max_new_tokens, temperature=temperature,
                                            top_p=top_p, stop=stops, seed=seed * 100003 + start, rows=r, score=want)
                        if score is not None:
                            new, lps = new
                            for (i, _), lp in zip(chunk, lps):
                                scored[i] = lp
                    else:
                        with lora.use_rows(model, r):
                            gen = model.generate(**enc, **kwargs)
                        new = gen[:, enc["input_ids"].shape[1]:]
                    for (i, _), ids in zip(chunk, new):
                        out[i].append(tok.decode(ids, skip_special_tokens=True))
                    if progress is not None:
                        progress(len(chunk))
            finally:
                tok.padding_side = old_side
        return out if score is None else (out, scored)


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


def make_generator(model, tok, backend: str = "hf", chat: bool | None = None, path: str = "", **vllm_kw) -> Generator:
    """The generator `backend` names: `hf` on the in-process `model`, or `vllm` (a GPU engine,
    seal/training/generation_vllm.py) on the model folder or hub id `path`; `vllm_kw` are VLLMGenerator
    settings (gpu_memory_utilization, max_loras, ...)."""
    if backend == "hf":
        return HFGenerator(model, tok, chat)
    if backend == "vllm":
        from seal.training.generation_vllm import VLLMGenerator, import_vllm
        import_vllm()  # a one-line error, naming the setting, when vLLM is missing
        return VLLMGenerator(path, tok, chat, **vllm_kw)
    raise ValueError(f"unknown generation backend {backend!r} (available: hf, vllm)")
