"""Intervals and correlations for the result tables."""

from __future__ import annotations

import numpy as np


def cluster_bootstrap(groups: list[list[float]], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean over all values with a 95% percentile interval, resampling whole groups.

    Questions of one passage are not independent (one update serves them all), so we resample
    passages, not questions.
    """
    groups = [g for g in groups if len(g)]
    if not groups:
        return {"mean": None, "lo": None, "hi": None, "undefined": "no values"}
    sums = np.array([sum(g) for g in groups], dtype=float)
    counts = np.array([len(g) for g in groups], dtype=float)
    mean = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(groups), size=(n_boot, len(groups)))
    boots = sums[idx].sum(1) / counts[idx].sum(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": mean, "lo": float(lo), "hi": float(hi)}


def bootstrap_mean(values: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of per-unit values (e.g. per-passage accuracies) with a 95% percentile interval."""
    return paired_bootstrap(values, [0.0] * len(values), n_boot, seed)


def sd(values: list[float]) -> float | None:
    """Sample standard deviation (n - 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    return float(np.std(np.asarray(values, dtype=float), ddof=1))


def paired_bootstrap(a: list[float], b: list[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of a - b over paired units with a 95% percentile interval."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0:  # undefined: JSON null with the reason, never NaN
        return {"mean": None, "lo": None, "hi": None, "n": 0, "undefined": "no paired values"}
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(d))}


def interval_sign(lo: float | None, hi: float | None) -> int | None:
    """What a 95% interval of a difference says about its sign: +1 when it lies above 0, -1 below
    0, 0 when it holds 0 (the two cannot be told apart), None when there is no interval. Every
    sentence that puts a paired difference into words asks this, so a significant drop is never
    called "cannot be told apart"."""
    if lo is None or hi is None:
        return None
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    # average ranks over ties
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    return sums[inv] / counts[inv]


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation; None where it is undefined (see `spearman_undefined`)."""
    if spearman_undefined(a, b):
        return None
    ra, rb = _ranks(np.asarray(a, dtype=float)), _ranks(np.asarray(b, dtype=float))
    return float(np.corrcoef(ra, rb)[0, 1])


def spearman_undefined(a: list[float], b: list[float]) -> str | None:
    """Why Spearman's correlation of a and b is undefined, or None when it is defined."""
    if len(a) < 3:
        return f"fewer than 3 pairs ({len(a)})"
    if len(set(a)) == 1 or len(set(b)) == 1:
        return "one series is constant (nothing to rank)"
    return None
