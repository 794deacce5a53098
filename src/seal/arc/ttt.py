"""Test-time-training data and test-time inference for an ARC task (paper section 4.2).

``build_ttt_data`` turns a task's demonstrations and a self-edit config into training
sequences (leave-one-out tasks x the chosen augmentation families x colour/example
permutations). ``inference_views`` predicts the test output under invertible augmentations;
``map_back`` undoes them, ``vote`` keeps the two most frequent answers and ``score`` is pass@2,
the reward of the paper (1 if an attempt matches the gold output exactly).

Departures from the paper (which reuses Akyurek et al.'s pipeline): inference uses only the
eight symmetries of the square plus colour permutations, and a flat majority vote over the
mapped-back predictions instead of their hierarchical (per-transform, then global) vote;
training data is capped by ``max_examples`` rather than by dropping whole configs over 375
steps (``selfedit.training_steps`` gives the step count if a caller wants the paper's rule).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from seal.arc.augment import (
    BASIC,
    IDENTITY,
    Transform,
    color_transform,
    family_transforms,
    leave_one_out,
    leave_two_out,
    permute_examples,
    random_color_perm,
    transform_task,
)
from seal.arc.data import ArcTask, Grid
from seal.arc.grids import Tokenizer, answer_text, task_prompt, text_to_grid, token_ids

if TYPE_CHECKING:
    from seal.arc.selfedit import SelfEditConfig


@dataclass(frozen=True)
class TrainExample:
    """One TTT sequence: loss on ``completion`` only, or on prompt+completion (strategy)."""

    prompt: str
    completion: str
    source: str = ""
    """Where it came from, e.g. ``abc/lo2|rot90|colors0312...`` (for logs only)."""


# ----------------------------------------------------------------------------- TTT data


def build_ttt_data(
    task: ArcTask,
    config: SelfEditConfig,
    rng: random.Random,
    max_examples: int,
    *,
    leave_two: bool = False,
    permutations: int = 1,
    keep: Callable[[TrainExample], bool] | None = None,
) -> list[TrainExample]:
    """Training sequences for TTT on ``task`` under ``config``; uses only the demonstrations.

    Leave-one-out tasks (plus leave-two-out with ``leave_two``) x (identity + the transforms of
    the chosen families). Each transformed task gives its plain version and ``permutations``
    variants with a random colour permutation (0 fixed) and shuffled demonstrations. Transforms
    that push a grid past 30x30 are skipped, ``keep`` can drop examples (e.g. over a token
    budget), duplicates are removed, and the list is capped at ``max_examples``: the plain
    leave-one-out examples come first, the rest follow in an rng-shuffled order. The no-training
    fallback (``num_train_epochs == 0``) gets an empty list.
    """
    if not config.trains or max_examples <= 0:
        return []
    bases = leave_one_out(task) + (leave_two_out(task) if leave_two else [])
    transforms = family_transforms(config.families)
    first: list[TrainExample] = []
    rest: list[TrainExample] = []
    for base in bases:
        for t in transforms:
            moved = transform_task(base, t)
            if moved is None:
                continue
            variants = [(moved, "")]
            for _ in range(max(0, permutations)):
                colors = color_transform(random_color_perm(rng))
                recolored = transform_task(permute_examples(moved, rng), colors, suffix=False)
                if recolored is not None:
                    variants.append((recolored, "|" + colors.name))
            for k, (sub, tag) in enumerate(variants):
                for pair in sub.test:
                    assert pair.output is not None
                    ex = TrainExample(task_prompt(sub.train, pair.input), answer_text(pair.output), moved.id + tag)
                    (first if (t is IDENTITY and k == 0) else rest).append(ex)
    rng.shuffle(rest)
    out: list[TrainExample] = []
    seen: set[tuple[str, str]] = set()
    for ex in first + rest:
        if len(out) >= max_examples:
            break
        if (ex.prompt, ex.completion) in seen or (keep is not None and not keep(ex)):
            continue
        seen.add((ex.prompt, ex.completion))
        out.append(ex)
    return out


def within_tokens(tokenizer: Tokenizer, max_tokens: int) -> Callable[[TrainExample], bool]:
    """A ``keep`` filter for ``build_ttt_data``: prompt+completion at most ``max_tokens`` tokens.

    Use it with the inner loop's ``max_seq_len``: size and repeat augmentations can make a
    sequence several times longer than the task itself, and a sequence cut short would lose
    its completion (the only part trained on with ``train_using_output_tokens``).
    """
    return lambda ex: len(token_ids(tokenizer, ex.prompt + ex.completion)) <= max_tokens


# ----------------------------------------------------------------------------- inference


def inference_views(
    task: ArcTask, n_views: int, rng: random.Random, test_index: int = 0
) -> list[tuple[Transform, str]]:
    """``n_views`` (transform, prompt) pairs for predicting test pair ``test_index``.

    View 0 is the task as given. Views 1-7 apply the other symmetries of the square with the
    demonstrations shuffled; views 8 and on cycle through all eight symmetries again, each
    followed by a random colour permutation (0 fixed). A prediction made under a view is mapped
    back with ``transform.invert`` (see ``map_back``).
    """
    test_input = task.test[test_index].input
    geoms = (IDENTITY,) + BASIC
    views: list[tuple[Transform, str]] = []
    for i in range(max(0, n_views)):
        t = geoms[i % len(geoms)]
        if i >= len(geoms):
            t = t.then(color_transform(random_color_perm(rng)))
        base = task if i == 0 else permute_examples(task, rng)
        single = ArcTask(task.id, base.train, [task.test[test_index]])
        moved = transform_task(single, t)
        if moved is None:  # cannot happen for these transforms; kept for safety
            continue
        views.append((t, task_prompt(moved.train, t(test_input))))
    return views


def map_back(views: Sequence[tuple[Transform, str]], answers: Iterable[str]) -> list[Grid | None]:
    """Parse each view's answer and undo its transform; None where either step fails."""
    return [t.invert(text_to_grid(a)) for (t, _), a in zip(views, answers)]


def vote(predictions: Iterable[Grid | None], k: int = 2) -> list[Grid]:
    """The ``k`` most frequent grids (None ignored); ties go to the grid seen first, so the
    identity view (listed first by ``inference_views``) wins ties."""
    preds = [p for p in predictions if p is not None]
    counts = Counter(preds)
    first = {}
    for i, p in enumerate(preds):
        first.setdefault(p, i)
    ranked = sorted(counts, key=lambda g: (-counts[g], first[g]))
    return ranked[:k]


def score(attempts: Sequence[Grid], gold: Grid | None) -> int:
    """pass@2: 1 if one of the first two attempts equals the gold grid exactly, else 0."""
    return int(gold is not None and any(a == gold for a in list(attempts)[:2]))
