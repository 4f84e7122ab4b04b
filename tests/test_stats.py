"""Statistics over seeds, checked against scipy and by hand."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from fgvcbench.report.stats import (csv_text, delta_text, fixed, format_mean_std, mean_std_ci, p_text, paired_difference,
                                    signed, spread)


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


def test_seeds_that_all_agree_have_a_zero_std_and_no_interval():
    # three deterministic seeds at 80.0: the sample std is 0, and a zero-width interval would
    # claim a certainty three seeds cannot give (scipy's t.interval answers nan here too)
    s = mean_std_ci([80.0, 80.0, 80.0])
    assert (s.n, s.mean, s.std) == (3, 80.0, 0.0) and math.isnan(s.half_width) and math.isnan(s.ci_low)
    with np.errstate(invalid="ignore"):
        assert all(math.isnan(v) for v in stats.t.interval(0.95, 2, loc=80.0, scale=0.0))
    # differences that are tiny but real are not "all equal": scipy's t-test answers, and so do we
    a, b = [50.0, 60.0, 70.0], [90.0, 100.0003, 110.0001]
    assert paired_difference(a, b).p_value == pytest.approx(stats.ttest_rel(b, a).pvalue)


def test_a_gain_that_cancels_reads_plus_zero_and_a_tiny_one_keeps_its_sign():
    # correct-image changes of +14, +8 and -22 on a test set of 8,041 images sum to zero;
    # the float mean of the deltas is -4.7e-15, which printed as "-0.00"
    n, k = 8041, [7108, 6670, 6389]
    a = [100 * x / n for x in k]
    b = [100 * (x + d) / n for x, d in zip(k, [14, 8, -22])]
    r = paired_difference(a, b)
    assert r.mean_delta == 0.0 and delta_text(r.mean_delta, r.ci_high - r.mean_delta, r.n).startswith("+0.00 ±")
    assert signed(-0.0027) == "-0.003" and signed(0.0004) == "+0.0004" and signed(-1.234) == "-1.23"
    assert signed(float("nan")) == "–" and signed(0.0) == "+0.00"


def test_a_narrow_interval_or_small_spread_never_reads_as_none():
    # accuracies that move by 0.001 (a large test set): the interval's half-width is 0.0014,
    # which two decimals would print as "±0.00", a certainty the seeds do not give
    r = paired_difference([80.0, 81.0, 82.0], [80.001, 81.001, 82.002])
    half = r.ci_high - r.mean_delta
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * stats.tstd([0.001, 0.001, 0.002]) / 3 ** 0.5, rel=1e-6)
    assert delta_text(r.mean_delta, half, r.n) == "+0.001 ±0.001"
    assert format_mean_std(80.0013, 0.00058) == "80.00 ± 0.0006"
    assert spread(0.0) == "0.00" and spread(0.314) == "0.31" and spread(float("nan")) == "–"


def test_p_values_keep_three_significant_digits_and_small_ones_are_not_zero():
    assert p_text(0.0496) == "0.0496"             # ".3f" said 0.050: the other side of 0.05
    assert p_text(0.5) == "0.500" and p_text(0.01013) == "0.0101"
    assert p_text(1.3e-11) == "<0.001" and p_text(float("nan")) == "–"
    # three digits would round these up onto the line they are below: more digits, then "<line"
    assert p_text(0.04996) == "0.04996" and p_text(0.0099996) == "0.0099996" and p_text(0.049999999) == "<0.05"
    assert p_text(0.05) == "0.0500" and p_text(0.0501) == "0.0501"
    import pandas as pd
    df = pd.DataFrame({"step": ["a", "b"], "top1_mean": [80.123456, 81.0],
                       "incremental_p": [1.3e-11, float("nan")], "delta_wilcoxon_p": [0.0496, 0.25]})
    back = pd.read_csv(__import__("io").StringIO(csv_text(df)))
    assert back["incremental_p"].iloc[0] == pytest.approx(1.3e-11) and math.isnan(back["incremental_p"].iloc[1])
    assert back["delta_wilcoxon_p"].tolist() == [0.0496, 0.25] and back["top1_mean"].tolist() == [80.1235, 81.0]


def test_one_number_computed_two_ways_prints_alike():
    # top-1 and per-class accuracy of a balanced test set: 10.875 exactly, and the mean of
    # per-class rates, 10.874999999999998, printed 10.88 and 10.87 side by side
    per_class = 10.874999999999998
    assert f"{per_class:.2f}" == "10.87" and fixed(per_class) == fixed(10.875) == "10.88"
    assert f"{22.374999999999996:.2f}" == "22.37" and format_mean_std(22.374999999999996, 3.01) == "22.38 ± 3.01"
    assert fixed(1 / 3, 3) == "0.333"
