"""Every setting of the few-shot ARC commands (`seal arc evaluate`, `seal arc train`), in one
typed home, in the style of seal/config.py.

`ArcConfig` is the whole run config: it is what `seal.runs.open_run` receives (it has `out`,
`seed` and `threads` at the top level, so a resumed run may change `--out`/`--threads` but no
other setting), what is saved as the run's `config.yaml`, and what the CLI builds its flags
from (`--max_steps 4`, `--oracle.learning_rates 1e-4,1e-3`, `--lora.rank 8`). A YAML file
(`--config FILE`) sets many at once.

Defaults are sized for a small model on a CPU; the paper's values (Llama-3.2-1B on GPUs) are
noted where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seal.arc.augment import FAMILIES
from seal.arc.selfedit import EPOCHS_MAX, EPOCHS_MIN, LR_MAX, LR_MIN, STRATEGIES, config_space
from seal.config import ConfigError, ExecutorConfig, GenerationConfig, LoRAConfig, ModelConfig, check_ranges, setting


def _floats(values: tuple[str, ...], where: str) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise ConfigError(f"{where}: expected numbers, got {v!r}") from None
    return out


@dataclass
class OracleConfig:
    """The oracle condition: every combination of these settings is tried on each task (full
    TTT + inference each) and the task counts as solved if any combination solves it. The
    paper's oracle is a human-chosen best configuration; a search over `selfedit.config_space`
    is its automatic stand-in. The grid is small by default: each combination is one TTT run
    per task."""

    families: tuple[str, ...] = ("none", "basic")
    """Augmentation family sets, each `none` or families joined by `+` (e.g. `basic+size`)."""
    strategies: tuple[str, ...] = ("train_using_output_tokens",)
    learning_rates: tuple[str, ...] = ("1e-4", "1e-3")
    epochs: tuple[str, ...] = ("2",)

    def __post_init__(self):
        self.families, self.strategies = tuple(self.families), tuple(self.strategies)
        self.learning_rates, self.epochs = tuple(self.learning_rates), tuple(self.epochs)
        for fs in self.families:
            for f in self.family_set(fs):
                if f not in FAMILIES:
                    raise ConfigError(f"families: unknown family {f!r} in {fs!r} "
                                      f"(known: none, {', '.join(FAMILIES)})")
        for s in self.strategies:
            if s not in STRATEGIES:
                raise ConfigError(f"strategies: {s!r} is not one of {', '.join(STRATEGIES)}")
        for lr in _floats(self.learning_rates, "learning_rates"):
            if not LR_MIN <= lr <= LR_MAX:
                raise ConfigError(f"learning_rates: {lr:g} is outside [{LR_MIN:g}, {LR_MAX:g}]")
        for e in _floats(self.epochs, "epochs"):
            if e != int(e) or not EPOCHS_MIN <= e <= EPOCHS_MAX:
                raise ConfigError(f"epochs: {e:g} is not an integer in [{EPOCHS_MIN}, {EPOCHS_MAX}]")

    @staticmethod
    def family_set(name: str) -> tuple[str, ...]:
        return () if name.strip() in ("", "none") else tuple(f.strip() for f in name.split("+"))

    def configs(self) -> list[dict]:
        """The configurations tried, as self-edit JSON dicts (empty when any list is empty)."""
        return config_space([self.family_set(f) for f in self.families], self.strategies,
                            _floats(self.learning_rates, "oracle.learning_rates"),
                            [int(float(e)) for e in self.epochs])


@dataclass
class ArcReSTEMConfig:
    """`seal arc train`: ReSTEM rounds over ARC tasks (paper sections 3.1 and 4.2)."""

    rounds: int = setting(1, ge=1)
    """Each round samples `selfedits` self-edits per task from the current model, scores each
    by TTT, and fine-tunes the model on the ones that solved their task."""
    sft_lr: float = setting(3e-4, gt=0)
    sft_epochs: int = setting(2, ge=1)
    sft_batch_size: int = setting(4, ge=1)
    sft_max_seq_len: int = setting(1024, ge=8)
    """Self-edit prompt + JSON longer than this are left out of the SFT data (counted)."""
    sft_processes: int = setting(1, ge=1)
    """Processes the M-step's SFT runs on: 1 in this process; more launches `accelerate launch
    --num_processes N -m seal.cli sft` (seal/engine/sft_distributed.py; `pip install 'seal[distributed]'`)."""
    sft_lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(rank=16, alpha=32))
    """The SFT LoRA, merged into the model's weights at the end of each round."""

    def __post_init__(self):
        if isinstance(self.sft_lora, dict):
            self.sft_lora = LoRAConfig(**self.sft_lora)
        check_ranges(self)


@dataclass
class ArcConfig:
    """Few-shot ARC: tasks, self-edit sampling, TTT, inference and the run itself."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model that writes self-edits and is adapted. ARC prompts (self-edit, TTT and
    inference) use its chat template when `model.chat_template` resolves to yes (auto: when the
    tokenizer has one), the same way in training and inference; see arc/run.py."""
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    """The TTT adapter."""
    tasks: str = ""
    """ARC tasks: a folder of task JSON files, one file, `arc1:train|eval` or
    `seal:train|eval|eval_reported` (see arc/data.py)."""
    exclude: str = ""
    """Another task spec whose task ids are left out (e.g. `seal:train` with `arc1:train`)."""
    max_task_tokens: int = setting(512, ge=0)
    """Token budget: tasks whose longest prompt + answer (chat wrapper included) is longer are
    left out and counted (0: no limit). TTT cost grows with it; the paper's 1B runs used 8192."""
    limit: int = setting(0, ge=0)
    """Use at most this many of the tasks that fit, in the spec's order (0: all)."""
    selfedits: int = setting(5, ge=1)
    """Self-edits sampled per task (evaluation: per condition; training: per round)."""
    temperature: float = setting(1.0, ge=0, le=10)
    top_p: float = setting(0.95, gt=0, le=1)
    max_new_tokens: int = setting(160, ge=1)
    """Self-edit length cap (the JSON config is about 100 tokens with SmolLM2's tokenizer)."""
    selfedit_demo_chars: int = setting(600, ge=1)
    """Demonstrations are shown in the self-edit prompt while they fit in this many characters
    (later ones by size only); about one token per character for digit grids."""
    sample_batch_size: int = setting(8, ge=1)
    """Self-edit completions sampled together."""
    max_examples: int = setting(16, ge=1)
    """TTT sequences per run at most (plain leave-one-out first, then augmented ones)."""
    max_steps: int = setting(32, ge=0)
    """Optimizer steps per TTT run at most (0: no cap). Over it, the self-edit's epochs are
    lowered (to at least one), then examples cut. The paper drops self-edits over 375 steps."""
    batch_size: int = setting(2, ge=1)
    """TTT sequences per optimizer step."""
    max_seq_len: int = setting(1024, ge=8)
    """TTT sequences longer than this (e.g. from size/repeat augmentations) are not used."""
    permutations: int = setting(1, ge=0)
    """Colour-permuted, demonstration-shuffled variants per augmented TTT task."""
    leave_two_out: bool = False
    """Also build leave-two-out TTT tasks."""
    parallel_adapters: int = setting(4, ge=1)
    """TTT runs trained together over the shared base model (same lr/epochs/strategy only)."""
    dtype: str = setting("auto", choices=("auto", "fp32", "bf16"))
    """TTT precision: `fp32`, `bf16` or `auto` (see seal/config.py InnerLoopConfig.dtype)."""
    max_grad_norm: float = setting(1.0, ge=0)
    views: int = setting(4, ge=1)
    """Inference views per test input (identity, then the other symmetries of the square, then
    colour-permuted ones); their mapped-back answers are voted down to 2 attempts (pass@2)."""
    max_answer_tokens: int = setting(400, ge=1)
    """Answer length cap; per task also at most twice the longest demonstration output or test
    input (in tokens) plus 8, since an untrained model may never stop."""
    infer_batch_size: int = setting(8, ge=1)
    rl_model: str = ""
    """`seal arc evaluate`: a model folder (e.g. a `seal arc train` round's model) whose
    self-edits make the extra condition `self-edits:rl`. TTT is always applied to `model`."""
    oracle: OracleConfig = field(default_factory=OracleConfig)
    restem: ArcReSTEMConfig = field(default_factory=ArcReSTEMConfig)
    bootstrap: int = setting(2000, ge=1)
    """Bootstrap resamples (over tasks) for the 95% intervals."""
    seed: int = setting(0, ge=0, lt=2**32)
    out: str = ""
    """Run folder. Empty: runs/<command>-<timestamp>. An existing run folder is resumed."""
    threads: int = setting(0, ge=0)
    """torch intra-op threads (0: torch's default)."""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    """Where TTT runs go (seal/engine/executors.py): this process, or Ray actors holding the base model."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """What samples self-edits in `seal arc train` (`vllm`: seal/training/generation_vllm.py, needs a GPU)."""

    def __post_init__(self):
        for name in ("oracle", "restem", "model", "lora", "executor", "generation"):
            value = getattr(self, name)
            if isinstance(value, dict):
                cls = {"oracle": OracleConfig, "restem": ArcReSTEMConfig, "model": ModelConfig,
                       "lora": LoRAConfig, "executor": ExecutorConfig, "generation": GenerationConfig}[name]
                setattr(self, name, cls(**value))
        check_ranges(self)
