"""Statistics: normal and bootstrap intervals, paired comparisons, histograms."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ditkit.errors import DataError
from ditkit.evaluate.runner import summarize_metric
from ditkit.evaluate.stats import (
    METRIC_RANGES,
    bootstrap_ci,
    histogram,
    mean_ci_normal,
    metric_scale,
    paired_difference,
    paired_proportion_ci,
    summarize,
)


def test_normal_interval_known_values():
    # mean 3, sample sd sqrt(2.5): half-width 1.96 * sqrt(2.5) / sqrt(5) = 1.96 * sqrt(0.5)
    mean, lo, hi = mean_ci_normal([1, 2, 3, 4, 5])
    half = 1.96 * math.sqrt(0.5)
    assert mean == 3.0
    assert lo == pytest.approx(3.0 - half) and hi == pytest.approx(3.0 + half)


def test_normal_interval_single_value_has_zero_width():
    assert mean_ci_normal([4.0]) == (4.0, 4.0, 4.0)


def test_bootstrap_covers_the_mean_and_is_reproducible():
    values = [1, 1, 2, 5, 5, 4, 3, 5, 1, 2, 4, 4]
    lo, hi = bootstrap_ci(values, n_boot=500, seed=1)
    mean = sum(values) / len(values)
    assert lo < mean < hi
    assert bootstrap_ci(values, n_boot=500, seed=1) == (lo, hi)
    # Roughly as wide as the normal interval at this n.
    _, nlo, nhi = mean_ci_normal(values)
    assert 0.5 < (hi - lo) / (nhi - nlo) < 1.5


def test_summarize_shape():
    s = summarize([2, 4])
    assert s["mean"] == 3.0 and s["n"] == 2
    assert s["ci95"][0] < 3.0 < s["ci95"][1]
    assert len(s["ci95_bootstrap"]) == 2


def test_paired_difference_counts():
    pd = paired_difference([5, 4, 3, 2, 5], [1, 4, 4, 1, 2])
    assert (pd["wins"], pd["losses"], pd["ties"], pd["n"]) == (3, 1, 1, 5)
    assert pd["mean_diff"] == pytest.approx((4 + 0 - 1 + 1 + 3) / 5)
    assert pd["ci95"][0] < pd["mean_diff"] < pd["ci95"][1]


def test_paired_difference_needs_equal_lengths():
    with pytest.raises(DataError, match="pair"):
        paired_difference([1, 2], [1])


def test_empty_or_nan_input_is_a_data_error():
    with pytest.raises(DataError):
        summarize([])
    with pytest.raises(DataError, match="NaN"):
        mean_ci_normal([1.0, float("nan")])


def test_histogram_integer_bins():
    h = histogram([1, 1, 2, 5], [0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    assert h["counts"] == [2, 1, 0, 0, 1]
    assert len(h["edges"]) == 6


def test_proportions_get_wilson_intervals_inside_unit_range():
    from ditkit.evaluate.stats import wilson_ci

    s = summarize([1, 0, 0, 0, 0, 0])
    assert s["ci95_method"] == "wilson"
    lo, hi = s["ci95"]
    assert 0.0 <= lo < 1 / 6 < hi <= 1.0
    assert mean_ci_normal([1, 0, 0, 0, 0, 0])[1] < 0  # the normal interval leaves [0, 1]
    # Known value: 8 of 10 -> [0.490, 0.943] (Wilson 1927; e.g. Newcombe 1998, table I).
    lo, hi = wilson_ci(8, 10)
    assert abs(lo - 0.490) < 1e-3 and abs(hi - 0.943) < 1e-3
    # scipy computes it, at the level whose z is the paper's 1.96: the closed form with z = 1.96.
    z, p, n = 1.96, 0.8, 10
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert lo == pytest.approx((centre - half) / (1 + z * z / n), abs=1e-12)
    assert hi == pytest.approx((centre + half) / (1 + z * z / n), abs=1e-12)
    assert summarize([0, 0, 0])["ci95"][0] == 0.0 and summarize([1, 1])["ci95"][1] == 1.0
    assert summarize([0.5, 1.0])["ci95_method"] == "normal"
    # A continuous score that is 0 on every row gets the (zero-width) normal interval, not Wilson.
    assert summarize([0.0, 0.0, 0.0], proportion=False)["ci95"] == [0.0, 0.0]


def test_paired_proportion_interval_known_value():
    # Cavo et al. 2012, 161 pairs: Newcombe's square-and-add gives -0.0621 [-0.1186, -0.0046]
    # (Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables, ch. 8).
    lo, hi = paired_proportion_ci(59, 6, 16, 80)
    assert abs(lo + 0.1186) < 1e-4 and abs(hi + 0.0046) < 1e-4


def test_paired_difference_of_hits_stays_in_unit_range():
    # The issue's +1.32: 5 wins and 1 loss on a 0/1 score.
    a, b = [1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 1]
    assert mean_ci_normal([x - y for x, y in zip(a, b)])[2] == pytest.approx(1.32, abs=5e-3)
    pd = paired_difference(a, b)
    assert pd["ci95_method"] == "newcombe"
    assert -1.0 <= pd["ci95"][0] < pd["mean_diff"] < pd["ci95"][1] <= 1.0
    # Per-diff means of a proportion (several rows per diff) are clipped to [-1, 1] instead.
    pd = paired_difference([1, 1, 1, 0.5], [0, 0, 0.5, 1], **metric_scale("alias_match"))
    assert pd["ci95_method"] == "normal_clipped" and pd["ci95"][1] <= 1.0


def test_bounded_metrics_get_intervals_inside_their_range():
    # The cosine of 1.05: values near 1 gave a normal interval past it.
    s = summarize_metric("embedding_cosine", [1.0, 1.0, 0.8, 1.0000001])
    assert mean_ci_normal([1.0, 1.0, 0.8, 1.0])[2] > 1.0
    assert s["ci95_method"] == "normal_clipped" and s["ci95"][1] == 1.0 and s["mean"] <= 1.0
    assert summarize_metric("judge", [1, 1, 1])["ci95"] == [1.0, 1.0]  # not 3 hits out of 3
    assert summarize_metric("prefix_abs_error", [0, 1, 1])["ci95_method"] == "normal_clipped"
    assert summarize_metric("alias_match", [0, 1, 1])["ci95_method"] == "wilson"
    assert summarize_metric("made_up", [0.5, 1.0]) == summarize([0.5, 1.0])  # unknown: as before
    with pytest.raises(DataError, match=r"outside the range \[-1, 1\]"):
        summarize_metric("embedding_cosine", [0.5, 1.5])
    pd = paired_difference([5, 5, 5, 4], [1, 1, 2, 1], **metric_scale("judge"))
    assert mean_ci_normal([4, 4, 3, 3])[2] > 4.0 and pd["ci95"][1] == 4.0


def _metric_values(lo: float, hi: float, n: int):
    """Lists of ``n`` scores in [lo, hi]: the ends only (0/1 hits), integers, any floats, or
    one value repeated."""
    ends = st.sampled_from([lo, hi])
    one = st.one_of(ends, st.integers(int(lo), int(hi)).map(float), st.floats(lo, hi))
    return st.one_of(
        st.lists(ends, min_size=n, max_size=n),
        st.lists(one, min_size=n, max_size=n),
        one.map(lambda v: [v] * n),
    )


def _assert_holds(interval: list[float], point: float, lo: float, hi: float) -> None:
    assert lo <= interval[0] <= point <= interval[1] <= hi, (interval, point, (lo, hi))


METRICS = st.sampled_from(sorted(METRIC_RANGES))
# 1 to 60 values, often very few: small samples are where normal intervals overshoot.
SIZES = st.one_of(st.integers(1, 6), st.integers(1, 60))
PROPERTY = settings(max_examples=100, deadline=None, database=None, derandomize=True)


@PROPERTY
@given(st.data(), METRICS, SIZES)
def test_every_interval_lies_in_its_metric_range(data, metric, n):
    lo, hi = METRIC_RANGES[metric]
    s = summarize_metric(metric, data.draw(_metric_values(lo, hi, n)))
    _assert_holds(s["ci95"], s["mean"], lo, hi)
    _assert_holds(s["ci95_bootstrap"], s["mean"], lo, hi)


@PROPERTY
@given(st.data(), METRICS, SIZES)
def test_every_paired_interval_lies_in_its_range(data, metric, n):
    lo, hi = METRIC_RANGES[metric]
    a = data.draw(_metric_values(lo, hi, n))
    # b: a itself, a mirrored (a wins wherever a is high: the issue's +1.32), or any list.
    b = data.draw(
        st.one_of(st.just(a), st.just([lo + hi - x for x in a]), _metric_values(lo, hi, n))
    )
    pd = paired_difference(a, b, **metric_scale(metric))
    _assert_holds(pd["ci95"], pd["mean_diff"], lo - hi, hi - lo)
    if metric_scale(metric)["proportion"] is None and {*a, *b} <= {0.0, 1.0}:
        assert pd["ci95_method"] == "newcombe"
