"""Summary statistics for per-diff scores: means, 95% intervals, paired comparisons, histograms.

The paper reports 95% normal intervals (mean +/- 1.96 sd / sqrt(n)); the percentile bootstrap is
given alongside because judge scores on 1-5 are far from normal at small n. Proportions (every
value 0 or 1: alias match, retrieval@k) get the Wilson score interval, which stays inside [0, 1]
where the normal one prints -0.16 for 1 hit in 6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ditkit.errors import DataError

Z95 = 1.96


def _as_array(values: Sequence[float], what: str = "values") -> np.ndarray:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{what}: need a non-empty list of numbers, got {len(arr)} items")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what}: contains NaN or infinite values")
    return arr


def mean_ci_normal(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi): the 95% normal interval, half-width 1.96 * sd / sqrt(n), sd with n - 1.

    A single value gives an interval of zero width.
    """
    arr = _as_array(values)
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean, mean
    half = Z95 * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, mean - half, mean + half


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(lo, hi): the 2.5th and 97.5th percentiles of `n_boot` resampled means."""
    arr = _as_array(values)
    if n_boot < 1:
        raise DataError(f"bootstrap_ci: n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, arr.size, size=(n_boot, arr.size))
    means = arr[idx].mean(axis=1)  # [n_boot]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def wilson_ci(successes: int, n: int) -> tuple[float, float]:
    """(lo, hi): the 95% Wilson score interval of a proportion; always inside [0, 1]."""
    if n < 1 or not 0 <= successes <= n:
        raise DataError(f"wilson_ci: need 0 <= successes <= n and n >= 1, got {successes}/{n}")
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(values: Sequence[float], proportion: bool | None = None) -> dict:
    """{"mean", "ci95", "ci95_method", "ci95_bootstrap", "n"}: stored per method and metric.

    ``ci95`` is the Wilson interval for a proportion, else the normal interval. ``proportion``
    None: a proportion when every value is 0 or 1; False for a continuous score (ROUGE-L of 0 on
    every row is not 0 hits out of n).
    """
    arr = _as_array(values)
    mean, lo, hi = mean_ci_normal(arr)
    method = "normal"
    if proportion is None:
        proportion = bool(np.all((arr == 0) | (arr == 1)))
    if proportion:
        lo, hi = wilson_ci(int(arr.sum()), arr.size)
        method = "wilson"
    blo, bhi = bootstrap_ci(arr)
    return {
        "mean": mean,
        "ci95": [lo, hi],
        "ci95_method": method,
        "ci95_bootstrap": [blo, bhi],
        "n": len(values),
    }


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict:
    """Compare two methods scored on the same diffs, in the same order: a - b per diff.

    Returns {"mean_diff", "ci95" (normal interval of the differences), "wins" (a > b),
    "losses" (a < b), "ties", "n"}.
    """
    arr_a = _as_array(a, "paired_difference a")
    arr_b = _as_array(b, "paired_difference b")
    if arr_a.size != arr_b.size:
        raise DataError(
            f"paired_difference: a has {arr_a.size} values but b has {arr_b.size}; "
            "pair the scores by diff first"
        )
    diff = arr_a - arr_b
    mean, lo, hi = mean_ci_normal(diff)
    return {
        "mean_diff": mean,
        "ci95": [lo, hi],
        "wins": int(np.sum(diff > 0)),
        "losses": int(np.sum(diff < 0)),
        "ties": int(np.sum(diff == 0)),
        "n": int(diff.size),
    }


def histogram(values: Sequence[float], bins: int | Sequence[float]) -> dict:
    """{"edges": [...], "counts": [...]} as plain lists (numpy.histogram semantics for `bins`)."""
    arr = _as_array(values)
    counts, edges = np.histogram(arr, bins=bins)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}
