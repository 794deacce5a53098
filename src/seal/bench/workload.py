"""The saved benchmark workload: passages with k self-edit texts sampled once (fixed seed), its
hash, and the inner-loop jobs it becomes."""

from __future__ import annotations

import json
import time
from pathlib import Path

from seal.engine.jobs import job_seed

WORKLOAD_VERSION = 1


def create_workload(model_name: str, data: str, passages: int, k: int, seed: int, threads: int,
                    max_new_tokens: int = 0) -> dict:
    """Sample k self-edits for each of `passages` passages (deterministic subset and seed) and
    time the sampling."""
    import torch

    from seal import knowledge as K
    from seal.config import ModelConfig, SelfEditConfig
    from seal.training.generation import HFGenerator
    from seal.training.models import load_model, uses_chat

    torch.set_num_threads(threads)
    allp, _ = K.load_passages(data)
    chosen = K.select(allp, passages, seed)
    mcfg = ModelConfig(name=model_name)
    model, tok = load_model(mcfg)
    chat = uses_chat(tok, mcfg)
    gen = HFGenerator(model, tok)
    se = SelfEditConfig(k=k)
    if max_new_tokens:
        se.max_new_tokens = max_new_tokens
    t = time.perf_counter()
    comps = K.sample_selfedits(gen, tok, chat, chosen, se, k, job_seed(seed, "selfedit", "own"), {},
                               lambda p, c: None)
    secs = time.perf_counter() - t
    prompt_toks = sum(len(tok(K.selfedit_input(tok, p, se, chat), add_special_tokens=False)["input_ids"])
                      * k for p in chosen)
    new_toks = sum(min(se.max_new_tokens, len(tok(c, add_special_tokens=False)["input_ids"]) + 1)
                   for p in chosen for c in comps[p.id])
    generation = {
        "seconds": secs, "completions": len(chosen) * k, "generated_tokens": new_toks, "prompt_tokens": prompt_toks,
        "tokens_per_second": new_toks / secs, "batch_size": se.batch_size, "max_new_tokens": se.max_new_tokens,
        "temperature": se.temperature, "top_p": se.top_p, "threads": threads,
        "note": "generated tokens = re-tokenized completion + end token (capped at max_new_tokens); batched "
                "nucleus sampling with KV cache (HFGenerator)",
    }
    return {
        "version": WORKLOAD_VERSION, "model": model_name, "data": str(data), "data_sha256": K.file_sha256(data),
        "seed": seed, "k": k, "template": se.template, "include_passage": se.include_passage,
        "passage_ids": [p.id for p in chosen], "generation": generation,
        "passages": [{"id": p.id, "title": p.title, "context": p.context,
                      "questions": [{"question": q.question, "answer": q.answer} for q in p.questions],
                      "selfedits": comps[p.id]} for p in chosen],
    }


def workload_hash(wl: dict) -> str:
    import hashlib
    core = {k: wl[k] for k in ("data_sha256", "seed", "k", "template", "include_passage", "passages")}
    return hashlib.sha256(json.dumps(core, sort_keys=True).encode()).hexdigest()


def passage_jobs(workload: str, index: int) -> tuple[dict, str, list]:
    """The workload file's contents, its passage number `index`'s id, and that passage's jobs (the
    one-passage A/B scripts in bench/ train these)."""
    wl = json.loads(Path(workload).read_text())
    pid = wl["passages"][index]["id"]
    return wl, pid, [j for j in make_jobs(wl) if j.passage_ids[0] == pid]


def ab_arguments(doc: str, out: str, workload: str = "bench/workload_round.json", rounds: int = 2):
    """The command line the interleaved A/B scripts in bench/ share (--workload, --rounds,
    --threads, --model, --out); a script adds its own options to the returned parser."""
    import argparse
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default=workload)
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default=out)
    return ap


def ab_model(args) -> tuple:
    """An A/B script's model: `args.threads` torch threads, `args.model` loaded; (model, tokenizer,
    whether prompts are chat turns)."""
    import torch

    from seal.config import ModelConfig
    from seal.training.models import load_model, uses_chat
    torch.set_num_threads(args.threads)
    mcfg = ModelConfig(name=args.model)
    model, tok = load_model(mcfg)
    return model, tok, uses_chat(tok, mcfg)


def make_jobs(wl: dict) -> list:
    """One inner-loop job per (passage, self-edit), built exactly as `seal evaluate` builds them."""
    from seal import knowledge as K
    jobs = []
    for p in wl["passages"]:
        passage = K.Passage(p["id"], p["title"], p["context"], [K.QA(q["question"], q["answer"], p["title"]) for q in p["questions"]])
        for j, c in enumerate(p["selfedits"]):
            items = K.parse_selfedit(c, wl["template"])
            jobs.append(K.Job(f"{p['id']}/{j}", [p["id"]], K.training_examples(passage, items, wl["include_passage"]),
                              passage.questions, job_seed(wl["seed"], p["id"])))
    return jobs
