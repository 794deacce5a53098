"""The few-shot self-edit: a JSON tool configuration for test-time training (paper section 4.2).

Given an ARC task's demonstrations, the model writes a self-edit that configures its own TTT.
Schema (the paper's tool names)::

    {
      "data_generation": {
        "use_basic_augmentations": bool,   # rotations, flips, transposes
        "use_size_augmentations": bool,    # upscale x2 (both, height, width)
        "use_chain_augmentations": bool,   # a basic transform then a size one
        "use_repeat_augmentations": bool   # tiling 1x2, 2x1, 2x2
      },
      "training": {
        "strategy": "train_using_all_tokens" | "train_using_output_tokens",
        "learning_rate": float,            # clamped into [1e-5, 1e-2]
        "num_train_epochs": int            # 1..10; above 10 is clamped to 10
      }
    }

``parse_selfedit`` never raises. It takes the first JSON object in the completion (prose
around it and code fences are fine; single quotes, trailing commas and Python's
True/False/None are repaired), reads the fields above (a flat object without the two sections
is accepted too) and checks them:

* an augmentation flag may be a bool, 0/1 or "true"/"false"/"yes"/"no"; a missing flag is
  False (noted in ``notes``); any other value makes the self-edit invalid;
* ``strategy`` must name one of the two strategies (case-insensitive; "all"/"output" are
  accepted as short forms); missing or unknown -> invalid;
* ``learning_rate`` must be a finite number > 0 (numeric strings are read); outside
  [1e-5, 1e-2] it is clamped (noted); missing, <= 0 or not a number -> invalid;
* ``num_train_epochs`` must be an integer (an integral float or string is read); above 10 it is
  clamped (noted); missing, < 1 or fractional -> invalid.

Invalid self-edits come back with ``valid=False``, a one-line ``reason`` and the paper's
fallback config ``FALLBACK``: every augmentation off and ``num_train_epochs = 0``, i.e. no
test-time training at all (``build_ttt_data`` returns nothing and ``config.trains`` is False),
so the task is answered by the unadapted model. Whether an invalid self-edit may still earn a
reward is the outer loop's choice (``valid`` tells it apart).

Departures from the paper: the bounds above are this toolkit's (the paper lists no hard
limits; its oracle uses lr 1e-4 for 2 epochs, and it discards configs over 375 steps, see
``training_steps``); the augmentation families' members are our own definitions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from seal.arc.data import ArcTask
from seal.arc.grids import format_pair

STRATEGIES = ("train_using_all_tokens", "train_using_output_tokens")
FAMILY_NAMES = ("basic", "size", "chain", "repeat")
LR_MIN, LR_MAX = 1e-5, 1e-2
EPOCHS_MIN, EPOCHS_MAX = 1, 10
LR_CHOICES = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3)
"""Learning rates suggested in the prompt (any value in [LR_MIN, LR_MAX] is accepted)."""
PAPER_MAX_STEPS = 375
"""The paper drops self-edits whose TTT would take more optimizer steps than this."""
_MAX_INPUT_CHARS = 20_000
_MAX_OBJECT_TRIES = 32
_PY_LITERAL = re.compile(r"True|False|None")
_TRAILING_COMMA = re.compile(r",\s*[}\]]")
_FAILED = object()


@dataclass(frozen=True)
class SelfEditConfig:
    """A validated tool configuration (field names as in the JSON schema)."""

    use_basic_augmentations: bool = False
    use_size_augmentations: bool = False
    use_chain_augmentations: bool = False
    use_repeat_augmentations: bool = False
    strategy: str = "train_using_output_tokens"
    learning_rate: float = 1e-4
    num_train_epochs: int = 2

    @property
    def families(self) -> list[str]:
        return [f for f in FAMILY_NAMES if getattr(self, f"use_{f}_augmentations")]

    @property
    def trains(self) -> bool:
        """False for the no-training fallback."""
        return self.num_train_epochs > 0

    @property
    def loss_on(self) -> str:
        """The inner loop's ``loss_on`` setting: ``all`` or ``completion``."""
        return "all" if self.strategy == "train_using_all_tokens" else "completion"

    def to_dict(self) -> dict:
        """The JSON-schema form."""
        d = asdict(self)
        return {
            "data_generation": {f"use_{f}_augmentations": d[f"use_{f}_augmentations"] for f in FAMILY_NAMES},
            "training": {k: d[k] for k in ("strategy", "learning_rate", "num_train_epochs")},
        }


FALLBACK = SelfEditConfig(strategy="train_using_output_tokens", learning_rate=LR_MIN, num_train_epochs=0)
"""What an invalid self-edit becomes: no augmentation and no training (paper's fallback)."""


@dataclass(frozen=True)
class ParsedSelfEdit:
    config: SelfEditConfig
    valid: bool
    reason: str = ""
    """Why the self-edit is invalid (empty when valid)."""
    notes: tuple[str, ...] = ()
    """Repairs applied (clamped values, missing flags); may be non-empty on invalid ones too."""
    raw: str | None = None
    """The JSON text that was read, if any."""


# ----------------------------------------------------------------------------- parsing


def _scan_object(text: str, start: int) -> int | None:
    """Index of the ``}`` closing the object opened at ``start`` (quotes respected), or None."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        ch = text[i]
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i if ch == "}" else None
    return None


def _repair(s: str) -> str:
    """Single-quoted strings -> double-quoted, Python literals -> JSON, trailing commas dropped."""
    out: list[str] = []
    i, n = 0, len(s)
    while i < n:
        ch = s[i]
        if ch in "\"'":
            j, buf = i + 1, []
            while j < n and s[j] != ch:
                if s[j] == "\\" and j + 1 < n:
                    buf.append("'" if s[j + 1] == "'" else s[j : j + 2])
                    j += 2
                    continue
                buf.append('\\"' if s[j] == '"' else s[j])
                j += 1
            out.append('"' + "".join(buf) + '"')
            i = j + 1
            continue
        m = _PY_LITERAL.match(s, i)
        if m and (i == 0 or not s[i - 1].isalnum()):
            out.append({"True": "true", "False": "false", "None": "null"}[m.group()])
            i += len(m.group())
            continue
        if ch == "," and _TRAILING_COMMA.match(s, i):
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _try_json(text: str) -> Any:
    try:
        return json.loads(text)
    except Exception:  # noqa: BLE001 - JSONDecodeError, or RecursionError on absurd nesting
        return _FAILED


def _loads(candidate: str) -> Any:
    """``candidate`` decoded as JSON, as is or after ``_repair``; None if neither works."""
    obj = _try_json(candidate)
    if obj is _FAILED:
        obj = _try_json(_repair(candidate))
    return None if obj is _FAILED else obj


def extract_json_object(text: str) -> tuple[dict | None, str | None]:
    """The first ``{...}`` in ``text`` that parses (leniently) as a JSON object, and its text."""
    text = text[:_MAX_INPUT_CHARS]
    start = text.find("{")
    tries = 0
    while start != -1 and tries < _MAX_OBJECT_TRIES:
        tries += 1
        end = _scan_object(text, start)
        if end is not None:
            obj = _loads(text[start : end + 1])
            if isinstance(obj, dict):
                return obj, text[start : end + 1]
        start = text.find("{", start + 1)
    return None, None


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "yes", "no"):
        return v.strip().lower() in ("true", "yes")
    return None


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


class _Invalid(Exception):
    pass


def validate_config(obj: Any, raw: str | None = None) -> ParsedSelfEdit:
    """Check and clamp a decoded self-edit (rules in the module docstring); never raises."""
    notes: list[str] = []
    try:
        if not isinstance(obj, dict):
            raise _Invalid("self-edit is not a JSON object")
        gen = obj.get("data_generation", obj)
        train = obj.get("training", obj)
        if not isinstance(gen, dict) or not isinstance(train, dict):
            raise _Invalid("'data_generation' and 'training' must be objects")
        flags = {}
        for fam in FAMILY_NAMES:
            key = f"use_{fam}_augmentations"
            if key not in gen:
                notes.append(f"{key} missing, using false")
                flags[key] = False
                continue
            b = _as_bool(gen[key])
            if b is None:
                raise _Invalid(f"{key} is not a boolean: {gen[key]!r}"[:200])
            flags[key] = b

        strategy = train.get("strategy")
        key = strategy.strip().lower() if isinstance(strategy, str) else None
        aliases = {"all": STRATEGIES[0], "output": STRATEGIES[1], **{s: s for s in STRATEGIES}}
        if key not in aliases:
            raise _Invalid(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"[:200])

        if "learning_rate" not in train:
            raise _Invalid("learning_rate missing")
        lr = _as_number(train["learning_rate"])
        if lr is None or not math.isfinite(lr) or lr <= 0:
            raise _Invalid(f"learning_rate must be a positive number, got {train['learning_rate']!r}"[:200])
        if not LR_MIN <= lr <= LR_MAX:
            clamped = min(max(lr, LR_MIN), LR_MAX)
            notes.append(f"learning_rate {lr:g} clamped to {clamped:g}")
            lr = clamped

        if "num_train_epochs" not in train:
            raise _Invalid("num_train_epochs missing")
        ep = _as_number(train["num_train_epochs"])
        if ep is None or not math.isfinite(ep) or ep != int(ep) or ep < EPOCHS_MIN:
            raise _Invalid(
                f"num_train_epochs must be an integer >= {EPOCHS_MIN}, got {train['num_train_epochs']!r}"[:200]
            )
        epochs = int(ep)
        if epochs > EPOCHS_MAX:
            notes.append(f"num_train_epochs {epochs} clamped to {EPOCHS_MAX}")
            epochs = EPOCHS_MAX
        config = SelfEditConfig(**flags, strategy=aliases[key], learning_rate=lr, num_train_epochs=epochs)
        return ParsedSelfEdit(config, True, "", tuple(notes), raw)
    except _Invalid as e:
        return ParsedSelfEdit(FALLBACK, False, str(e), tuple(notes), raw)
    except Exception as e:  # noqa: BLE001 - nothing a model writes may crash a run
        return ParsedSelfEdit(FALLBACK, False, f"unreadable self-edit ({type(e).__name__})", tuple(notes), raw)


def parse_selfedit(text: str) -> ParsedSelfEdit:
    """Read a model's self-edit completion; never raises (see the module docstring)."""
    try:
        if not isinstance(text, str) or not text.strip():
            return ParsedSelfEdit(FALLBACK, False, "empty self-edit")
        obj, raw = extract_json_object(text)
        if obj is None:
            return ParsedSelfEdit(FALLBACK, False, "no JSON object found")
        return validate_config(obj, raw)
    except Exception as e:  # noqa: BLE001  # pragma: no cover - defensive
        return ParsedSelfEdit(FALLBACK, False, f"unreadable self-edit ({type(e).__name__})")


def training_steps(config: SelfEditConfig, n_examples: int, batch_size: int) -> int:
    """Optimizer steps TTT will take: ceil(examples / batch) per epoch."""
    return math.ceil(n_examples / max(1, batch_size)) * config.num_train_epochs


# ----------------------------------------------------------------------------- prompt


def selfedit_prompt(task: ArcTask, max_demo_chars: int = 1200) -> str:
    """Ask for a tool configuration: the demonstrations (whole while they fit in
    ``max_demo_chars``, then as sizes only), the tools and options, and the JSON format."""
    demos, used = [], 0
    for i, p in enumerate(task.train):
        text = format_pair(p)
        if used + len(text) <= max_demo_chars:
            demos.append(f"Example {i + 1}:\n{text}")
            used += len(text)
        else:
            assert p.output is not None
            hi, wi, ho, wo = len(p.input), len(p.input[0]), len(p.output), len(p.output[0])
            demos.append(f"Example {i + 1}: input {hi}x{wi} grid, output {ho}x{wo} grid")
    example = json.dumps(SelfEditConfig(use_basic_augmentations=True).to_dict(), indent=1)
    lrs = ", ".join(f"{x:g}" for x in LR_CHOICES)
    return (
        "Here is a grid puzzle: each example maps an input grid to an output grid "
        "(digits are colours).\n\n"
        + "\n\n".join(demos)
        + "\n\nConfigure the training that will teach you this puzzle, using these tools.\n"
        "Data generation (true or false each):\n"
        "- use_basic_augmentations: rotations, flips and transposes of the examples\n"
        "- use_size_augmentations: examples with grids enlarged 2x\n"
        "- use_chain_augmentations: a rotation or flip followed by enlarging\n"
        "- use_repeat_augmentations: examples with grids tiled 2 times\n"
        "Training:\n"
        '- strategy: "train_using_all_tokens" or "train_using_output_tokens"\n'
        f"- learning_rate: a number such as {lrs}\n"
        f"- num_train_epochs: an integer from {EPOCHS_MIN} to {EPOCHS_MAX}\n\n"
        "Answer with one JSON object and nothing else, in this form:\n" + example + "\n"
    )


# ----------------------------------------------------------------------------- oracle


DEFAULT_FAMILY_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("basic",),
    ("basic", "size"),
    ("basic", "chain"),
    ("basic", "repeat"),
    ("basic", "size", "chain", "repeat"),
)


def config_space(
    family_sets: Sequence[Sequence[str]] = DEFAULT_FAMILY_SETS,
    strategies: Sequence[str] = STRATEGIES,
    learning_rates: Sequence[float] = (1e-4, 1e-3),
    epochs: Sequence[int] = (1, 3),
) -> list[dict]:
    """Every combination, as schema dicts, for an oracle that tries each config on a task and
    keeps the best (default: 6 family sets x 2 strategies x 2 lrs x 2 epoch counts = 48)."""
    out = []
    for fams in family_sets:
        for strategy in strategies:
            for lr in learning_rates:
                for ep in epochs:
                    flags = {f"use_{f}_augmentations": f in fams for f in FAMILY_NAMES}
                    out.append(
                        SelfEditConfig(**flags, strategy=strategy, learning_rate=lr, num_train_epochs=ep).to_dict()
                    )
    return out


__all__ = [
    "FALLBACK",
    "ParsedSelfEdit",
    "SelfEditConfig",
    "config_space",
    "extract_json_object",
    "parse_selfedit",
    "selfedit_prompt",
    "training_steps",
    "validate_config",
]
