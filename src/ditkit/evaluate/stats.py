"""Summary statistics for per-diff scores: means, 95% intervals, paired comparisons, histograms.

The paper reports 95% normal intervals (mean +/- 1.96 sd / sqrt(n)); the percentile bootstrap is
given alongside because judge scores on 1-5 are far from normal at small n. Every interval stays
inside what its metric can score (`METRIC_RANGES`): proportions (every value 0 or 1: alias match,
retrieval@k) get the Wilson score interval, where the normal one prints -0.16 for 1 hit in 6;
bounded continuous scores get the normal interval clipped to their range (a cosine interval ends
at 1, not 1.13); paired differences of 0/1 scores get Newcombe's paired interval, inside [-1, 1].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import binomtest, norm

from ditkit.errors import DataError

Z95 = 1.96
# The confidence level whose two-sided normal quantile is exactly the paper's 1.96 (0.950004...):
# scipy's Wilson interval at this level is the one every number of ours was computed with.
CONF95 = 2 * float(norm.cdf(Z95)) - 1

ValueRange = tuple[float, float]

# What one row can score, per metric. Gating rates are alias_match on the gate_* rows.
METRIC_RANGES: dict[str, ValueRange] = {
    "alias_match": (0.0, 1.0),
    "retrieval_at_1": (0.0, 1.0),
    "retrieval_at_5": (0.0, 1.0),
    "prefix_exact": (0.0, 1.0),
    "rouge_l": (0.0, 1.0),
    "embedding_cosine": (-1.0, 1.0),
    "judge": (1.0, 5.0),
    "prefix_abs_error": (0.0, 999.0),
    "shows": (0.0, 1.0),  # the behaviour suite's diff check
    "family_match": (0.0, 1.0),  # the behaviour suite: the answer names the diff's family
}
# Metrics scored 0 or 1 per row; the others are never proportions, even when every row scores 0
# or 1 (ROUGE-L of 0 on every row is not 0 hits out of n).
PROPORTION_METRICS = frozenset(
    {"alias_match", "retrieval_at_1", "retrieval_at_5", "prefix_exact", "shows", "family_match"}
)


def metric_scale(metric: str) -> dict:
    """Keyword arguments ``proportion`` and ``value_range`` of `summarize` and `paired_difference`
    for ``metric``; both None for a metric not in `METRIC_RANGES` (values decide, as before)."""
    if metric not in METRIC_RANGES:
        return {"proportion": None, "value_range": None}
    return {
        "proportion": None if metric in PROPORTION_METRICS else False,
        "value_range": METRIC_RANGES[metric],
    }


def _as_array(
    values: Sequence[float], what: str = "values", value_range: ValueRange | None = None
) -> np.ndarray:
    """Values as floats, clipped to ``value_range``: a float32 cosine of two equal texts is
    1.0000001; a value further outside is a DataError."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"{what}: need a non-empty list of numbers, got {len(arr)} items")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{what}: contains NaN or infinite values")
    if value_range is None:
        return arr
    lo, hi = value_range
    slack = 1e-4 * (hi - lo)
    outside = arr[(arr < lo - slack) | (arr > hi + slack)]
    if outside.size:
        raise DataError(
            f"{what}: {outside.size} value(s) outside the range [{lo:g}, {hi:g}] "
            f"(e.g. {outside[0]:g}); pass the metric's own range (stats.METRIC_RANGES) or none"
        )
    return np.clip(arr, lo, hi)


def _is_proportion(proportion: bool | None, *arrs: np.ndarray) -> bool:
    """``proportion``, or when None whether every value is 0 or 1."""
    zero_one = all(bool(np.all((a == 0) | (a == 1))) for a in arrs)
    if proportion and not zero_one:
        raise DataError("proportion=True but some values are neither 0 nor 1")
    return zero_one if proportion is None else proportion


def _interval(point: float, lo: float, hi: float, bounds: ValueRange | None) -> list[float]:
    """[lo, hi] widened to hold ``point`` (rounding) and clipped to ``bounds``."""
    lo, hi = min(lo, point), max(hi, point)
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return [float(lo), float(hi)]


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
    ci = binomtest(successes, n).proportion_ci(CONF95, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def _square_and_add(x: float, y: float, phi: float) -> float:
    return math.sqrt(max(0.0, x * x - 2 * phi * x * y + y * y))


def paired_proportion_ci(both: int, only_a: int, only_b: int, neither: int) -> tuple[float, float]:
    """(lo, hi): the 95% interval of p_a - p_b for 0/1 scores of a and b on the same items, from
    the counts of items both, only a, only b and neither scored.

    Newcombe's method 10 (Stat Med 1998, 17:2635; Fagerland, Lydersen & Laake's "square-and-add"):
    each proportion's Wilson interval, combined with the correlation of the pair. Chosen because
    it stays inside [-1, 1] (lo >= lo_a - hi_b, hi <= hi_a - lo_b), keeps close to 95% coverage
    at small n where the normal interval of the differences reached +1.32, and is closed-form
    (Tango's score interval needs a root search).
    """
    counts = (both, only_a, only_b, neither)
    n = sum(counts)
    if n < 1 or min(counts) < 0:
        raise DataError(f"paired_proportion_ci: need counts >= 0 and n >= 1, got {counts}")
    p_a, p_b = (both + only_a) / n, (both + only_b) / n
    lo_a, hi_a = wilson_ci(both + only_a, n)
    lo_b, hi_b = wilson_ci(both + only_b, n)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    cross = both * neither - only_a * only_b
    # Correlation of p_a and p_b; a positive numerator is cut by n / 2, floored at 0 (Newcombe).
    phi = 0.0
    if margins and cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    elif margins and cross < 0:
        phi = cross / math.sqrt(margins)
    diff = p_a - p_b
    lo = diff - _square_and_add(p_a - lo_a, hi_b - p_b, phi)
    hi = diff + _square_and_add(hi_a - p_a, p_b - lo_b, phi)
    return max(-1.0, lo), min(1.0, hi)


def summarize(
    values: Sequence[float], proportion: bool | None = None, value_range: ValueRange | None = None
) -> dict:
    """{"mean", "ci95", "ci95_method", "ci95_bootstrap", "n"}: stored per method and metric.

    ``ci95`` is the Wilson interval for a proportion ("wilson"); for other scores the normal
    interval, clipped to ``value_range`` when given ("normal_clipped"). Clipping, not the
    bootstrap, keeps the paper's numbers wherever they fit and only cuts the ends a score cannot
    reach; the percentile bootstrap, inside the range by construction, is stored alongside.
    ``proportion`` None: a proportion when every value is 0 or 1; False for a continuous score.
    `metric_scale` gives both for a named metric. Every interval contains the mean.
    """
    arr = _as_array(values, "summarize", value_range)
    mean, lo, hi = mean_ci_normal(arr)
    method = "normal" if value_range is None else "normal_clipped"
    if _is_proportion(proportion, arr):
        lo, hi = wilson_ci(int(arr.sum()), arr.size)
        method = "wilson"
    return {
        "mean": mean,
        "ci95": _interval(mean, lo, hi, value_range),
        "ci95_method": method,
        "ci95_bootstrap": _interval(mean, *bootstrap_ci(arr), value_range),
        "n": int(arr.size),
    }


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    proportion: bool | None = None,
    value_range: ValueRange | None = None,
) -> dict:
    """Compare two methods scored on the same diffs, in the same order: a - b per diff.

    Returns {"mean_diff", "ci95", "ci95_method", "wins" (a > b), "losses" (a < b), "ties", "n"}.
    ``ci95``: for 0/1 scores (``proportion`` as in `summarize`) `paired_proportion_ci`
    ("newcombe"); else the normal interval of the differences, clipped to [low - high,
    high - low] of ``value_range`` when given ("normal_clipped").
    """
    arr_a = _as_array(a, "paired_difference a", value_range)
    arr_b = _as_array(b, "paired_difference b", value_range)
    if arr_a.size != arr_b.size:
        raise DataError(
            f"paired_difference: a has {arr_a.size} values but b has {arr_b.size}; "
            "pair the scores by diff first"
        )
    diff = arr_a - arr_b
    mean, lo, hi = mean_ci_normal(diff)
    method, bounds = "normal", None
    if value_range is not None:
        width = value_range[1] - value_range[0]
        method, bounds = "normal_clipped", (-width, width)
    if _is_proportion(proportion, arr_a, arr_b):
        hit_a, hit_b = arr_a == 1, arr_b == 1
        lo, hi = paired_proportion_ci(
            int(np.sum(hit_a & hit_b)),
            int(np.sum(hit_a & ~hit_b)),
            int(np.sum(~hit_a & hit_b)),
            int(np.sum(~hit_a & ~hit_b)),
        )
        method, bounds = "newcombe", (-1.0, 1.0)
    return {
        "mean_diff": mean,
        "ci95": _interval(mean, lo, hi, bounds),
        "ci95_method": method,
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
