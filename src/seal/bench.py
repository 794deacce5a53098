"""`seal bench inner-loop`: how fast seal's inner loop scores a self-edit, next to the paper's
reference-style inner loop, on one fixed saved workload.

Workload. P passages of a SQuAD file, each with k fixed self-edit texts sampled once (fixed
seed) and saved to a JSON file (`bench/workload.json`), so every later run trains on exactly
the same texts. Self-edit generation speed (batched sampling, KV cache) is measured when the
workload is written, or again with `--measure-generation`.

Paths, each in its own fresh subprocess (so each peak RSS is its own):
  fast          seal's default: `run_inner_jobs` -> `train_adapters` (parallel_adapters=5, per-adapter
                AdamW) and the reward (gain in gold-answer log-probability), no answer generation
  fast+gen      the same, also generating every answer greedily (batched, KV cache)
  ref           reference style: per self-edit a deep copy of the model, a PEFT LoRA (same rank,
                alpha, targets, lr, epochs), `transformers.Trainer` with
                per_device_train_batch_size=1 (gradient accumulation to the same batch of 8),
                then greedy generation of every answer plus the same log-probability metric
  ref seed 2    the reference path again with other seeds (LoRA init, data order): the reward's
                own noise, on a documented subset
  ref pad2048   the reference path with every training sequence padded to 2048 tokens (as the
                paper's code does), timed on a few sequences and extrapolated per evaluation

FLOP counts are analytic (see `_train_flops`); the matmul peak is measured in the same run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .runs import atomic_write_json

WORKLOAD_VERSION = 1
PAD_LEN = 2048


# ----------------------------------------------------------------------------- small helpers

def _rss_peak_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def _rss_now_mib() -> float | None:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma") if f in have]
    except OSError:
        pass
    return []


def machine_info(threads: int) -> dict:
    import torch
    import transformers
    try:
        import peft
        peft_v = peft.__version__
    except ImportError:
        peft_v = None
    return {"cpu_model": _cpu_model(), "cpu_flags": _cpu_flags(), "logical_cpus": os.cpu_count(),
            "torch_threads": threads, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft_v, "python": platform.python_version(), "platform": platform.platform(),
            "load_avg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def matmul_peak(fp32_size: int = 2048, bf16_size: int = 512, reps: int = 5) -> dict:
    """Best GFLOP/s of square matmuls (2 n^3 FLOPs each) in fp32 and bf16, over sizes n, n/2 and
    n/4 and `reps` repeats each (the best size differs between machines and thread counts).

    bf16 starts from a smaller size: on CPUs without AVX-512 BF16 / AMX it is emulated and a
    2048 matmul would take about a minute. "machine" is the better of the two: the physical limit
    whatever dtype one trains in."""
    import torch
    out = {}
    for name, dtype, n0, r in (("fp32", torch.float32, fp32_size, reps), ("bf16", torch.bfloat16, bf16_size, 3)):
        best = {"gflops": 0.0}
        for n in sorted({max(64, n0 // 4), max(64, n0 // 2), n0}):
            g = torch.Generator().manual_seed(0)
            a = torch.randn(n, n, generator=g).to(dtype)
            b = torch.randn(n, n, generator=g).to(dtype)
            a @ b  # warm-up
            secs = math.inf
            for _ in range(r):
                t = time.perf_counter()
                a @ b
                secs = min(secs, time.perf_counter() - t)
            if 2 * n**3 / secs / 1e9 > best["gflops"]:
                best = {"size": n, "reps": r, "best_seconds": secs, "gflops": 2 * n**3 / secs / 1e9}
        out[name] = best
    top = max(("fp32", "bf16"), key=lambda k: out[k]["gflops"])
    out["machine"] = dict(out[top], dtype=top)
    return out


# ----------------------------------------------------------------------------- FLOP model

def model_dims(model) -> dict:
    """Matmul parameters (every nn.Linear weight, the tied lm_head included once as a matmul; the
    embedding lookup is no matmul) and the attention sizes."""
    from torch import nn
    n_lin = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    cfg = model.config
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return {"matmul_params": int(n_lin), "total_params": int(sum(p.numel() for p in model.parameters())),
            "layers": int(cfg.num_hidden_layers), "attn_dim": int(heads * head_dim)}


def _fwd_flops(dims: dict, T: int) -> float:
    """Forward FLOPs of one sequence of T tokens: 2 N per token for the matmuls plus causal
    attention (QK^T and AV: 2 * 2 * d_attn per (query, key) pair, T^2/2 pairs, per layer)."""
    return 2.0 * dims["matmul_params"] * T + 2.0 * dims["layers"] * dims["attn_dim"] * T * T


def _train_flops(dims: dict, T: int) -> float:
    """Training FLOPs of one sequence: forward + backward to the inputs only (frozen base
    weights get no weight gradient): 4 N per token; attention backward needs gradients of both
    of its activation operands, so attention counts 3x its forward. LoRA terms (< 2% here) are
    left out."""
    return _train_flops_totals(dims, T, T * T)


def _train_flops_totals(dims: dict, tokens: float, sq_tokens: float) -> float:
    """`_train_flops` summed over sequences, from their total tokens and total squared lengths."""
    return 4.0 * dims["matmul_params"] * tokens + 6.0 * dims["layers"] * dims["attn_dim"] * sq_tokens


def _gen_flops(dims: dict, prompt_len: int, new_tokens: int) -> float:
    """Greedy generation with a KV cache: the prompt's forward, then one token at a time
    (2 N each plus attention over the context so far)."""
    f = _fwd_flops(dims, prompt_len)
    for i in range(new_tokens):
        f += 2.0 * dims["matmul_params"] + 4.0 * dims["layers"] * dims["attn_dim"] * (prompt_len + i)
    return f


# ----------------------------------------------------------------------------- workload

def _job_seed(seed: int, *parts) -> int:
    from .engine import job_seed
    return job_seed(seed, *parts)


def create_workload(model_name: str, data: str, passages: int, k: int, seed: int, threads: int,
                    max_new_tokens: int = 0) -> dict:
    """Sample k self-edits for each of `passages` passages (deterministic subset and seed) and
    time the sampling."""
    import torch

    from .config import ModelConfig, SelfEditConfig
    from .generation import HFGenerator
    from .models import load_model, uses_chat
    from .tasks import knowledge as K

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
    comps = K.sample_selfedits(gen, tok, chat, chosen, se, k, _job_seed(seed, "selfedit", "own"), {},
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

    from .config import ModelConfig
    from .models import load_model, uses_chat
    torch.set_num_threads(args.threads)
    mcfg = ModelConfig(name=args.model)
    model, tok = load_model(mcfg)
    return model, tok, uses_chat(tok, mcfg)


def make_jobs(wl: dict) -> list:
    """One inner-loop job per (passage, self-edit), built exactly as `seal evaluate` builds them."""
    from .tasks import knowledge as K
    jobs = []
    for p in wl["passages"]:
        passage = K.Passage(p["id"], p["title"], p["context"], [K.QA(q["question"], q["answer"], p["title"]) for q in p["questions"]])
        for j, c in enumerate(p["selfedits"]):
            items = K.parse_selfedit(c, wl["template"])
            jobs.append(K.Job(f"{p['id']}/{j}", [p["id"]], K.training_examples(passage, items, wl["include_passage"]),
                              passage.questions, _job_seed(wl["seed"], p["id"])))
    return jobs


# ----------------------------------------------------------------------------- workers

class _CountingGenerator:
    """HFGenerator that also counts prompt and (useful) generated tokens for the FLOP model."""

    def __init__(self, model, tok, dims):
        from .generation import HFGenerator
        self.inner = HFGenerator(model, tok)
        self.tok, self.dims = tok, dims
        self.flops = 0.0
        self.new_tokens = 0

    def generate(self, prompts, **kw):
        out = self.inner.generate(prompts, **kw)
        cap = kw.get("max_new_tokens", 256)
        for p, outs in zip(prompts, out):
            pl = len(self.tok(p, add_special_tokens=False)["input_ids"])
            for o in outs:
                n = min(cap, len(self.tok(o, add_special_tokens=False)["input_ids"]) + 1)
                self.new_tokens += n
                self.flops += _gen_flops(self.dims, pl, n)
        return out


def _logprob_eval_flops(tok, dims, chat, questions) -> float:
    from .inner_loop import answer_ids
    from .tasks import knowledge as K
    f = 0.0
    for qa in questions:
        p = tok(K.qa_input(tok, qa, chat), add_special_tokens=False)["input_ids"]
        a = answer_ids(tok, qa.answer)
        f += _fwd_flops(dims, len(p) + len(a))
    return f


def _train_work(tok, jobs, inner, pad_to: int = 0) -> list[dict]:
    """Per job: real training tokens over all epochs and the FLOPs they take (padding to
    `pad_to` adds executed but useless FLOPs)."""
    from .inner_loop import tokenize_examples
    out = []
    for j in jobs:
        lens = [len(t.ids) for t in tokenize_examples(tok, j.examples, inner)]
        out.append({"sequences": len(lens), "tokens": inner.epochs * sum(lens), "lens": lens})
    return out


def _setup(spec: dict):
    import torch

    from .config import ModelConfig
    from .models import load_model, uses_chat
    torch.set_num_threads(spec["threads"])
    t = time.perf_counter()
    mcfg = ModelConfig(name=spec["model"])
    model, tok = load_model(mcfg)
    load_s = time.perf_counter() - t
    wl = json.loads(Path(spec["workload"]).read_text())
    jobs = make_jobs(wl)
    if spec.get("jobs") is not None:
        jobs = [j for j in jobs if j.key in set(spec["jobs"])]
    return model, tok, uses_chat(tok, mcfg), jobs, load_s


def _base(model, tok, chat, jobs) -> tuple[dict, float]:
    """Unadapted mean gold-answer log-probability per passage (the reward's baseline)."""
    from .config import EvalConfig
    from .tasks import knowledge as K
    seen = {}
    for j in jobs:
        seen.setdefault(j.passage_ids[0], j.questions)
    t = time.perf_counter()
    graded = K.score_rows(model, tok, None, chat, list(seen.values()), [-1] * len(seen),
                          EvalConfig(reward="logprob", generate=False))
    return {pid: K.mean_metrics(g)["logprob"] for pid, g in zip(seen, graded)}, time.perf_counter() - t


def run_fast(spec: dict) -> dict:
    from .config import EvalConfig, InnerLoopConfig
    from .engine import run_inner_jobs
    from .inner_loop import Speedups
    from .tasks import knowledge as K
    model, tok, chat, jobs, load_s = _setup(spec)
    rss_loaded = _rss_peak_mib()
    dims = model_dims(model)
    base, base_s = _base(model, tok, chat, jobs)
    inner = InnerLoopConfig(parallel_adapters=spec.get("parallel_adapters", 5))
    ev = EvalConfig(reward="logprob", generate=bool(spec.get("generate")))  # the bench reward is the log-prob gain
    gen = _CountingGenerator(model, tok, dims)
    res = {}
    compile_s = None
    if spec.get("compile"):
        import torch
        t = time.perf_counter()
        model.forward = torch.compile(model.forward, dynamic=True)
        compile_s = time.perf_counter() - t  # lazy: the real cost lands in the first step
    speed = Speedups(**spec.get("speedups", {}))
    t = time.perf_counter()
    run_inner_jobs(K.QAInnerLoop(inner, ev, speed=speed), model, tok, gen, chat, jobs,
                   lambda j, r: res.__setitem__(j.key, r))
    total = time.perf_counter() - t
    train_s = sum(r["train_seconds"] for r in res.values())
    work = _train_work(tok, jobs, inner)
    # FLOPs of what ran: sequences shared by fresh adapters ran once (inner_loop.share_rows)
    ex_tok = sum(res[j.key]["train"]["executed_tokens"] for j in jobs)
    ex_sq = sum(res[j.key]["train"]["executed_sq_tokens"] for j in jobs)
    train_flops = _train_flops_totals(dims, ex_tok, ex_sq)
    eval_flops = sum(_logprob_eval_flops(tok, dims, chat, j.questions) for j in jobs) + gen.flops
    return {
        "path": spec["name"], "evaluations": len(jobs), "seconds": total, "train_seconds": train_s,
        "eval_seconds": total - train_s, "train_tokens": sum(w["tokens"] for w in work),
        "executed_train_tokens": ex_tok,
        "train_flops": train_flops, "eval_flops": eval_flops, "generated_tokens": gen.new_tokens,
        "load_seconds": load_s, "base_seconds": base_s, "compile_setup_seconds": compile_s,
        "rewards": {j.key: res[j.key]["metrics"]["logprob"] - base[j.passage_ids[0]] for j in jobs},
        "metrics": {j.key: res[j.key]["metrics"] for j in jobs},
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_peak_mib(), "dims": dims,
        "settings": {"parallel_adapters": inner.parallel_adapters, "generate": ev.generate,
                     "compile": bool(spec.get("compile")), "speedups": dataclasses.asdict(speed)},
    }


def _ref_train(model, tok, job, inner, seed: int, pad_to: int, max_seqs: int, tmpdir: str):
    """One reference-style update: deep copy, PEFT LoRA, HF Trainer (batch 1). Returns the
    adapted PEFT model, the setup and training seconds and how many sequences were trained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from .inner_loop import tokenize_examples

    hf_logging.set_verbosity_error()
    t0 = time.perf_counter()
    m = copy.deepcopy(model)
    torch.manual_seed(seed)  # PEFT's LoRA init (kaiming-uniform A, zero B) draws from the global RNG
    lc = LoraConfig(r=inner.lora.rank, lora_alpha=inner.lora.alpha, target_modules=list(inner.lora.targets),
                    lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(m, lc)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = []
    for t in tokenize_examples(tok, job.examples, inner):
        ids = list(t.ids)
        labels = [-100] * t.loss_from + ids[t.loss_from:]
        attn = [1] * len(ids)
        if pad_to and len(ids) < pad_to:
            extra = pad_to - len(ids)
            ids, labels, attn = ids + [pad] * extra, labels + [-100] * extra, attn + [0] * extra
        rows.append({"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(attn), "labels": torch.tensor(labels)})

    def collate(batch):
        return {k: torch.stack([b[k] for b in batch]) for k in batch[0]}

    kw = dict(output_dir=tmpdir, per_device_train_batch_size=1, learning_rate=inner.lr,
              lr_scheduler_type="constant", warmup_steps=0, weight_decay=inner.weight_decay,
              max_grad_norm=inner.max_grad_norm or 0.0, optim="adamw_torch", seed=seed, data_seed=seed,
              save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
              dataloader_num_workers=0, remove_unused_columns=False)
    if max_seqs:  # padded variant: time a few sequences only (one per optimizer step)
        kw.update(gradient_accumulation_steps=1, max_steps=max_seqs)
        trained = max_seqs
    else:
        kw.update(gradient_accumulation_steps=inner.batch_size, num_train_epochs=inner.epochs)
        trained = inner.epochs * len(rows)
    trainer = Trainer(model=pm, args=TrainingArguments(**kw), train_dataset=rows, data_collator=collate)
    trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the bar for a printed metrics dict
    t1 = time.perf_counter()
    trainer.train()
    t2 = time.perf_counter()
    pm.eval()
    return pm, t1 - t0, t2 - t1, trained, len(rows)


def run_ref(spec: dict) -> dict:
    from .config import EvalConfig, InnerLoopConfig
    from .inner_loop import Speedups
    from .tasks import knowledge as K
    model, tok, chat, jobs, load_s = _setup(spec)
    rss_loaded = _rss_peak_mib()
    dims = model_dims(model)
    base, base_s = _base(model, tok, chat, jobs)
    inner = InnerLoopConfig()
    ev = EvalConfig(generate=True)
    pad_to = int(spec.get("pad_to", 0))
    max_seqs = int(spec.get("max_seqs", 0))
    setup_s = train_s = eval_s = 0.0
    train_flops = eval_flops = 0.0
    tokens = trained_seqs = gen_tokens = 0
    est_train_s = 0.0
    rewards, metrics, per_job = {}, {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for j in jobs:
            seed = j.seed + int(spec.get("seed_offset", 0))
            pm, s_setup, s_train, n_trained, n_rows = _ref_train(model, tok, j, inner, seed, pad_to, max_seqs, tmp)
            gen = _CountingGenerator(pm, tok, dims)
            t = time.perf_counter()
            # reference style: transformers' generate, and a forward of its own for the log-probs
            graded = K.score_rows(pm, tok, gen, chat, [j.questions], [-1], ev, speed=Speedups(share_prefill=False))[0]
            s_eval = time.perf_counter() - t
            lens = _train_work(tok, [j], inner)[0]["lens"]
            if max_seqs:
                per_seq = s_train / n_trained
                full = inner.epochs * n_rows
                est_train_s += per_seq * full
                train_flops += _train_flops(dims, pad_to) * n_trained  # executed, padding included
                tokens += n_trained * pad_to
            else:
                train_flops += inner.epochs * sum(_train_flops(dims, n) for n in lens)
                tokens += inner.epochs * sum(lens)
                est_train_s += s_train
            trained_seqs += n_trained
            eval_flops += _logprob_eval_flops(tok, dims, chat, j.questions) + gen.flops
            gen_tokens += gen.new_tokens
            setup_s += s_setup
            train_s += s_train
            eval_s += s_eval
            m = K.mean_metrics(graded)
            metrics[j.key] = m
            rewards[j.key] = m["logprob"] - base[j.passage_ids[0]]
            per_job.append({"key": j.key, "setup_seconds": s_setup, "train_seconds": s_train,
                            "eval_seconds": s_eval, "trained_sequences": n_trained, "sequences": n_rows})
            del pm, gen
    out = {
        "path": spec["name"], "evaluations": len(jobs), "setup_seconds": setup_s, "train_seconds": train_s,
        "eval_seconds": eval_s, "seconds": setup_s + train_s + eval_s, "train_tokens": tokens,
        "train_flops": train_flops, "eval_flops": eval_flops, "generated_tokens": gen_tokens,
        "load_seconds": load_s, "base_seconds": base_s, "per_job": per_job,
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": _rss_peak_mib(), "dims": dims,
        "settings": {"pad_to": pad_to, "seed_offset": int(spec.get("seed_offset", 0)), "generate": True,
                     "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1 if max_seqs else inner.batch_size},
    }
    if max_seqs:
        # training timed on `max_seqs` padded sequences per self-edit, extrapolated to the
        # epochs x sequences a full update trains; rewards of truncated training mean nothing
        out["extrapolated"] = True
        out["estimated_seconds"] = setup_s + est_train_s + eval_s
        out["estimated_train_seconds"] = est_train_s
        out["seconds_per_padded_sequence"] = train_s / max(1, trained_seqs)
    else:
        out["rewards"], out["metrics"] = rewards, metrics
    return out


WORKERS = {"fast": run_fast, "ref": run_ref}
"""The function that runs a path, by kind; bench_round.py adds its `round-*` paths when imported."""


def worker_for(kind: str):
    """The function that runs a path of this kind."""
    return WORKERS[kind]


def worker_env(threads: int) -> dict:
    """The environment of a benchmark worker process: its thread count, quiet and offline, and
    this process's pid, so that the worker ends with it (`executors.die_with_parent`)."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error",
                HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", SEAL_BENCH_PARENT=str(os.getpid()))


def _worker_main(spec_path: str, out_path: str) -> None:
    import warnings
    if os.environ.get("SEAL_BENCH_PARENT"):
        from .executors import die_with_parent
        die_with_parent(int(os.environ["SEAL_BENCH_PARENT"]))
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    spec = json.loads(Path(spec_path).read_text())
    res = worker_for(spec["kind"])(spec)
    Path(out_path).write_text(json.dumps(res))


def start_worker(spec: dict, tmp: str) -> tuple[subprocess.Popen, Path]:
    """Start one path in a fresh subprocess (its own peak RSS) that writes its result to the
    returned file in `tmp`; `finish_worker` waits for it."""
    sp, op = Path(tmp) / f"{spec['name']}.spec.json", Path(tmp) / f"{spec['name']}.out.json"
    sp.write_text(json.dumps(spec))
    # the worker process runs the module that defines the path (bench_round.py for `round-*`)
    module = worker_for(spec["kind"]).__module__
    return subprocess.Popen([sys.executable, "-m", module, "--worker", str(sp), str(op)],
                            env=worker_env(spec["threads"])), op


def finish_worker(proc: subprocess.Popen, out: Path, spec: dict) -> dict:
    if proc.wait() != 0 or not out.exists():
        raise RuntimeError(f"benchmark path {spec['name']!r} failed (exit {proc.returncode})")
    return json.loads(out.read_text())


def run_path(spec: dict, in_process: bool) -> dict:
    """Run one path in a fresh subprocess, or here (tests)."""
    if in_process:
        return worker_for(spec["kind"])(spec)
    with tempfile.TemporaryDirectory() as tmp:
        return finish_worker(*start_worker(spec, tmp), spec)


def _generation_worker(spec: dict) -> dict:
    return create_workload(spec["model"], spec["data"], spec["passages"], spec["k"], spec["seed"], spec["threads"],
                           spec.get("max_new_tokens", 0))


WORKERS["generate"] = _generation_worker


# ----------------------------------------------------------------------------- report

def _rate(r: dict) -> dict:
    secs = r.get("estimated_seconds", r["seconds"])
    train_s = r.get("estimated_train_seconds", r["train_seconds"])
    return {
        "evals_per_min": 60.0 * r["evaluations"] / secs if secs else float("nan"),
        "seconds_per_eval": secs / r["evaluations"],
        "train_tokens_per_s": r["train_tokens"] / r["train_seconds"] if r["train_seconds"] else float("nan"),
        "train_gflops": r["train_flops"] / r["train_seconds"] / 1e9 if r["train_seconds"] else float("nan"),
        "eval_gflops": r["eval_flops"] / r["eval_seconds"] / 1e9 if r["eval_seconds"] else float("nan"),
        "train_share": train_s / secs if secs else float("nan"),
    }


def _within_passage_spearman(a: dict, b: dict) -> float | None:
    from .stats import spearman
    by_p: dict[str, list[str]] = {}
    for key in a:
        if key in b:
            by_p.setdefault(key.split("/")[0], []).append(key)
    vals = [spearman([a[k] for k in ks], [b[k] for k in ks]) for ks in by_p.values() if len(ks) >= 3]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def fidelity(a: dict, b: dict) -> dict:
    from .stats import spearman
    keys = sorted(set(a) & set(b))
    return {"n": len(keys), "spearman": spearman([a[k] for k in keys], [b[k] for k in keys]),
            "spearman_within_passage_mean": _within_passage_spearman(a, b),
            "mean_reward_a": sum(a[k] for k in keys) / len(keys) if keys else None,
            "mean_reward_b": sum(b[k] for k in keys) / len(keys) if keys else None}


def render(result: dict) -> str:
    peak = result["matmul_peak"]
    p32, p16 = peak["fp32"]["gflops"], peak["bf16"]["gflops"]
    lines = []
    g = result["generation"]
    w = result["workload"]
    sub = f" (subset: workload passages {w['subset']})" if w.get("subset") else ""
    lines.append(f"workload: {len(w['benchmarked_passage_ids'])} passages{sub} x {w['k']} self-edits "
                 f"= {w['evaluations']} evaluations  (sha256 {result['workload']['hash'][:12]}, "
                 f"data {result['workload']['data_sha256'][:12]})")
    lines.append(f"machine: {result['machine']['cpu_model']}, torch {result['machine']['torch']}, "
                 f"{result['machine']['torch_threads']} threads; matmul peak fp32 {p32:.1f} GFLOP/s "
                 f"({peak['fp32']['size']}^2), bf16 {p16:.2f} GFLOP/s ({peak['bf16']['size']}^2); "
                 f"CPU flags {' '.join(result['machine'].get('cpu_flags', [])) or '?'}")
    lines.append(f"self-edit generation ({g.get('measured', 'when the workload was created')}): "
                 f"{g['tokens_per_second']:.1f} tokens/s ({g['generated_tokens']} tokens, {g['completions']} "
                 f"completions, batch {g['batch_size']}, {g['seconds']:.1f} s)")
    lines.append("")
    head = (f"{'path':<26}{'evals':>6}{'s/eval':>9}{'evals/min':>10}{'train tok/s':>12}{'train GFLOP/s':>14}"
            f"{'%fp32':>7}{'eval GFLOP/s':>13}{'%fp32':>7}{'peak RSS MiB':>13}")
    lines += [head, "-" * len(head)]
    for name, r in result["paths"].items():
        x = result["rates"][name]
        star = "*" if r.get("extrapolated") else ""
        lines.append(f"{name + star:<26}{r['evaluations']:>6}{x['seconds_per_eval']:>9.1f}{x['evals_per_min']:>10.2f}"
                     f"{x['train_tokens_per_s']:>12.0f}{x['train_gflops']:>14.1f}{x['train_gflops'] / p32:>7.0%}"
                     f"{x['eval_gflops']:>13.1f}{x['eval_gflops'] / p32:>7.0%}{r['peak_rss_mib']:>13.0f}")
    if any(r.get("extrapolated") for r in result["paths"].values()):
        lines.append("* padded to 2048: training timed on a few padded sequences per self-edit and extrapolated "
                     "to the full update (epochs x sequences); s/eval and evals/min are estimates; "
                     "its tok/s and GFLOP/s count the padding it executes.")
    lines.append("")
    for name, f in result["fidelity"].items():
        lines.append(f"reward agreement {name}: Spearman {_na(f['spearman'], '.3f')} over {f['n']} self-edits "
                     f"(mean within-passage {_na(f['spearman_within_passage_mean'], '.3f')}); "
                     f"mean reward {_na(f['mean_reward_a'], '+.3f')} vs {_na(f['mean_reward_b'], '+.3f')}")
    lines.append("")
    lines.append(result["notes"]["flops"])
    lines.append(result["notes"]["timing"])
    lines.append("")
    lines.append(result["summary"])
    return "\n".join(lines)


def _na(x, spec: str) -> str:
    """`x` formatted, or n/a where a statistic is undefined (None)."""
    return "n/a" if x is None else format(x, spec)


def summary_line(result: dict) -> str:
    """Speed-up over the reference-style path first, then the fraction of the machine's matmul
    peak, peak RSS and reward agreement (the issue's order), then the other ratios."""
    rates, paths, fid = result["rates"], result["paths"], result["fidelity"]
    peak = result["matmul_peak"]
    p32, p16 = peak["fp32"]["gflops"], peak["bf16"]["gflops"]
    top = peak.get("machine", dict(peak["fp32"], dtype="fp32"))
    sp = rates["fast"]["evals_per_min"] / rates["ref"]["evals_per_min"]
    tg = rates["fast"]["train_gflops"]
    parts = [f"{sp:.1f}x self-edit evaluations/min over the reference-style (unpadded) inner loop"]
    if top["dtype"] == "bf16":
        parts.append(f"training at {tg / p16:.0%} of the bf16 matmul peak ({tg:.1f}/{p16:.0f} GFLOP/s)")
    else:
        parts.append(f"training at {tg / p32:.0%} of this machine's matmul peak, which is fp32 "
                     f"({tg:.1f}/{p32:.0f} GFLOP/s; bf16 is emulated here at {p16:.2f} GFLOP/s, "
                     f"so the bf16 'peak' is {tg / p16:.0f}x below what training reaches)")
    parts.append(f"peak RSS {paths['fast']['peak_rss_mib'] / 1024:.1f} GiB (reference {paths['ref']['peak_rss_mib'] / 1024:.1f} GiB)")
    f1 = fid.get("fast vs ref")
    f2 = fid.get("ref vs ref (seed noise)")
    if f1:
        s = f"reward Spearman fast-vs-ref {_na(f1['spearman'], '.2f')} (n={f1['n']})"
        if f2:
            s += f" vs ref-vs-ref {_na(f2['spearman'], '.2f')} (n={f2['n']})"
        parts.append(s)
    if "fast+gen" in rates:
        parts.append(f"{rates['fast+gen']['evals_per_min'] / rates['ref']['evals_per_min']:.1f}x with answer generation")
    if "ref pad2048" in rates:
        parts.append(f"{rates['fast']['evals_per_min'] / rates['ref pad2048']['evals_per_min']:.0f}x over padded-2048 (est.)")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- command

def speedup_variants() -> dict[str, tuple[int, dict[str, bool]]]:
    """The ablation of `inner_loop.Speedups`: name -> (parallel adapters, switches turned off):
    all on, each switch off alone, all off (shared by `--ablate` and bench/ab_inner_loop.py)."""
    from .inner_loop import Speedups
    names = [f.name for f in dataclasses.fields(Speedups)]
    out = {"all on": (5, {})}
    out.update({f"-{n}": (5, {n: False}) for n in names})
    out["all off"] = (5, {n: False for n in names})
    return out


def bench_inner_loop(args) -> dict:
    from .tasks import knowledge as K
    threads = args.threads
    import torch
    torch.set_num_threads(threads)
    t_start = time.time()
    wpath = Path(args.workload)
    base_spec = {"model": args.model, "threads": threads, "workload": str(wpath), "seed": args.seed}
    gen_stats = None
    if wpath.exists():
        wl = json.loads(wpath.read_text())
        if wl.get("version") != WORKLOAD_VERSION:
            raise K.DataError(f"{wpath}: workload version {wl.get('version')} (expected {WORKLOAD_VERSION})")
        if wl["model"] != args.model:
            print(f"note: workload was sampled with model {wl['model']!r}; benchmarking {args.model!r}")
        if Path(args.data).exists() and K.file_sha256(args.data) != wl["data_sha256"]:
            print(f"note: {args.data} differs from the file the workload was built from (sha256); "
                  "the workload carries its own passages, so the benchmark is unchanged")
        print(f"workload: {wpath} ({len(wl['passages'])} passages x {wl['k']} self-edits)")
    else:
        if not Path(args.data).exists():
            raise K.DataError(f"{args.data}: no such data file (--data)")
        print(f"sampling the workload once: {args.passages} passages x {args.k} self-edits -> {wpath}")
        wl = run_path({**base_spec, "kind": "generate", "name": "generate", "data": args.data,
                       "passages": args.passages, "k": args.k, "max_new_tokens": args.max_new_tokens}, args.in_process)
        wpath.parent.mkdir(parents=True, exist_ok=True)
        wpath.write_text(json.dumps(wl, indent=1) + "\n")
        gen_stats = dict(wl["generation"], measured="this run, while creating the workload")
    if args.measure_generation and gen_stats is None:
        print("measuring self-edit generation speed")
        fresh = run_path({**base_spec, "kind": "generate", "name": "generate", "data": wl["data"] if Path(wl["data"]).exists() else args.data,
                          "passages": len(wl["passages"]), "k": wl["k"],
                          "max_new_tokens": wl["generation"]["max_new_tokens"]}, args.in_process)
        gen_stats = dict(fresh["generation"], measured="this run (--measure-generation)")
    if gen_stats is None:
        gen_stats = dict(wl["generation"], measured="when the workload was created (rerun with --measure-generation)")

    pids = [p["id"] for p in wl["passages"]]
    if args.subset:
        bad = [i for i in args.subset if not 0 <= i < len(pids)]
        if bad:
            raise K.DataError(f"--subset {bad}: the workload has passages 0..{len(pids) - 1}")
        pids = [pids[i] for i in args.subset]
    all_keys = [j.key for j in make_jobs(wl) if j.key.split("/")[0] in pids]

    def keys_of(n_passages: int, per_passage: int = 0) -> list[str]:
        ps = pids if n_passages <= 0 else pids[:n_passages]
        out = [k for k in all_keys if k.split("/")[0] in ps]
        if per_passage:
            out = [k for k in out if int(k.split("/")[1]) < per_passage]
        return out

    print("measuring the matmul peak")
    peak = matmul_peak(args.peak_size, args.bf16_peak_size)
    specs = [("fast", {"kind": "fast", "generate": False, "jobs": all_keys})]
    if not args.skip_generate_variant:
        specs.append(("fast+gen", {"kind": "fast", "generate": True, "jobs": all_keys}))
    specs.append(("ref", {"kind": "ref", "jobs": keys_of(args.ref_passages)}))
    if args.noise_passages != 0:
        specs.append(("ref seed 2", {"kind": "ref", "seed_offset": 1,
                                     "jobs": keys_of(args.noise_passages, args.noise_selfedits)}))
    if args.padded_selfedits > 0:
        specs.append(("ref pad2048", {"kind": "ref", "pad_to": args.pad_to, "max_seqs": args.padded_seqs,
                                      "jobs": keys_of(1, args.padded_selfedits)}))
    for pa in args.parallel_variants:
        specs.append((f"fast pa={pa}", {"kind": "fast", "parallel_adapters": pa, "jobs": all_keys}))
    if args.compile_variant:
        specs.append(("fast compile", {"kind": "fast", "compile": True, "jobs": all_keys}))
    if args.ablate:
        # each speed-up switched off alone, then all of them, on the first passages only
        jobs = keys_of(args.ablate_passages)
        variants = speedup_variants()
        variants["all off pa=1"] = (1, variants["all off"][1])
        for name, (pa, off) in variants.items():
            specs.append((f"ablate: {name}", {"kind": "fast", "jobs": jobs, "parallel_adapters": pa, "speedups": off}))

    paths = {}
    for name, extra in specs:
        print(f"running path {name!r} ...", flush=True)
        t = time.time()
        paths[name] = run_path({**base_spec, **extra, "name": name}, args.in_process)
        print(f"  done in {time.time() - t:.0f} s", flush=True)
    rates = {n: _rate(r) for n, r in paths.items()}
    fid = {}
    if "rewards" in paths.get("ref", {}):
        fid["fast vs ref"] = fidelity(paths["fast"]["rewards"], paths["ref"]["rewards"])
    if "ref seed 2" in paths:
        fid["ref vs ref (seed noise)"] = fidelity(paths["ref"]["rewards"], paths["ref seed 2"]["rewards"])
    if "fast+gen" in paths:
        fid["fast vs fast+gen (same training)"] = fidelity(paths["fast"]["rewards"], paths["fast+gen"]["rewards"])
    dims = paths["fast"]["dims"]
    result = {
        "command": "seal bench inner-loop", "argv": sys.argv[1:], "seed": args.seed,
        "config": {k: v for k, v in vars(args).items() if k != "func"},
        "inner_loop_config": _inner_defaults(),
        "workload": {"file": str(wpath), "hash": workload_hash(wl), "data": wl["data"], "data_sha256": wl["data_sha256"],
                     "passage_ids": wl["passage_ids"], "passages": len(wl["passages"]), "k": wl["k"],
                     "subset": args.subset or None, "benchmarked_passage_ids": pids,
                     "evaluations": len(all_keys), "model": wl["model"]},
        "machine": machine_info(threads), "matmul_peak": peak, "generation": gen_stats,
        "model_dims": dims, "paths": paths, "rates": rates, "fidelity": fid,
        "subsets": {n: {"evaluations": r["evaluations"]} for n, r in paths.items()},
        "notes": {
            "flops": (f"FLOPs: N = {dims['matmul_params'] / 1e6:.1f}M matmul parameters (all nn.Linear incl. the tied "
                      "lm_head; embedding lookup excluded). Training = 4N per token (forward + input-gradient "
                      "backward; frozen base gets no weight gradient) + causal attention 6*L*d_attn*T^2 per "
                      "sequence (forward 2*L*d*T^2, backward 2x), LoRA terms neglected (<2%). Evaluation = 2N per "
                      "token + forward attention for the log-prob pass, and prompt prefill + 2N per generated token "
                      "+ KV-cache attention for greedy generation. %fp32 = achieved / this run's fp32 matmul peak."),
            "timing": ("Times exclude model loading and the unadapted model's baseline scores (once per passage, "
                       "shared by its k self-edits); the reference path's time includes its per-self-edit deep copy, "
                       "PEFT wrapping and Trainer setup. Each path runs in its own fresh subprocess; peak RSS is that "
                       "process's maximum (model load included)."),
        },
        "wall_seconds": None,
    }
    result["summary"] = summary_line(result)
    result["wall_seconds"] = time.time() - t_start
    return result


def _inner_defaults() -> dict:
    from .config import InnerLoopConfig, to_dict
    return to_dict(InnerLoopConfig())


def write_report(name: str, result: dict, text: str, out: Path, md: Path, argv) -> None:
    """Print a benchmark's report and save it: the result as strict JSON (an undefined figure is
    null) and the printed text as Markdown with the command that made it."""
    print()
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result)
    md.write_text(f"# seal bench {name}\n\n```\n" + text + "\n```\n\nCommand: `seal bench " +
                  " ".join(argv[1:] if argv and argv[:1] == ["bench"] else (argv or [])) + "`\n")
    print(f"\nwrote {out} and {md}")


def cmd_inner_loop(args, argv=None) -> int:
    result = bench_inner_loop(args)
    out = Path(args.out)
    write_report("inner-loop", result, render(result), out, Path(args.md) if args.md else out.with_suffix(".md"), argv)
    return 0


def _at_least(low: int):
    """An argparse type: an integer >= low (a clear usage error instead of a failure mid-benchmark)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def add_cli(subparsers) -> argparse._SubParsersAction:
    """`seal bench` with `inner-loop`; returns its subcommands (bench_round.add_cli adds `round`)."""
    p = subparsers.add_parser("bench", help="benchmarks", description="Benchmarks of seal's hot paths.")
    sub = p.add_subparsers(dest="bench", required=True)
    q = sub.add_parser("inner-loop", help="inner-loop speed vs a reference-style (PEFT + Trainer) inner loop",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    q.add_argument("--model", default="default", help="model to adapt (default: the bundled SmolLM2-135M-Instruct)")
    q.add_argument("--data", default="../shared/data/squad/dev.json", help="SQuAD file the workload is drawn from")
    q.add_argument("--passages", type=_at_least(1), default=3, help="passages in a new workload (default 3)")
    q.add_argument("--k", type=_at_least(1), default=5, help="self-edits per passage in a new workload (default 5)")
    q.add_argument("--max-new-tokens", type=_at_least(0), default=0, help="self-edit length cap for a new workload (0: selfedit default)")
    q.add_argument("--workload", default="bench/workload.json", help="fixed workload file (created if missing)")
    q.add_argument("--measure-generation", action="store_true", help="time self-edit sampling again in this run")
    q.add_argument("--out", default="results/bench_inner_loop.json", help="JSON result file")
    q.add_argument("--md", default="", help="Markdown copy of the printed report (default: --out with .md)")
    q.add_argument("--seed", type=_at_least(0), default=0, help="seed of the workload (passage choice, sampling, inner-loop seeds)")
    q.add_argument("--threads", type=_at_least(1), default=2, help="torch threads for every path (default 2)")
    q.add_argument("--subset", type=int, nargs="*", default=[], metavar="I",
                   help="benchmark only these workload passages (0-based), e.g. to fit a time budget")
    q.add_argument("--ref-passages", type=_at_least(0), default=0, help="reference path on the first N passages (0: all)")
    q.add_argument("--noise-passages", type=_at_least(-1), default=1,
                   help="second-seed reference run on the first N passages (0: skip; -1: all)")
    q.add_argument("--noise-selfedits", type=_at_least(0), default=0, help="... and the first M self-edits of each (0: all)")
    q.add_argument("--padded-selfedits", type=_at_least(0), default=2, help="self-edits (of passage 1) for the padded-2048 variant (0: skip)")
    q.add_argument("--pad-to", type=_at_least(1), default=PAD_LEN, help="padded length of the padded variant (default 2048, as the paper's code)")
    q.add_argument("--padded-seqs", type=_at_least(1), default=2, help="padded sequences timed per self-edit, then extrapolated")
    q.add_argument("--skip-generate-variant", action="store_true", help="no fast path with answer generation")
    q.add_argument("--parallel-variants", type=int, nargs="*", default=[], metavar="N",
                   help="extra fast-path runs with inner.parallel_adapters=N (e.g. 1)")
    q.add_argument("--compile-variant", action="store_true", help="extra fast-path run under torch.compile")
    q.add_argument("--ablate", action="store_true",
                   help="extra fast-path runs with each inner_loop.Speedups switch off, all off, and all off "
                        "with one adapter at a time (on --ablate-passages passages)")
    q.add_argument("--ablate-passages", type=_at_least(1), default=1, help="workload passages for --ablate (default 1)")
    q.add_argument("--peak-size", type=_at_least(1), default=2048, help="fp32 matmul size for the peak")
    q.add_argument("--bf16-peak-size", type=_at_least(1), default=512, help="bf16 matmul size for the peak (emulated bf16 is slow)")
    q.add_argument("--in-process", action="store_true", help="run every path in this process (tests; peaks then mix)")
    q.set_defaults(func=cmd_inner_loop)
    return sub


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2], sys.argv[3])
    else:
        print("usage: seal bench inner-loop [...]", file=sys.stderr)
        sys.exit(2)
