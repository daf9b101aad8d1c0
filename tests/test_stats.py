"""Statistics: normal and bootstrap intervals, paired comparisons, histograms."""

from __future__ import annotations

import math

import pytest

from ditkit.errors import DataError
from ditkit.evaluate.stats import (
    bootstrap_ci,
    histogram,
    mean_ci_normal,
    paired_difference,
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
    assert summarize([0, 0, 0])["ci95"][0] == 0.0 and summarize([1, 1])["ci95"][1] == 1.0
    assert summarize([0.5, 1.0])["ci95_method"] == "normal"
    # A continuous score that is 0 on every row gets the (zero-width) normal interval, not Wilson.
    assert summarize([0.0, 0.0, 0.0], proportion=False)["ci95"] == [0.0, 0.0]
