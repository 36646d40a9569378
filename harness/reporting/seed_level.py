"""Seed-level inference for a pre-registered contrast: seeds are the unit, so run-level luck (a
training seed's data order and initialisation) is part of the noise the test holds its error
rate against, which a test over queries alone cannot do.

    test = seed_level_test(a_means, b_means, paired=True, comparisons=2, margin=1.0)
    test.difference, test.low, test.high, test.p, test.mde, test.tost_p
    slope = trend_test(log_pool_sizes, values, seeds_per_arm=3, comparisons=3)   # a trend over the grid

Each arm contributes one value per seed (its metric over the evaluation queries). With the same
seeds in both arms the test is a paired t-test on the per-seed differences (scipy.stats.ttest_rel,
n - 1 degrees of freedom); otherwise Student's two-sample t-test with the variance pooled across
the arms (``ttest_ind``, n_a + n_b - 2 degrees of freedom). Equivalence is two one-sided tests
(statsmodels' ``ttost_paired`` / ``ttost_ind``) at the declared margin. With ``comparisons``
confirmatory contrasts, the minimum detectable effect uses the strictest step of Holm's
procedure, alpha / comparisons: (t(1 - alpha / 2k, df) + t(power, df)) x SE.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from harness.reporting.stats import ALPHA, POWER


@dataclass(frozen=True)
class SeedLevelTest:
    """b - a over seeds: its mean, confidence interval, two-sided p, Holm-adjusted MDE, TOST p."""

    difference: float
    low: float
    high: float
    p: float
    mde: float
    seeds: tuple[int, int]  # per arm
    paired: bool
    tost_p: float | None  # None without a margin


def seed_level_test(a: Sequence[float], b: Sequence[float], paired: bool, comparisons: int = 1,
                    margin: float | None = None, alpha: float = ALPHA, power: float = POWER) -> SeedLevelTest:
    """The seed-level t-test of b against a (see the module docstring); NaN p and interval where
    a side has too few seeds to estimate its variance."""
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired and len(a_values) != len(b_values):
        raise ValueError(f"paired arms need as many seeds: {len(a_values)} vs {len(b_values)}")
    difference = float(b_values.mean() - a_values.mean())
    standard_error, df = _standard_error(a_values, b_values, paired)
    if df < 1 or not math.isfinite(standard_error):
        return SeedLevelTest(difference, math.nan, math.nan, math.nan, math.nan, (len(a_values), len(b_values)),
                             paired, None)
    if standard_error == 0.0:  # identical arms (or a constant difference): nothing to test against
        p = 1.0 if difference == 0 else 0.0
        return SeedLevelTest(difference, difference, difference, p, 0.0, (len(a_values), len(b_values)), paired,
                             None if margin is None else float(abs(difference) >= margin))
    result = (scipy_stats.ttest_rel(b_values, a_values) if paired
              else scipy_stats.ttest_ind(b_values, a_values, equal_var=True))
    interval = result.confidence_interval(confidence_level=1 - alpha)
    quantile = scipy_stats.t.ppf(1 - alpha / (2 * max(comparisons, 1)), df) + scipy_stats.t.ppf(power, df)
    tost = None
    if margin is not None:
        tost = float((ttost_paired(b_values, a_values, -margin, margin) if paired
                      else ttost_ind(b_values, a_values, -margin, margin, usevar="pooled"))[0])
    return SeedLevelTest(difference, float(interval.low), float(interval.high), float(result.pvalue),
                         float(quantile * standard_error), (len(a_values), len(b_values)), paired, tost)


def trend_test(x: Sequence[float], y: Sequence[float], seeds_per_arm: int, comparisons: int = 1,
               alpha: float = ALPHA, power: float = POWER) -> SeedLevelTest:
    """The slope of y on x over every run (each run one point: seeds are the units), by ordinary
    least squares (scipy.stats.linregress, n - 2 degrees of freedom): its interval, two-sided p
    and Holm-adjusted MDE, as ``seed_level_test`` gives for a difference."""
    x_values, y_values = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    df = len(x_values) - 2
    if df < 1 or len(set(x_values.tolist())) < 2:
        return SeedLevelTest(math.nan, math.nan, math.nan, math.nan, math.nan, (seeds_per_arm, seeds_per_arm),
                             False, None)
    fit = scipy_stats.linregress(x_values, y_values)
    half = scipy_stats.t.ppf(1 - alpha / 2, df) * fit.stderr
    quantile = scipy_stats.t.ppf(1 - alpha / (2 * max(comparisons, 1)), df) + scipy_stats.t.ppf(power, df)
    return SeedLevelTest(float(fit.slope), float(fit.slope - half), float(fit.slope + half), float(fit.pvalue),
                         float(quantile * fit.stderr), (seeds_per_arm, seeds_per_arm), False, None)


def _standard_error(a: np.ndarray, b: np.ndarray, paired: bool) -> tuple[float, int]:
    """The standard error of the difference of means and its degrees of freedom."""
    if paired:
        if len(a) < 2:
            return math.nan, 0
        return float((b - a).std(ddof=1) / math.sqrt(len(a))), len(a) - 1
    df = len(a) + len(b) - 2
    if len(a) < 1 or len(b) < 1 or df < 1:
        return math.nan, 0
    pooled = (((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()) / df
    return float(math.sqrt(pooled * (1 / len(a) + 1 / len(b)))), df


def holm_adjusted(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (statsmodels' multipletests); NaN stays NaN."""
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    if finite:
        for index, value in zip(finite, multipletests([p_values[i] for i in finite], alpha, "holm")[1], strict=True):
            adjusted[index] = float(value)
    return adjusted
