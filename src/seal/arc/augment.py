"""Invertible grid transforms, colour and example permutations, leave-k-out tasks.

A ``Transform`` is a named pair of functions (``forward``, ``backward``) on grids with
``backward(forward(g)) == g`` for every grid. ``backward`` returns None when its argument is
not the image of any grid (e.g. downscaling a grid whose blocks are not uniform), which is
what happens when a model's prediction under an augmentation cannot be mapped back. The
families follow the tool names of the SEAL/Akyurek et al. TTT pipeline (the exact members are
this toolkit's choice, not a copy of theirs):

* basic: the dihedral group of the square, i.e. identity, rot90/180/270 (clockwise),
  flip_h (mirror left-right), flip_v (upside down), transpose, anti_transpose;
* size: upscale by 2 in both directions, in height only, in width only (each cell becomes a
  block); inverse = exact downscale;
* chain: a non-identity basic transform followed by a size transform (composing two basic
  transforms only gives another basic one, so chains must mix families to be new);
* repeat: tiling the grid 1x2, 2x1 or 2x2; inverse = the top-left tile, when the tiling is
  exact;
* colours: a permutation of 0-9 (0 = background kept fixed by default), inverse = the inverse
  permutation.

Transforms compose with ``then``. Forward transforms may produce grids over 30x30; tasks are
transformed with ``transform_task``, which returns None in that case. All randomness comes
from a caller-supplied ``random.Random`` (``as_rng`` turns an int seed into one).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from seal.arc.data import MAX_SIDE, ArcTask, Grid, Pair

Forward = Callable[[Grid], Grid]
Backward = Callable[[Grid], "Grid | None"]


@dataclass(frozen=True)
class Transform:
    """A named invertible grid transform; equality and hashing use the name only."""

    name: str
    forward: Forward = field(compare=False, repr=False)
    backward: Backward = field(compare=False, repr=False)

    def __call__(self, grid: Grid) -> Grid:
        return self.forward(grid)

    def invert(self, grid: Grid | None) -> Grid | None:
        """Map a grid back through the transform; None if it is None or not an image."""
        if grid is None:
            return None
        try:
            return self.backward(grid)
        except (ValueError, IndexError, KeyError, TypeError):
            return None

    def then(self, other: Transform) -> Transform:
        """``self`` first, then ``other``; the inverse undoes ``other`` first."""
        if self.name == "identity":
            return other
        if other.name == "identity":
            return self

        def backward(g: Grid) -> Grid | None:
            mid = other.invert(g)
            return None if mid is None else self.invert(mid)

        return Transform(f"{self.name}+{other.name}", lambda g: other.forward(self.forward(g)), backward)


def as_rng(seed: int | random.Random | None) -> random.Random:
    """A ``random.Random`` from a seed (or the generator itself)."""
    return seed if isinstance(seed, random.Random) else random.Random(seed)


def fits(grid: Grid) -> bool:
    """Whether a grid is within ARC's 30x30 limit."""
    return 1 <= len(grid) <= MAX_SIDE and 1 <= len(grid[0]) <= MAX_SIDE


# ----------------------------------------------------------------------------- basic (D4)


def rot90(g: Grid) -> Grid:
    """Rotate clockwise by 90 degrees."""
    return tuple(zip(*g[::-1]))


def rot180(g: Grid) -> Grid:
    return tuple(row[::-1] for row in g[::-1])


def rot270(g: Grid) -> Grid:
    return tuple(zip(*g))[::-1]


def flip_h(g: Grid) -> Grid:
    """Mirror left-right."""
    return tuple(row[::-1] for row in g)


def flip_v(g: Grid) -> Grid:
    """Mirror top-bottom."""
    return g[::-1]


def transpose(g: Grid) -> Grid:
    return tuple(zip(*g))


def anti_transpose(g: Grid) -> Grid:
    """Reflect across the anti-diagonal."""
    return rot180(transpose(g))


def _identity(g: Grid) -> Grid:
    return g


IDENTITY = Transform("identity", _identity, _identity)
BASIC: tuple[Transform, ...] = (
    Transform("rot90", rot90, rot270),
    Transform("rot180", rot180, rot180),
    Transform("rot270", rot270, rot90),
    Transform("flip_h", flip_h, flip_h),
    Transform("flip_v", flip_v, flip_v),
    Transform("transpose", transpose, transpose),
    Transform("anti_transpose", anti_transpose, anti_transpose),
)
"""The seven non-identity symmetries of the square."""


# ----------------------------------------------------------------------------- size and repeat


def upscale(g: Grid, fy: int, fx: int) -> Grid:
    """Each cell becomes an ``fy`` x ``fx`` block."""
    return tuple(tuple(c for c in row for _ in range(fx)) for row in g for _ in range(fy))


def downscale(g: Grid, fy: int, fx: int) -> Grid | None:
    """Exact inverse of ``upscale``: None unless the grid is made of uniform fy x fx blocks."""
    h, w = len(g), len(g[0]) if g else 0
    if h == 0 or w == 0 or h % fy or w % fx:
        return None
    small = tuple(tuple(g[r][c] for c in range(0, w, fx)) for r in range(0, h, fy))
    return small if upscale(small, fy, fx) == g else None


def tile(g: Grid, ny: int, nx: int) -> Grid:
    """Repeat the grid ``ny`` times downwards and ``nx`` times rightwards."""
    return tuple(tuple(row) * nx for _ in range(ny) for row in g)


def untile(g: Grid, ny: int, nx: int) -> Grid | None:
    """Exact inverse of ``tile``: the top-left tile, None unless the tiling is exact."""
    h, w = len(g), len(g[0]) if g else 0
    if h == 0 or w == 0 or h % ny or w % nx:
        return None
    small = tuple(row[: w // nx] for row in g[: h // ny])
    return small if tile(small, ny, nx) == g else None


def upscale_transform(fy: int, fx: int) -> Transform:
    return Transform(f"upscale{fy}x{fx}", lambda g: upscale(g, fy, fx), lambda g: downscale(g, fy, fx))


def tile_transform(ny: int, nx: int) -> Transform:
    return Transform(f"tile{ny}x{nx}", lambda g: tile(g, ny, nx), lambda g: untile(g, ny, nx))


SIZE: tuple[Transform, ...] = (upscale_transform(2, 2), upscale_transform(2, 1), upscale_transform(1, 2))
REPEAT: tuple[Transform, ...] = (tile_transform(1, 2), tile_transform(2, 1), tile_transform(2, 2))
CHAIN: tuple[Transform, ...] = tuple(b.then(s) for b in BASIC for s in SIZE)

FAMILIES: dict[str, tuple[Transform, ...]] = {"basic": BASIC, "size": SIZE, "chain": CHAIN, "repeat": REPEAT}
"""Augmentation families by the name used in the self-edit (``use_<name>_augmentations``)."""


def family_transforms(families: Iterable[str]) -> list[Transform]:
    """Identity followed by the transforms of the named families (duplicates dropped)."""
    out = [IDENTITY]
    for name in families:
        if name not in FAMILIES:
            raise ValueError(f"unknown augmentation family {name!r} (known: {', '.join(FAMILIES)})")
        out.extend(t for t in FAMILIES[name] if t not in out)
    return out


# ----------------------------------------------------------------------------- colours


def random_color_perm(rng: random.Random, keep_background: bool = True) -> tuple[int, ...]:
    """A permutation ``p`` of 0-9 (colour c becomes p[c]); p[0] == 0 when keep_background."""
    colors = list(range(1, 10) if keep_background else range(10))
    rng.shuffle(colors)
    return tuple([0] + colors) if keep_background else tuple(colors)


def invert_perm(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for c, p in enumerate(perm):
        inv[p] = c
    return tuple(inv)


def apply_colors(g: Grid, perm: tuple[int, ...]) -> Grid:
    return tuple(tuple(perm[c] for c in row) for row in g)


def color_transform(perm: tuple[int, ...]) -> Transform:
    """The colour permutation as a Transform (identity permutation -> IDENTITY)."""
    if sorted(perm) != list(range(10)):
        raise ValueError(f"not a permutation of 0-9: {perm}")
    if perm == tuple(range(10)):
        return IDENTITY
    inv = invert_perm(perm)
    return Transform(
        "colors" + "".join(map(str, perm)), lambda g: apply_colors(g, perm), lambda g: apply_colors(g, inv)
    )


# ----------------------------------------------------------------------------- tasks


def transform_pair(pair: Pair, t: Transform) -> Pair:
    return Pair(t(pair.input), None if pair.output is None else t(pair.output))


def transform_task(task: ArcTask, t: Transform, suffix: bool = True) -> ArcTask | None:
    """Apply ``t`` to every grid of the task; None if a grid would exceed 30x30."""
    train = [transform_pair(p, t) for p in task.train]
    test = [transform_pair(p, t) for p in task.test]
    for p in train + test:
        if not fits(p.input) or (p.output is not None and not fits(p.output)):
            return None
    name = f"{task.id}|{t.name}" if suffix and t.name != "identity" else task.id
    return ArcTask(name, train, test)


def permute_examples(task: ArcTask, rng: random.Random) -> ArcTask:
    """The same task with its demonstrations in a random order."""
    train = list(task.train)
    rng.shuffle(train)
    return ArcTask(task.id, train, list(task.test))


def leave_k_out(task: ArcTask, k: int = 1) -> list[ArcTask]:
    """Tasks made from the demonstrations alone: for every set of ``k`` demonstrations (in
    index order), those become the test pairs and the remaining ``n - k`` the demonstrations.

    ``k=1`` is the leave-one-out construction of Akyurek et al.'s TTT (``n`` tasks);
    ``k=2`` gives ``C(n, 2)`` tasks with two test pairs each, i.e. ``n(n-1)`` prompts with
    ``n - 2`` demonstrations. At least one demonstration must remain, so fewer than ``k + 1``
    pairs give no tasks. Ids are ``<id>/lo<i>[-<j>]``.
    """
    n = len(task.train)
    if k < 1 or n - k < 1:
        return []
    out = []
    for held in itertools.combinations(range(n), k):
        rest = [p for i, p in enumerate(task.train) if i not in held]
        out.append(ArcTask(f"{task.id}/lo{'-'.join(map(str, held))}", rest, [task.train[i] for i in held]))
    return out


def leave_one_out(task: ArcTask) -> list[ArcTask]:
    return leave_k_out(task, 1)


def leave_two_out(task: ArcTask) -> list[ArcTask]:
    return leave_k_out(task, 2)
