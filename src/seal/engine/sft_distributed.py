"""The M-step's SFT on several processes (GPUs, or CPU processes) with `accelerate`.

ReSTEM's M-step (paper section 3.1) finetunes the generator on the self-edits it kept:
theta_{t+1} = SFT(theta_t, {(C -> SE)}), loss on the self-edit tokens only. seal trains a LoRA
on the generator and merges it (`restem.sft`). Here the same update runs data-parallel:

    accelerate launch --multi_gpu --num_processes N -m seal.cli sft --model M --examples kept.jsonl --out DIR

(`--multi_gpu` starts N processes; on a machine without a GPU they train on the CPU and sum
their gradients over gloo. `seal train --restem.sft_processes N` and `seal arc train
--restem.sft_processes N` run this command themselves: `launch`.)

Every process holds the whole model and the same LoRA (same seed), and walks the same schedule
of steps (`inner_loop.schedule`: the same shuffled batches of `restem.sft_batch_size` examples
as one process would). At each step process r takes every N-th example of the step's batch,
backpropagates its share of the step's loss, each token weighted by 1 / (target tokens in the
whole step), and the processes then sum their LoRA gradients (an all-reduce through
`accelerate`). The summed gradient is exactly the one-process gradient (up to float summation
order), so every process takes the same AdamW step (`inner_loop._AdapterAdamW`, clipping
included) and the merged model equals the one-process model. This is DDP's scheme (replicated
weights, gradient all-reduce) done by hand on the LoRA weights only, because seal's LoRA layers
(seal/training/lora.py) sit inside the frozen model rather than in a wrapped module.

Departures and limits: the reference implementation runs SFT on one GPU. FSDP (sharding the
frozen base across GPUs) is not implemented: the trainable LoRA weights are a few MB, so it
would only help a base model too large for one GPU, where the inner loop would not fit either.
Only the first process writes the model.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from seal.config import ConfigError, InnerLoopConfig, ModelConfig, RunConfig
from seal.training import lora
from seal.training.inner_loop import (
    Speedups,
    TrainExample,
    _AdapterAdamW,
    collate,
    micro_batches,
    schedule,
    token_losses,
    tokenize_examples,
)
from seal.training.models import model_device, pick_dtype


def read_examples(path: str | Path) -> list[TrainExample]:
    """SFT examples from a JSONL file of {"prompt": ..., "completion": ...} records."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the SFT examples ({e.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append(TrainExample(str(rec["completion"]), str(rec.get("prompt", ""))))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}:{n}: not a JSON record with a 'completion' (and a 'prompt')") from None
    if not out:
        raise ConfigError(f"{path}: no SFT examples")
    return out


def write_examples(path: str | Path, examples: list[TrainExample]) -> None:
    Path(path).write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n"
                                  for e in examples))


def sft_data_parallel(model, tok, examples: list[TrainExample], inner: InnerLoopConfig, seed: int,
                      rank: int = 0, world: int = 1, all_reduce=None, speed: Speedups | None = None) -> dict:
    """LoRA SFT of `model` on `examples`, this process's share of it (see the module docstring),
    merged into the weights. `all_reduce(tensor) -> tensor` sums across processes (identity for
    one process). Returns steps, target tokens and the final step's loss (summed over processes)."""
    speed = speed or Speedups()
    state = lora.attach(model, inner.lora, 1)
    try:
        lora.reset(state, [seed])
        device = model_device(model)
        dtype = pick_dtype(inner.dtype, device)
        counts: dict = {}
        tokd = tokenize_examples(tok, examples, inner, counts)
        params = state.parameters(0)
        for p in params:
            p.requires_grad_(True)
        opt = _AdapterAdamW([params], inner.lr, inner.weight_decay, inner.max_grad_norm, foreach=speed.foreach_adamw)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        tokens, last_loss = 0, float("nan")
        plan = schedule(len(tokd), inner, seed)
        for step in plan:
            denom = max(1, sum(len(tokd[i].ids) - tokd[i].loss_from for i in step))
            loss = torch.zeros(())
            for group in micro_batches([(0, tokd[i]) for i in step[rank::world]], inner.micro_batch_tokens):
                ids, attn, labels, r = collate(group, pad, device)
                with lora.use_rows(model, r):
                    tl = token_losses(model, ids, attn, labels, dtype, speed=speed)
                part = tl.sum() / denom
                part.backward()
                loss += part.detach().cpu()
            for p in params:  # a process with no example this step still joins the all-reduce
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            if world > 1:
                flat = all_reduce(torch.cat([p.grad.flatten() for p in params]))
                i = 0
                for p in params:
                    p.grad.copy_(flat[i : i + p.numel()].view_as(p))
                    i += p.numel()
                loss = all_reduce(loss.reshape(1).to(device)).cpu()[0]
            opt.step([True])
            tokens += denom
            last_loss = float(loss)
        for p in params:
            p.requires_grad_(False)
        lora.merge(model, 0)
    finally:
        lora.detach(model)
    return {"steps": len(plan), "tokens": tokens, "final_loss": last_loss, **counts}


class _OneProcess:
    """What `sft_command` uses of an `accelerate.Accelerator`, for a plain one-process run
    without accelerate installed."""

    process_index, num_processes, is_main_process = 0, 1, True
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def reduce(self, t, reduction="sum"):
        return t

    def wait_for_everyone(self):
        pass


def _accelerator():
    import os

    try:
        from accelerate import Accelerator
    except ImportError:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("seal sft on several processes needs accelerate: pip install 'seal[distributed]'") from None
        return _OneProcess()
    return Accelerator(cpu=not torch.cuda.is_available())


def sft_config(cfg: RunConfig) -> InnerLoopConfig:
    """The M-step's settings (`restem.sft_*`) of `seal sft` and of the knowledge task: a LoRA
    trained on the self-edit tokens only. `launch_config` is its inverse."""
    r = cfg.restem
    return InnerLoopConfig(lora=r.sft_lora, lr=r.sft_lr, epochs=r.sft_epochs, steps="packed",
                           batch_size=r.sft_batch_size,
                           max_seq_len=r.sft_max_seq_len, loss_on="completion", dtype=cfg.inner.dtype,
                           max_grad_norm=cfg.inner.max_grad_norm, parallel_adapters=1)


def sft_command(cfg: RunConfig, examples_path: str, out: str) -> Path:
    """`seal sft`: the M-step on a file of kept examples, on every process `accelerate launch`
    started (one when run plainly); the first process saves the merged model to `out`."""
    from seal.training.models import load_model, save_model

    if not out:
        raise ConfigError("seal sft needs --out DIR (where the finetuned model is written)")
    examples = read_examples(examples_path)
    acc = _accelerator()
    model, tok = load_model(cfg.model)
    model.to(acc.device)
    t0 = time.time()
    stats = sft_data_parallel(model, tok, examples, sft_config(cfg), cfg.seed, acc.process_index, acc.num_processes,
                              lambda t: acc.reduce(t, reduction="sum"))
    acc.wait_for_everyone()
    if acc.is_main_process:
        save_model(model.to("cpu"), tok, Path(out))
        info = {**stats, "processes": acc.num_processes, "examples": len(examples), "seconds": time.time() - t0,
                "device": str(acc.device)}
        (Path(out) / "sft.json").write_text(json.dumps(info, indent=2) + "\n")
        print(f"sft: {len(examples)} examples, {stats['steps']} steps on {acc.num_processes} process(es), "
              f"final loss {stats['final_loss']:.4f}, {info['seconds']:.0f} s; model: {out}")
    acc.wait_for_everyone()
    return Path(out)


def launch_config(model_cfg: ModelConfig, folder: str, inner: InnerLoopConfig, seed: int, threads: int) -> RunConfig:
    """The `seal sft` config that trains the model in `folder` with the M-step settings `inner`
    (any task's `sft_config`): `restem.sft_*` and `inner.dtype`/`max_grad_norm` of a RunConfig.
    Refused when `inner` has a setting that config cannot carry."""
    from seal.config import ReSTEMConfig

    cfg = RunConfig(model=ModelConfig(**{**model_cfg.__dict__, "name": folder}),
                    restem=ReSTEMConfig(sft_lora=inner.lora, sft_lr=inner.lr, sft_epochs=inner.epochs,
                                        sft_batch_size=inner.batch_size, sft_max_seq_len=inner.max_seq_len),
                    inner=InnerLoopConfig(dtype=inner.dtype, max_grad_norm=inner.max_grad_norm),
                    seed=seed, threads=threads)
    if sft_config(cfg) != inner:
        raise ConfigError("restem.sft_processes > 1: this task's M-step settings differ from `seal sft`'s "
                          "(restem.sft_* with loss on the completion); use restem.sft_processes 1")
    return cfg


def launch(model_cfg: ModelConfig, folder: str, inner: InnerLoopConfig, examples: list[TrainExample], rdir: Path,
           seed: int, processes: int) -> dict:
    """The M-step on `processes` processes: the examples go to rdir/sft_examples.jsonl, the
    settings to rdir/sft_config.yaml, and `accelerate launch -m seal.cli sft` finetunes the
    model in `folder` (the round's policy) into rdir/model. Returns `restem.sft`'s statistics."""
    import subprocess
    import sys

    from seal.config import save_yaml

    threads = max(1, torch.get_num_threads() // processes) if not torch.cuda.is_available() else 0
    save_yaml(launch_config(model_cfg, folder, inner, seed, threads), rdir / "sft_config.yaml")
    write_examples(rdir / "sft_examples.jsonl", examples)
    # --multi_gpu starts N processes (torchrun); without a GPU they join a gloo group on the CPU
    # (accelerate's --cpu would start only one)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "seal.cli", "sft", "--config", str(rdir / "sft_config.yaml"),
           "--examples", str(rdir / "sft_examples.jsonl"), "--out", str(rdir / "model")]
    print(f"M-step on {processes} processes: {' '.join(cmd[2:])}", flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise ConfigError(f"restem.sft_processes {processes}: the launched M-step failed (its output is above; "
                          "is accelerate installed? pip install 'seal[distributed]')")
    info = json.loads((rdir / "model" / "sft.json").read_text())
    return {"tokens": [info["tokens"]], "n_truncated": [info.get("n_truncated", 0)],
            "n_dropped": [info.get("n_dropped", 0)]}
