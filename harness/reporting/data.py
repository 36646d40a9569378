"""What a report reads: the finished runs of an experiment, grouped by grid point, with
per-query values recomputed from each run's rankings file (never from a model).

    groups = load_groups(results, runs_dir)
    groups[0].label, groups[0].mean_std("recall_at_1"), groups[0].per_query("recall_at_1")
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.evaluation.protocol import per_query_value
from harness.evaluation.results import RunResult, read_rankings, row_labels
from harness.reporting.stats import weights_for


def config_value(config: dict[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` of a run's config ("method.params.pool_size"), or None."""
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


@dataclass
class PerQuery:
    """Seed-averaged values of one metric per query, with weights and strata (see stats),
    and the [seeds, queries] values they average, for the seed-aware test."""

    pairids: list[Any]
    values: np.ndarray
    weights: np.ndarray
    strata: np.ndarray
    edit_types: list[str | None]
    seeds: list[int]
    per_seed: np.ndarray

    def mean(self) -> float:
        return float((self.values * self.weights).sum())

    def for_seeds(self, seeds: Sequence[int]) -> np.ndarray:
        """The [len(seeds), queries] rows of the given seeds, in their order."""
        return self.per_seed[[self.seeds.index(s) for s in seeds]]


@dataclass
class Group:
    """One grid point (label) and its runs, one per seed."""

    label: str
    runs: list[RunResult]
    runs_dir: Path | None = None
    _rankings: dict[str, list[dict[str, Any]]] = field(default_factory=dict, repr=False)
    _per_query: dict[str, PerQuery | None] = field(default_factory=dict, repr=False)

    @property
    def method(self) -> str:
        return self.runs[0].method

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    def values(self, metric: str) -> list[float]:
        return [r.metrics[metric] for r in self.runs if metric in r.metrics]

    def mean_std(self, metric: str) -> tuple[float, float] | None:
        values = self.values(metric)
        if not values:
            return None
        return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    def timing(self, key: str) -> float | None:
        values = [r.timings[key] for r in self.runs if key in r.timings]
        return statistics.mean(values) if values else None

    def rankings(self, run: RunResult) -> list[dict[str, Any]] | None:
        if run.run_id not in self._rankings:
            kept = self.runs_dir is not None and run.rankings_file
            path = self.runs_dir / run.run_id / run.rankings_file if kept else None
            self._rankings[run.run_id] = read_rankings(path) if path is not None and path.is_file() else []
        return self._rankings[run.run_id] or None

    def per_query(self, metric: str) -> PerQuery | None:
        """Seed-averaged per-query values of ``metric``, or None when a run lacks rankings, the
        runs' queries differ, or the per-query mean does not reproduce the reported metric
        (e.g. soft recall, scored from labels the rankings do not hold)."""
        return self._per_query.get(metric) if metric in self._per_query else self._compute(metric)

    def _compute(self, metric: str) -> PerQuery | None:
        columns, reference = [], None
        for run in self.runs:
            entries = self.rankings(run)
            if entries is None:
                return self._keep(metric, None)
            ids = [e["pairid"] for e in entries]
            if reference is None:
                reference = entries
            elif ids != [e["pairid"] for e in reference]:
                return self._keep(metric, None)
            column = [per_query_value(e, metric) for e in entries]
            if all(v is None for v in column) or metric not in run.metrics:
                return self._keep(metric, None)
            columns.append(column)
            valid = [(v, e.get("category")) for v, e in zip(column, entries) if v is not None]
            weighted = run.protocol.averaging == "category_mean"
            weights, _ = weights_for([c for _, c in valid] if weighted else None, len(valid))
            if not math.isclose(float(np.dot([v for v, _ in valid], weights)), run.metrics[metric], abs_tol=1e-3):
                return self._keep(metric, None)
        assert reference is not None
        keep = [i for i in range(len(reference)) if all(column[i] is not None for column in columns)]
        per_seed = np.array([[column[i] for i in keep] for column in columns], dtype=float)
        weighted = self.runs[0].protocol.averaging == "category_mean"
        categories = [reference[i].get("category") for i in keep]
        weights, strata = weights_for(categories if weighted else None, len(keep))
        return self._keep(metric, PerQuery([reference[i]["pairid"] for i in keep], per_seed.mean(axis=0), weights,
                                           strata, [reference[i].get("edit_type") for i in keep],
                                           [r.seed for r in self.runs], per_seed))

    def _keep(self, metric: str, value: PerQuery | None) -> PerQuery | None:
        self._per_query[metric] = value
        return value


def load_groups(results: Sequence[RunResult], runs_dir: Path | None) -> list[Group]:
    """Runs grouped by grid point, in the order the experiment lists them."""
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for result, label in zip(results, row_labels(results), strict=True):  # runs evaluated differently apart
        groups[label].append(result)
    return [Group(label, sorted(runs, key=lambda r: r.seed), runs_dir) for label, runs in groups.items()]


def chance_values(groups: Sequence[Group], metrics: Sequence[str]) -> dict[str, float]:
    """A random ranking's expected R@K (one gallery for every query) and Rs@K of ``metrics``, from
    the first run's gallery size and its rankings' subset lists; the ones that cannot be given
    are left out (issue 35: Rs@1's 20 % must not read like a working model)."""
    if not groups:
        return {}
    run = groups[0].runs[0]
    entries = groups[0].rankings(run) or []
    whole = run.protocol.gallery == "split_file"  # one gallery for every query (not FashionIQ's per category)
    candidates = run.num_gallery - (1 if run.protocol.remove_reference else 0) if whole else 0
    subsets = [len(e["subset_top"]) for e in entries if e.get("subset_top")]
    values: dict[str, float] = {}
    for metric in metrics:
        family, _, k = metric.rpartition("_at_")
        if not k.isdigit():
            continue
        if family == "recall" and candidates > 0:
            values[metric] = 100.0 * min(int(k), candidates) / candidates
        elif family == "recall_subset" and subsets:
            values[metric] = 100.0 * sum(min(int(k), n) / n for n in subsets) / len(subsets)
    return values
