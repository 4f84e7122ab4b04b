"""Statistics over seeds, checked against scipy and by hand."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats

from fgvcbench.report.stats import format_mean_std, mean_std_ci, paired_difference


def test_t_interval_matches_a_hand_computation():
    values = [88.1, 88.9, 87.6, 88.4]
    s = mean_std_ci(values)
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = stats.t.ppf(0.975, df=3) * sd / math.sqrt(4)
    assert (s.n, s.mean, s.std) == (4, pytest.approx(mean), pytest.approx(sd))
    assert s.half_width == pytest.approx(half) and s.ci_low == pytest.approx(mean - half)
    assert mean_std_ci(values, 0.99).half_width > s.half_width


def test_one_seed_has_no_spread_and_none_has_nothing():
    one = mean_std_ci([91.0])
    assert one.mean == 91.0 and math.isnan(one.std) and math.isnan(one.half_width)
    assert mean_std_ci([1.0, float("nan"), 3.0]).n == 2


def test_paired_difference_is_scipys_paired_t_test():
    a, b = [80.0, 81.5, 79.0, 80.2, 82.0], [81.0, 82.0, 80.5, 80.0, 83.1]
    r = paired_difference(a, b)
    ref = stats.ttest_rel(b, a)
    assert r.mean_delta == pytest.approx(statistics.mean(y - x for x, y in zip(a, b)))
    assert r.t_stat == pytest.approx(ref.statistic) and r.p_value == pytest.approx(ref.pvalue)
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon([y - x for x, y in zip(a, b)]).pvalue)
    assert r.ci_low < r.mean_delta < r.ci_high


def test_paired_difference_edge_cases():
    assert math.isnan(paired_difference([1.0], [2.0]).p_value)
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0])


def test_format_mean_std():
    assert format_mean_std(88.2249, 0.3141) == "88.22 ± 0.31"
    assert format_mean_std(88.2, float("nan")) == "88.20"
    assert format_mean_std(float("nan"), 1.0) == "–"


def test_no_values_is_all_nan_and_other_confidence_levels_use_their_t_quantile():
    empty = mean_std_ci([])
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.mean, empty.std, empty.ci_low, empty.ci_high,
                                                           empty.half_width))
    values = [70.0, 72.5, 71.0]
    s = mean_std_ci(values, confidence=0.90)
    half = stats.t.ppf(0.95, df=2) * statistics.stdev(values) / math.sqrt(3)
    assert s.half_width == pytest.approx(half) and s.ci_high == pytest.approx(statistics.mean(values) + half)


def test_identical_deltas_keep_wilcoxon_and_give_no_interval():
    # every seed gains exactly one point: the t-test is undefined (scipy would say p = 0),
    # we say NaN, and a zero-width interval would claim the same certainty: NaN too;
    # Wilcoxon still answers, and equals scipy's on the same deltas
    r = paired_difference([80.5, 81.0, 79.0], [81.5, 82.0, 80.0])
    assert math.isnan(r.p_value) and math.isnan(r.t_stat)
    assert r.mean_delta == pytest.approx(1.0) and math.isnan(r.ci_low) and math.isnan(r.ci_high)
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon([1.0, 1.0, 1.0]).pvalue) and r.wilcoxon_n == 3
    zero = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert zero.mean_delta == 0.0 and math.isnan(zero.p_value) and math.isnan(zero.wilcoxon_p)


def test_wilcoxon_says_how_many_pairs_it_ranked():
    # scipy's default drops zero deltas: one seed moved, two did not — the test saw one pair
    r = paired_difference([50.0, 50.0, 50.0], [56.25, 50.0, 50.0])
    assert r.n == 3 and r.wilcoxon_n == 1
    assert r.wilcoxon_p == pytest.approx(stats.wilcoxon([6.25, 0.0, 0.0]).pvalue)


def test_a_pair_with_a_missing_side_is_dropped_whole():
    a, b = [80.0, 81.5, float("nan"), 80.2], [81.0, 82.0, 99.0, 80.9]
    r = paired_difference(a, b)
    ref = stats.ttest_rel([81.0, 82.0, 80.9], [80.0, 81.5, 80.2])
    assert r.n == 3 and r.p_value == pytest.approx(ref.pvalue)
    assert r.mean_delta == pytest.approx(statistics.mean([1.0, 0.5, 0.7]))
    d = [1.0, 0.5, 0.7]
    half = stats.t.ppf(0.975, df=2) * statistics.stdev(d) / math.sqrt(3)
    assert r.ci_low == pytest.approx(statistics.mean(d) - half)
