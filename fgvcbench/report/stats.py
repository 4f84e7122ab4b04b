"""Statistics over seeds: mean, sample std, Student-t confidence intervals, paired tests.

Seeds are few (3–5), so intervals use the t distribution, never the normal, and a single
seed gives no spread at all (NaN, not 0). Seeds that all give the same value have a sample
std of 0 but no interval (NaN): a zero-width interval from 2–5 seeds would claim a
certainty they cannot give (deterministic runs, or a test set whose accuracy moves in
steps of 100/N, make such ties common).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats as _st

NAN = float("nan")


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float          # sample std (ddof=1)
    ci_low: float
    ci_high: float
    half_width: float


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std and the t-based confidence interval of the mean."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, NAN, NAN, NAN, NAN, NAN)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, NAN, NAN, NAN, NAN)
    if _all_equal(x):
        return Summary(n, mean, 0.0, NAN, NAN, NAN)
    std = float(x.std(ddof=1))
    half = float(_st.t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n))
    return Summary(n, mean, std, mean - half, mean + half, half)


def _all_equal(x: np.ndarray) -> bool:
    """Every value the same within float noise (an absolute 1e-9: accuracies are
    percentages, so 81.5 − 80.5 and 82.0 − 81.0 may differ in the last bits only)."""
    return bool(np.ptp(x) < 1e-9)


@dataclass(frozen=True)
class PairedResult:
    n: int
    mean_delta: float
    ci_low: float
    ci_high: float
    t_stat: float
    p_value: float
    wilcoxon_p: float
    wilcoxon_n: int = 0   # the pairs Wilcoxon ranks: its default drops zero deltas


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedResult:
    """Paired comparison of ``b`` against ``a`` over the same seeds (delta = b − a).

    Pairing removes the seed-to-seed spread that both sides share, which with 3–5 seeds
    is usually larger than the effect of one recipe step. A pair with a NaN on either
    side is dropped as a whole (never one side only, which would unpair the rest).

    The paired t-test is ``scipy.stats.ttest_rel``. When every delta is the same
    (within float noise: 81.5 − 80.5 and 82.0 − 81.0 need not be bit-identical) the t
    statistic is undefined; scipy then answers t = ±inf, p = 0, i.e. certainty from a
    handful of seeds, which no reader should be shown. We return t = p = NaN instead
    ("the t-test cannot say"), with the mean delta and a NaN interval (its zero width
    would be the same false certainty: test sets of a few hundred images move accuracy
    in fixed steps, so equal deltas over 2–3 seeds are common). Wilcoxon's signed-rank p
    is still given there — every seed moving the same way is exactly the case it is
    meant for — and generally whenever n >= 2 and some delta is non-zero; it drops zero
    deltas (scipy's default), so ``wilcoxon_n`` says how many pairs it ranked.
    With n < 2 there is no test: p values and the interval are NaN.
    """
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples differ in length: {len(a_arr)} vs {len(b_arr)}")
    keep = ~(np.isnan(a_arr) | np.isnan(b_arr))
    a_arr, b_arr = a_arr[keep], b_arr[keep]
    delta = b_arr - a_arr
    s = mean_std_ci(delta, confidence)
    # deltas that cancel exactly (+14, +8, −22 images) must read 0, not −4.7e-15 (printed "-0.00")
    mean_delta = 0.0 if abs(s.mean) < 1e-9 else s.mean
    if s.n < 2:
        return PairedResult(s.n, mean_delta, NAN, NAN, NAN, NAN, NAN)
    wil, wil_n = NAN, 0
    if np.any(~np.isclose(delta, 0.0)):
        # rounding turns float noise into the exact ties / zeros Wilcoxon handles
        rounded = np.round(delta, 9)
        try:
            wil, wil_n = float(_st.wilcoxon(rounded).pvalue), int(np.count_nonzero(rounded))
        except ValueError:
            wil = NAN
    if _all_equal(delta):
        return PairedResult(s.n, mean_delta, NAN, NAN, NAN, NAN, wil, wil_n)
    t = _st.ttest_rel(b_arr, a_arr)
    return PairedResult(s.n, mean_delta, s.ci_low, s.ci_high, float(t.statistic), float(t.pvalue), wil, wil_n)


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``88.22 ± 0.31``; without a spread (one seed) just ``88.22``; no value: ``–``. A
    spread too small for ``digits`` keeps one significant digit (``± 0.003``)."""
    if mean is None or math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return fixed(mean, digits)
    return f"{fixed(mean, digits)} ± {spread(std, digits)}"


def fixed(value: float, digits: int = 2) -> str:
    """``value`` to ``digits`` decimals, first rounded to 9 so that two computations of one
    number that differ in the last bits (top-1 of a balanced test set, and the mean of its
    per-class rates: 10.875 and 10.874999999999998) print alike, not as 10.88 and 10.87."""
    return f"{round(value, 9):.{digits}f}"


def spread(value: float, digits: int = 2) -> str:
    """A std or an interval's half-width: ``0.31``; one that is not zero but would round to
    it keeps one significant digit (``0.001``), so no measured spread reads as none; a
    true zero (every seed equal) is ``0.00``; no value: ``–``."""
    if value is None or math.isnan(value):
        return "–"
    text = f"{value:.{digits}f}"
    return text if float(text) != 0 or value == 0 else f"{value:.1g}"


def p_text(p: float) -> str:
    """A p-value in three significant digits (``0.0496``, not ``0.050``, which would read
    as the other side of 0.05; more where three round it up onto 0.05 or 0.01: ``0.04996``),
    ``<0.001`` below that; none: ``–``."""
    if p is None or math.isnan(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    text = f"{p:#.3g}"
    for digits in (4, 5, 6, None):   # 0.04996 is not "0.0500": more digits until it reads below its line
        crossed = [line for line in (0.05, 0.01) if p < line <= float(text)]
        if not crossed:
            break
        text = f"{p:#.{digits}g}" if digits else f"<{crossed[0]:g}"
    return text


def csv_text(df) -> str:
    """A table as CSV for tools: numbers to 4 decimals, except p-values (columns ``*_p``),
    written in 4 significant digits so that a small one (1.3e-11) is not stored as 0."""
    out = df.copy()
    for column in out.columns:
        if str(column).endswith("_p"):
            out[column] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else format(float(v), ".4g")
                           for v in out[column]]
    return out.to_csv(index=False, float_format="%.4f")


def delta_text(mean: float, half: float, n: int) -> str:
    """``+0.54 ±0.40`` (the 95 % CI half-width), ``+1.00`` when the interval is undefined
    (one pair, or every seed moved the same), ``–`` without a pair."""
    if not n or mean is None or math.isnan(mean):
        return "–"
    return signed(mean) + ("" if half is None or math.isnan(half) else f" ±{spread(half)}")


def signed(value: float, digits: int = 2) -> str:
    """A gain with its sign: ``+0.54``, ``-1.20``; ``+0.00`` for no change (never ``-0.00``,
    float noise of a sum that cancels); a real change too small for ``digits`` keeps one
    significant digit (``-0.003``) rather than reading as none; no value: ``–``."""
    if value is None or math.isnan(value):
        return "–"
    text = f"{value:+.{digits}f}"
    if float(text) != 0:
        return text
    return f"{0.0:+.{digits}f}" if abs(value) < 1e-9 else f"{value:+.1g}"
