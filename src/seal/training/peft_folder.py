"""A LoRA adapter as a PEFT folder (adapter_config.json + adapter_model.safetensors with PEFT's
key names), so plain `peft` loads it: PeftModel.from_pretrained(base_model, folder). Written
atomically, each file's size and sha256 returned; the registry (seal/documents/registry.py) records them,
and `generation_vllm.export_adapters` hands such folders to vLLM."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from seal.training.models import is_write_failure, write_error

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"


def peft_state(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """seal's adapter weights (`<module>.lora_A`, `[r, d_in]`) under PEFT's key names
    (`base_model.model.<module>.lora_A.weight`, same shapes): PEFT's LoRA layer computes
    W x + (lora_alpha / r) * lora_B(lora_A(x)), the same update as `lora.LoRALinear`."""
    out = {}
    for key, w in weights.items():
        module, _, part = key.rpartition(".")
        out[f"base_model.model.{module}.{part}.weight"] = w.detach().to("cpu", torch.float32).contiguous()
    return out


def peft_config(rank: int, alpha: float, targets: tuple[str, ...], base_model: str) -> dict:
    """adapter_config.json for a plain LoRA (no dropout, no bias) that PEFT reads as ours."""
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
            "r": rank, "lora_alpha": alpha, "target_modules": sorted(targets), "lora_dropout": 0.0,
            "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
            "init_lora_weights": True, "inference_mode": True, "modules_to_save": None}


def write_adapter_folder(folder: Path, weights: dict[str, torch.Tensor], config: dict) -> dict[str, tuple[int, str]]:
    """Write a PEFT adapter folder atomically: into a hidden temporary sibling, each file fsynced,
    then renamed into place (and the parent fsynced). `folder` must not exist. Returns each
    file's (size, sha256) as read back from disk. On any failure (disk full...) the temporary
    folder is removed and the error raised."""
    from safetensors.torch import save_file

    tmp = folder.with_name(f".tmp-{folder.name}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        save_file(peft_state(weights), str(tmp / PEFT_WEIGHTS), metadata={"format": "pt"})
        (tmp / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        for name in (PEFT_WEIGHTS, PEFT_CONFIG):
            fsync_path(tmp / name)
        fsync_path(tmp)
        sums = {name: file_digest(tmp / name) for name in (PEFT_WEIGHTS, PEFT_CONFIG)}
        os.rename(tmp, folder)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(e):  # disk full, read-only...
            raise write_error(e, tmp / PEFT_WEIGHTS) from None
        raise
    fsync_path(folder.parent)
    return sums


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
