"""TTT data generation, inference views, voting and pass@2 scoring."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from seal.arc.augment import BASIC, IDENTITY
from seal.arc.data import ArcTask, Pair, load_tasks
from seal.arc.grids import answer_text, grid_to_text, task_prompt, text_to_grid
from seal.arc.selfedit import FALLBACK, SelfEditConfig, parse_selfedit
from seal.arc.ttt import TrainExample, build_ttt_data, inference_views, map_back, score, vote, within_tokens

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "arc"
NO_AUG = SelfEditConfig(num_train_epochs=2)
ALL_AUG = SelfEditConfig(True, True, True, True, "train_using_all_tokens", 1e-4, 2)


@pytest.fixture(scope="module")
def tasks() -> dict[str, ArcTask]:
    return {t.id: t for t in load_tasks(str(FIXTURES))}


def test_no_augmentation_is_plain_leave_one_out(tasks):
    task = tasks["mirror"]
    data = build_ttt_data(task, NO_AUG, random.Random(0), 100, permutations=0)
    assert len(data) == len(task.train) == 3
    for i, ex in enumerate(data):
        rest = [p for j, p in enumerate(task.train) if j != i]
        assert ex == TrainExample(
            task_prompt(rest, task.train[i].input), answer_text(task.train[i].output), f"mirror/lo{i}"
        )


def test_permutations_add_recoloured_variants(tasks):
    task = tasks["recolor"]
    data = build_ttt_data(task, NO_AUG, random.Random(0), 100)
    assert len(data) == 2 * len(task.train)
    assert [ex.source for ex in data[:3]] == ["recolor/lo0", "recolor/lo1", "recolor/lo2"]
    assert all("|colors0" in ex.source for ex in data[3:])


def test_augmentation_families_grow_data_and_cap_applies(tasks):
    task = tasks["mirror"]
    sizes = {}
    for name, cfg in [("none", NO_AUG), ("basic", SelfEditConfig(use_basic_augmentations=True)), ("all", ALL_AUG)]:
        sizes[name] = len(build_ttt_data(task, cfg, random.Random(0), 10_000))
    assert sizes["none"] < sizes["basic"] < sizes["all"]
    capped = build_ttt_data(task, ALL_AUG, random.Random(0), 10)
    assert len(capped) == 10
    assert [ex.source for ex in capped[:3]] == ["mirror/lo0", "mirror/lo1", "mirror/lo2"]  # plain LOO first


def test_examples_are_unique_parseable_and_never_use_the_test_pair(tasks):
    for task in tasks.values():
        data = build_ttt_data(task, ALL_AUG, random.Random(1), 500, leave_two=True)
        assert len({(ex.prompt, ex.completion) for ex in data}) == len(data)
        for ex in data:
            assert ex.prompt.endswith("output:\n") and ex.completion.endswith("\n")
            assert text_to_grid(ex.completion) is not None
        test_in = grid_to_text(task.test[0].input)
        assert all(f"input:\n{test_in}\noutput:" not in ex.prompt for ex in data if "|" not in ex.source)


def test_deterministic_given_seed_and_strategy_independent(tasks):
    task = tasks["recolor"]
    a = build_ttt_data(task, ALL_AUG, random.Random(42), 50)
    b = build_ttt_data(task, ALL_AUG, random.Random(42), 50)
    other_strategy = SelfEditConfig(True, True, True, True, "train_using_output_tokens", 1e-3, 5)
    c = build_ttt_data(task, other_strategy, random.Random(42), 50)
    assert a == b == c
    assert a != build_ttt_data(task, ALL_AUG, random.Random(43), 50)


def test_fallback_and_invalid_selfedit_train_nothing(tasks):
    task = tasks["mirror"]
    assert build_ttt_data(task, FALLBACK, random.Random(0), 100) == []
    assert build_ttt_data(task, parse_selfedit("no idea").config, random.Random(0), 100) == []
    assert build_ttt_data(task, ALL_AUG, random.Random(0), 0) == []


def test_keep_filter(tasks):
    data = build_ttt_data(tasks["mirror"], ALL_AUG, random.Random(0), 100, keep=lambda ex: len(ex.prompt) < 120)
    assert data and all(len(ex.prompt) < 120 for ex in data)


class CharTokenizer:
    """One token per character (no model needed)."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


def test_within_tokens_filter(tasks):
    keep = within_tokens(CharTokenizer(), 95)
    data = build_ttt_data(tasks["double"], ALL_AUG, random.Random(0), 1000, keep=keep)
    everything = build_ttt_data(tasks["double"], ALL_AUG, random.Random(0), 1000)
    assert data and len(data) < len(everything)
    assert all(len(ex.prompt + ex.completion) <= 95 for ex in data)
    assert max(len(ex.prompt + ex.completion) for ex in everything) > 95


def test_single_demonstration_gives_no_data():
    task = ArcTask("one", [Pair(((1,),), ((2,),))], [Pair(((1,),), ((2,),))])
    assert build_ttt_data(task, ALL_AUG, random.Random(0), 100) == []


def test_inference_views_and_perfect_model_scores(tasks):
    for task in tasks.values():
        views = inference_views(task, 12, random.Random(0))
        assert len(views) == 12
        assert views[0] == (IDENTITY, task_prompt(task.train, task.test[0].input))
        assert [t.name for t, _ in views[1:8]] == [b.name for b in BASIC]
        assert all(prompt.endswith("output:\n") for _, prompt in views)
        gold = task.test[0].output
        answers = [answer_text(t(gold)) + "\ninput:\n1" for t, _ in views]  # a model that is always right
        preds = map_back(views, answers)
        assert preds == [gold] * 12
        attempts = vote(preds)
        assert attempts == [gold] and score(attempts, gold) == 1


def test_map_back_handles_malformed_answers(tasks):
    task = tasks["double"]
    views = inference_views(task, 3, random.Random(0))
    preds = map_back(views, ["garbage", "", "00\n0"])
    assert preds == [None, None, None]


def test_vote_majority_and_deterministic_ties():
    a, b, c = ((1,),), ((2,),), ((3, 3),)
    assert vote([a, b, a, None, c, b, a]) == [a, b]
    assert vote([c, b, b, c, a]) == [c, b]  # tie: first seen wins
    assert vote([b, c]) == [b, c]
    assert vote([None, None]) == []
    assert vote([a]) == [a]


def test_score_is_pass_at_two():
    a, b, c = ((1,),), ((2,),), ((3,),)
    assert score([a, b], b) == 1
    assert score([a], a) == 1
    assert score([a, b, c], c) == 0  # only two attempts count
    assert score([], a) == 0
    assert score([a], None) == 0
