"""Invertible transforms, colour/example permutations and leave-k-out tasks."""

from __future__ import annotations

import random
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seal.arc.augment import (
    BASIC,
    CHAIN,
    FAMILIES,
    IDENTITY,
    REPEAT,
    SIZE,
    anti_transpose,
    apply_colors,
    as_rng,
    color_transform,
    downscale,
    family_transforms,
    invert_perm,
    leave_k_out,
    leave_one_out,
    leave_two_out,
    permute_examples,
    random_color_perm,
    rot90,
    tile_transform,
    transform_task,
    upscale,
    upscale_transform,
)
from seal.arc.data import ArcTask, Pair

ALL = (IDENTITY, *BASIC, *SIZE, *CHAIN, *REPEAT)


@st.composite
def grids(draw, max_side: int = 12):
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    cells = draw(st.lists(st.integers(0, 9), min_size=h * w, max_size=h * w))
    return tuple(tuple(cells[r * w : (r + 1) * w]) for r in range(h))


def random_grid(rng: random.Random, h: int, w: int):
    return tuple(tuple(rng.randrange(10) for _ in range(w)) for _ in range(h))


@settings(max_examples=40, deadline=None)
@given(grids())
def test_every_transform_then_inverse_is_identity(g):
    for t in ALL:
        assert t.invert(t(g)) == g, t.name


def test_transforms_on_random_grids_including_non_square():
    rng = random.Random(0)
    for _ in range(30):
        g = random_grid(rng, rng.randint(1, 9), rng.randint(1, 9))
        for t in ALL:
            out = t(g)
            assert len({len(r) for r in out}) == 1
            assert t.invert(out) == g, t.name


def test_d4_concrete_values_and_group_structure():
    g = ((1, 2), (3, 4))
    assert rot90(g) == ((3, 1), (4, 2))
    assert anti_transpose(g) == ((4, 2), (3, 1))
    images = {t(((1, 2, 3), (4, 5, 6))) for t in (IDENTITY, *BASIC)}
    assert len(images) == 8  # eight distinct symmetries
    assert rot90(rot90(rot90(rot90(g)))) == g


def test_size_and_repeat_inverses_reject_non_images():
    g = ((1, 2), (3, 4))
    assert upscale(g, 2, 1) == ((1, 2), (1, 2), (3, 4), (3, 4))
    assert downscale(((1, 2), (3, 4)), 2, 1) is None
    assert downscale(((1, 1, 2),), 1, 2) is None  # width not divisible
    assert upscale_transform(2, 2).invert(g) is None
    assert tile_transform(1, 2).invert(((1, 2, 1, 3),)) is None
    assert tile_transform(1, 2)(g) == ((1, 2, 1, 2), (3, 4, 3, 4))
    assert IDENTITY.invert(None) is None


def test_composition_order_and_inverse():
    t = BASIC[0].then(SIZE[1])  # rot90 then upscale 2x1
    g = ((1, 2, 3),)
    assert t(g) == upscale(rot90(g), 2, 1)
    assert t.invert(t(g)) == g
    assert IDENTITY.then(t) is t and t.then(IDENTITY) is t
    assert len(CHAIN) == len(BASIC) * len(SIZE)


def test_color_permutation_keeps_background_and_inverts():
    rng = random.Random(3)
    for _ in range(20):
        perm = random_color_perm(rng)
        assert perm[0] == 0 and sorted(perm) == list(range(10))
        g = random_grid(rng, 5, 6)
        assert apply_colors(apply_colors(g, perm), invert_perm(perm)) == g
        t = color_transform(perm)
        assert t.invert(t(g)) == g
    free = random_color_perm(random.Random(1), keep_background=False)
    assert sorted(free) == list(range(10))
    assert color_transform(tuple(range(10))) is IDENTITY
    with pytest.raises(ValueError):
        color_transform((0, 0, 1, 2, 3, 4, 5, 6, 7, 8))


def test_randomness_is_seeded():
    assert random_color_perm(as_rng(7)) == random_color_perm(as_rng(7))
    task = ArcTask("t", [Pair(((i,),), ((i,),)) for i in range(6)], [Pair(((0,),), ((0,),))])
    assert permute_examples(task, as_rng(5)) == permute_examples(task, as_rng(5))
    assert sorted(p.input for p in permute_examples(task, as_rng(5)).train) == sorted(p.input for p in task.train)


def test_family_transforms():
    assert family_transforms([]) == [IDENTITY]
    assert len(family_transforms(FAMILIES)) == 1 + 7 + 3 + 21 + 3
    with pytest.raises(ValueError, match="unknown augmentation family"):
        family_transforms(["colour"])


def test_transform_task_respects_size_limit():
    big = ((0,) * 20,) * 20
    task = ArcTask("t", [Pair(big, big)], [Pair(big, None)])
    assert transform_task(task, SIZE[0]) is None
    moved = transform_task(task, BASIC[0])
    assert moved is not None and moved.id == "t|rot90" and moved.test[0].output is None


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_leave_k_out_counts(n):
    task = ArcTask("t", [Pair(((i,),), ((i + 1,) if i < 9 else (0,),)) for i in range(n)], [Pair(((9,),), None)])
    loo = leave_one_out(task)
    assert len(loo) == (n if n >= 2 else 0)
    for i, sub in enumerate(loo):
        assert sub.test == [task.train[i]] and len(sub.train) == n - 1 and task.train[i] not in sub.train
        assert sub.id == f"t/lo{i}"
    l2o = leave_two_out(task)
    assert len(l2o) == (comb(n, 2) if n >= 3 else 0)
    assert all(len(s.test) == 2 and len(s.train) == n - 2 for s in l2o)
    assert leave_k_out(task, 0) == []
