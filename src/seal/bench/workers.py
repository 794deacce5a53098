"""The benchmark's paths, each run in a fresh subprocess so its peak RSS is its own: `fast`
(seal's inner loop) and `ref` (the reference code's style: a model copy, PEFT LoRA and a
Trainer per self-edit)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seal.bench.machine import fwd_flops, gen_flops, model_dims, rss_peak_mib, sequence_train_flops, train_flops_totals
from seal.bench.workload import create_workload, make_jobs

PAD_LEN = 2048  # the paper's code pads every training sequence to 2048 tokens


class _CountingGenerator:
    """HFGenerator that also counts prompt and (useful) generated tokens for the FLOP model."""

    def __init__(self, model, tok, dims):
        from seal.training.generation import HFGenerator
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
                self.flops += gen_flops(self.dims, pl, n)
        return out


def _logprob_eval_flops(tok, dims, chat, questions) -> float:
    from seal import knowledge as K
    from seal.training.inner_loop import answer_ids
    f = 0.0
    for qa in questions:
        p = tok(K.qa_input(tok, qa, chat), add_special_tokens=False)["input_ids"]
        a = answer_ids(tok, qa.answer)
        f += fwd_flops(dims, len(p) + len(a))
    return f


def _train_work(tok, jobs, inner, pad_to: int = 0) -> list[dict]:
    """Per job: real training tokens over all epochs and the FLOPs they take (padding to
    `pad_to` adds executed but useless FLOPs)."""
    from seal.training.inner_loop import tokenize_examples
    out = []
    for j in jobs:
        lens = [len(t.ids) for t in tokenize_examples(tok, j.examples, inner)]
        out.append({"sequences": len(lens), "tokens": inner.epochs * sum(lens), "lens": lens})
    return out


def _setup(spec: dict):
    import torch

    from seal.config import ModelConfig
    from seal.training.models import load_model, uses_chat
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
    from seal import knowledge as K
    from seal.config import EvalConfig
    seen = {}
    for j in jobs:
        seen.setdefault(j.passage_ids[0], j.questions)
    t = time.perf_counter()
    graded = K.score_rows(model, tok, None, chat, list(seen.values()), [-1] * len(seen),
                          EvalConfig(reward="logprob", generate=False))
    return {pid: K.mean_metrics(g)["logprob"] for pid, g in zip(seen, graded)}, time.perf_counter() - t


def run_fast(spec: dict) -> dict:
    from seal import knowledge as K
    from seal.config import EvalConfig, InnerLoopConfig
    from seal.engine.jobs import run_inner_jobs
    from seal.training.inner_loop import Speedups
    model, tok, chat, jobs, load_s = _setup(spec)
    rss_loaded = rss_peak_mib()
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
    train_flops = train_flops_totals(dims, ex_tok, ex_sq)
    eval_flops = sum(_logprob_eval_flops(tok, dims, chat, j.questions) for j in jobs) + gen.flops
    return {
        "path": spec["name"], "evaluations": len(jobs), "seconds": total, "train_seconds": train_s,
        "eval_seconds": total - train_s, "train_tokens": sum(w["tokens"] for w in work),
        "executed_train_tokens": ex_tok,
        "train_flops": train_flops, "eval_flops": eval_flops, "generated_tokens": gen.new_tokens,
        "load_seconds": load_s, "base_seconds": base_s, "compile_setup_seconds": compile_s,
        "rewards": {j.key: res[j.key]["metrics"]["logprob"] - base[j.passage_ids[0]] for j in jobs},
        "metrics": {j.key: res[j.key]["metrics"] for j in jobs},
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": rss_peak_mib(), "dims": dims,
        "settings": {"parallel_adapters": inner.parallel_adapters, "generate": ev.generate,
                     "compile": bool(spec.get("compile")), "speedups": dataclasses.asdict(speed)},
    }


def ref_train(model, tok, job, inner, seed: int, pad_to: int, max_seqs: int, tmpdir: str):
    """One reference-style update: deep copy, PEFT LoRA, HF Trainer (batch 1). Returns the
    adapted PEFT model, the setup and training seconds and how many sequences were trained."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from seal.training.inner_loop import tokenize_examples

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
    from seal import knowledge as K
    from seal.config import EvalConfig, InnerLoopConfig
    from seal.training.inner_loop import Speedups
    model, tok, chat, jobs, load_s = _setup(spec)
    rss_loaded = rss_peak_mib()
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
            pm, s_setup, s_train, n_trained, n_rows = ref_train(model, tok, j, inner, seed, pad_to, max_seqs, tmp)
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
                train_flops += sequence_train_flops(dims, pad_to) * n_trained  # executed, padding included
                tokens += n_trained * pad_to
            else:
                train_flops += inner.epochs * sum(sequence_train_flops(dims, n) for n in lens)
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
        "rss_after_load_mib": rss_loaded, "peak_rss_mib": rss_peak_mib(), "dims": dims,
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
"""The function that runs a path, by kind; bench/round.py adds its `round-*` paths when imported."""


def worker_for(kind: str):
    """The function that runs a path of this kind."""
    return WORKERS[kind]


def worker_env(threads: int) -> dict:
    """The environment of a benchmark worker process: its thread count, quiet and offline, and
    this process's pid, so that the worker ends with it (`executors.die_with_parent`)."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TRANSFORMERS_VERBOSITY="error",
                HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", SEAL_BENCH_PARENT=str(os.getpid()))


def worker_main(spec_path: str, out_path: str) -> None:
    import warnings
    if os.environ.get("SEAL_BENCH_PARENT"):
        from seal.engine.executors import die_with_parent
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
    # the worker process runs the module that defines the path (bench/round.py for `round-*`)
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


if __name__ == "__main__":  # the worker process of a `fast` or `ref` path (start_worker)
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        print("usage: python -m seal.bench.workers --worker SPEC OUT", file=sys.stderr)
        sys.exit(2)
