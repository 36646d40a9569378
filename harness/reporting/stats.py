"""Statistics of a report: bootstrap confidence intervals over queries and paired tests.

    values, weights = per_query(runs, "recall_at_1")     # seed-averaged hit of each query, and its weight
    low, high = bootstrap_ci(values, weights)             # 95% percentile interval of the weighted mean
    test = paired_test(a, b, weights)                     # difference, its 95% interval, two-sided p

Queries are the unit of resampling (the benchmark's queries are a sample of the queries a
user could ask); seeds are averaged per query first, so the intervals show query sampling
only and the seed spread is reported beside them as mean ± std. The paired test flips the
sign of each query's difference at random (a permutation test of paired data: exact under the
null hypothesis that the two methods are exchangeable on every query). With FashionIQ's
category mean, a query weighs 1 / (categories x queries of its category) and resampling is
done within categories.

The seed-aware test adds the run-level component the query test leaves out: a two-level
bootstrap that draws seeds (paired: one seed index for both variants) and then queries, so
a difference that one seed's training luck produced is not called significant. Every test
reports its minimum detectable effect (MDE) at 80 % power, (z(1 - alpha/2) + z(power)) x SE,
with SE the bootstrap standard error of the difference: a difference smaller than the MDE is
one the experiment cannot resolve, whichever way it points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Samples of the bootstrap and the permutation test (a report default; seeded, so stable).
RESAMPLES = 2000
ALPHA = 0.05
#: Power at which a report states the minimum detectable effect (the conventional 80 %).
POWER = 0.8


def minimum_detectable_effect(standard_error: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a two-sided test at ``alpha`` detects with ``power``,
    given the difference's standard error (normal approximation)."""
    normal = NormalDist()
    return (normal.inv_cdf(1 - alpha / 2) + normal.inv_cdf(power)) * standard_error


def weights_for(categories: Sequence[str | None] | None, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight of each query, stratum of each query): equal weights without categories; with
    them, each category weighs the same (the FashionIQ category mean)."""
    if not categories or all(c is None for c in categories):
        return np.full(count, 1.0 / max(count, 1)), np.zeros(count, dtype=int)
    names = sorted({str(c) for c in categories})
    strata = np.array([names.index(str(c)) for c in categories])
    sizes = np.bincount(strata, minlength=len(names)).astype(float)
    return 1.0 / (len(names) * sizes[strata]), strata


def _resample(strata: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """[samples, Q] indices drawn with replacement within each stratum (its size kept)."""
    indices = np.empty((samples, len(strata)), dtype=int)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        indices[:, members] = members[rng.integers(0, len(members), size=(samples, len(members)))]
    return indices


def _bootstrap_means(values: np.ndarray, weights: np.ndarray, strata: np.ndarray | None,
                     samples: int, seed: int) -> np.ndarray:
    """Weighted means of ``values`` over ``samples`` query resamples."""
    strata = np.zeros(len(values), dtype=int) if strata is None else strata
    indices = _resample(strata, np.random.default_rng(seed), samples)
    return (values[indices] * weights[indices]).sum(axis=1)


def _interval(means: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentile interval (1 - alpha) of bootstrap means."""
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def bootstrap_ci(values: np.ndarray, weights: np.ndarray, strata: np.ndarray | None = None,
                 samples: int = RESAMPLES, seed: int = 0, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile interval (1 - alpha) of the weighted mean of ``values`` over queries."""
    if len(values) == 0:
        return float("nan"), float("nan")
    return _interval(_bootstrap_means(values, weights, strata, samples, seed), alpha)


@dataclass(frozen=True)
class PairedTest:
    """A method against the baseline on the same queries (values in the metric's unit); over
    ``seeds`` shared seeds for the seed-aware test, 1 for the test of seed-averaged values."""

    difference: float
    low: float
    high: float
    p_value: float
    queries: int
    mde: float
    seeds: int = 1

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p_value < alpha


def paired_test(a: np.ndarray, b: np.ndarray, weights: np.ndarray, strata: np.ndarray | None = None,
                samples: int = RESAMPLES, seed: int = 0, alpha: float = ALPHA) -> PairedTest:
    """Weighted mean of a - b, its bootstrap interval, and the two-sided p-value of a paired
    sign-flip permutation test ((count of |flipped| >= |observed|) + 1) / (samples + 1)."""
    if a.shape != b.shape:
        raise ValueError(f"paired values differ in shape: {a.shape} vs {b.shape}")
    difference = a - b
    observed = float((difference * weights).sum())
    means = _bootstrap_means(difference, weights, strata, samples, seed)
    low, high = _interval(means, alpha)
    rng = np.random.default_rng(seed + 1)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(samples, len(difference)))
    flipped = np.abs((signs * difference * weights).sum(axis=1))
    extreme = int((flipped >= abs(observed) - 1e-12).sum())
    mde = minimum_detectable_effect(float(means.std(ddof=1)), alpha)
    return PairedTest(observed, low, high, (extreme + 1) / (samples + 1), len(difference), mde)


def seed_aware_test(a: np.ndarray, b: np.ndarray, weights: np.ndarray, strata: np.ndarray | None = None,
                    samples: int = RESAMPLES, seed: int = 0, alpha: float = ALPHA) -> PairedTest:
    """Two-level paired bootstrap of [seeds, queries] values: each sample draws seeds with
    replacement (the same seeds for both variants), then queries within strata. p is the
    two-sided bootstrap p-value of the centred distribution, ((count of |d* - d| >= |d|) + 1)
    / (samples + 1): 1 for identical runs, small only when the difference stands out from
    both seed and query sampling."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"seed-aware values must be paired [seeds, queries] arrays: {a.shape} vs {b.shape}")
    difference = a - b
    observed = float((difference.mean(axis=0) * weights).sum())
    means = _two_level_means(difference, weights, strata, samples, np.random.default_rng(seed))
    queries = difference.shape[1]
    extreme = int((np.abs(means - observed) >= abs(observed) - 1e-12).sum())
    mde = minimum_detectable_effect(float(means.std(ddof=1)), alpha)
    return PairedTest(observed, *_interval(means, alpha), (extreme + 1) / (samples + 1), queries, mde,
                      difference.shape[0])


def _two_level_means(values: np.ndarray, weights: np.ndarray, strata: np.ndarray | None, samples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Weighted means of [seeds, queries] ``values`` over ``samples`` two-level resamples: seeds
    drawn with replacement, then queries within strata."""
    seeds, queries = values.shape
    drawn = rng.integers(0, seeds, size=(samples, seeds))
    seed_weights = np.stack([np.bincount(row, minlength=seeds) for row in drawn]) / seeds
    per_query = seed_weights @ values  # [samples, queries]: each sample's seed mean per query
    indices = _resample(np.zeros(queries, dtype=int) if strata is None else strata, rng, samples)
    return (np.take_along_axis(per_query, indices, axis=1) * weights[indices]).sum(axis=1)


def seed_bootstrap_ci(values: np.ndarray, weights: np.ndarray, strata: np.ndarray | None = None,
                      samples: int = RESAMPLES, seed: int = 0, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile interval of the seed-averaged weighted mean of [seeds, queries] ``values``,
    drawing seeds and then queries (a band that holds the seeds' training luck too)."""
    return _interval(_two_level_means(values, weights, strata, samples, np.random.default_rng(seed)), alpha)


def p_relation(p: float) -> str:
    """"< 0.001" or "= 0.042": a p-value after "p" in a sentence."""
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def p_text(value: float | None) -> str:
    """A p-value in a table cell: "< 0.001", "0.042", or "-" where there is none."""
    if value is None or math.isnan(value):
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected
