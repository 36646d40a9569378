"""The pre-registered analysis of an experiment (its ``analysis:`` section) and its verdicts.

    analysis:
      metric: recall_at_1                       # the primary endpoint (a metric of every run)
      contrasts:                                # confirmatory: b against a, Holm over the list
        - {a: "cir_lvlm(pool_size=1)", b: "cir_lvlm(pool_size=10)"}
        - {a: "N=1, 300 steps", b: "N=10, 300 steps",   # an interaction: (b − a) − (minus.b − minus.a)
           minus: {a: "N=1, 3000 steps", b: "N=10, 3000 steps"}}
        - {a: sum, b: cir_lvlm, between: [recall_joint_at_1, recall_rest_at_1]}  # method x subset: (b − a
                                                  # on the joint-reading queries) − (b − a on the rest)
        - {factor: method.params.task_prompt, a: false, b: true}   # a factorial main effect: b − a at the
                                                  # factor, averaged over every cell of the other grid keys
      trend: method.params.pool_size            # optional: the slope on the log of this setting
      margin: 1.0                               # equivalence margin in points (TOST); optional
      min_seeds: 5                              # fewer seeds per arm: computed, not confirmatory

Each contrast is tested at the seed level (harness.reporting.seed_level); its verdict is one of
"b above a" / "b below a" (Holm-adjusted p < alpha), "equivalent within ±margin" (both one-sided
tests at alpha / k, Bonferroni over the k contrasts, pass), or "inconclusive" with the interval.
A declared ``trend`` is one more confirmatory test in the Holm family: the slope of the endpoint on
the natural log of that setting over every run that sets it (each run one point), increasing,
decreasing or inconclusive.
A contrast with fewer seeds than ``min_seeds`` in an arm is "not confirmatory"; where the
regime gate fails, "not testable here". The report's other tables are exploratory.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.core.errors import HarnessError
from harness.core.settings import validate_model
from harness.evaluation.protocol import title
from harness.reporting.data import Group, config_value
from harness.reporting.gate import Check
from harness.reporting.seed_level import SeedLevelTest, holm_adjusted, seed_level_test, trend_test
from harness.reporting.stats import ALPHA, p_text
from harness.reporting.tables import Cell, Table

#: The row label of a declared trend (harness.reporting.seed_level.trend_test).
TREND = "trend"


class Pair(BaseModel):
    """Two run labels of the experiment: b against a."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: str = Field(description="the reference arm (a row label of the report)")
    b: str = Field(description="the arm compared with it")


class Contrast(Pair):
    """b against a, each a run label of the experiment (as the report's rows name them); with
    ``minus``, an interaction: (b − a) − (minus.b − minus.a), e.g. whether a pool's gain over one
    prompt grows with the training steps (the four arms must share their seeds)."""

    minus: Pair | None = Field(None, description="the pair whose difference is subtracted (an interaction)")
    between: tuple[str, str] | None = Field(
        None, description="two metrics [x, y]: the method x subset interaction (b − a on x) − (b − a on y), e.g. "
        "[recall_joint_at_1, recall_rest_at_1]: whether b's gain over a is larger on the joint-reading queries")

    @model_validator(mode="after")
    def _one_kind(self) -> Contrast:
        if self.minus is not None and self.between is not None:
            raise ValueError("a contrast takes minus (an interaction of arms) or between (of subsets), not both")
        return self

    def labels(self) -> list[str]:
        """Every run label the contrast reads."""
        return [self.a, self.b, *([self.minus.a, self.minus.b] if self.minus else [])]

    def sides(self) -> tuple[str, str]:
        """(b's text, a's text) as the table and the verdict name them."""
        if self.between is not None:
            x, y = self.between
            return f"({self.b} − {self.a}) on {title(x)}", f"({self.b} − {self.a}) on {title(y)}"
        if self.minus is None:
            return self.b, self.a
        return f"({self.b} − {self.a})", f"({self.minus.b} − {self.minus.a})"


class MainEffect(BaseModel):
    """A factorial grid's main effect: ``factor`` at b against a, averaged over every combination
    of the other grid keys (each seed one value: the mean of its paired differences over those
    cells), e.g. the task prompt's effect over pool / universal / no soft prompt (issue 35: a
    factorial grid tested by its main effects, not cell by cell)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    factor: str = Field(description="the config path the grid varies, e.g. method.params.task_prompt")
    a: Any = Field(description="the reference level of the factor")
    b: Any = Field(description="the level compared with it")

    def labels(self) -> list[str]:
        return []  # its arms are found by the factor's levels (``main_effect_cells``), not by label

    def sides(self) -> tuple[str, str]:
        leaf = self.factor.split(".")[-1]
        return f"{leaf}={_level(self.b)} (main effect)", f"{leaf}={_level(self.a)}"


def same_level(value: Any, wanted: Any) -> bool:
    """Whether a run's setting is the level named (true is not 1, as YAML and JSON keep them apart)."""
    return value == wanted and isinstance(value, bool) == isinstance(wanted, bool)


def _level(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (bool, type(None))) else str(value)


class AnalysisConfig(BaseModel):
    """An experiment's pre-registered analysis (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field("recall_at_1", description="the primary endpoint: a metric every run records")
    contrasts: list[Contrast | MainEffect] = Field(min_length=1, description="the confirmatory contrasts (Holm over "
                                                  "them): pairs of run labels, interactions, factorial main effects")
    trend: str | None = Field(None, description="a config path (e.g. method.params.pool_size): also test the slope of "
                              "the endpoint on its natural log over the runs that set it (issue 35: a trend over N or "
                              "L, not pairwise tests alone)")
    margin: float | None = Field(None, gt=0, description="equivalence margin in metric points (TOST); none: no "
                                 "equivalence claim can be made")
    min_seeds: int = Field(5, ge=2, description="seeds per arm a confirmatory contrast needs (issue 35)")


def read_analysis(raw: object, file: str) -> AnalysisConfig | None:
    """The ``analysis`` section of an experiment manifest, validated; None when absent."""
    return None if raw is None else validate_model(AnalysisConfig, raw, file=file, prefix="analysis")


@dataclass(frozen=True)
class Verdict:
    """One confirmatory contrast: its test, Holm-adjusted p and the verdict's words."""

    contrast: Contrast | MainEffect
    test: SeedLevelTest
    p_holm: float
    words: str
    confirmatory: bool = False  # the gate passed, enough seeds, and the test decided (a difference or equivalence)


def verdicts(groups: Sequence[Group], analysis: AnalysisConfig, gate: Sequence[Check]) -> list[Verdict]:
    """Test each declared contrast on the runs and word its verdict."""
    by_label = {g.label: g for g in groups}
    missing = [label for c in analysis.contrasts for label in c.labels() if label not in by_label]
    if missing:
        raise HarnessError(f"analysis contrast names {missing[0]!r}, not a run of this experiment",
                           field="analysis.contrasts", fix=f"use one of: {', '.join(by_label)}")
    k = len(analysis.contrasts) + (1 if analysis.trend else 0)
    contrasts: list[Contrast | MainEffect] = list(analysis.contrasts)
    tests = [seed_level_test(*(_main_effect_arms(groups, c, analysis) if isinstance(c, MainEffect)
                               else _arms(by_label, c, analysis)), k, analysis.margin) for c in contrasts]
    if analysis.trend:
        contrasts.append(Contrast(a=TREND, b=f"log {analysis.trend.split('.')[-1]}"))
        tests.append(_trend(groups, analysis, k))
    adjusted = holm_adjusted([t.p for t in tests])
    failed = [c.letter for c in gate if c.passed is False]
    return [Verdict(c, t, p, _words(c, t, p, analysis, k, failed), _confirmatory(t, p, analysis, k, failed))
            for c, t, p in zip(contrasts, tests, adjusted, strict=True)]


def _confirmatory(test: SeedLevelTest, p_holm: float, analysis: AnalysisConfig, k: int, failed: list[str]) -> bool:
    """Whether a verdict is one the report may emphasise: gate passed, enough seeds per arm, and
    a difference (Holm) or an equivalence (TOST at alpha / k) established."""
    decided = p_holm < ALPHA or (test.tost_p is not None and test.tost_p < ALPHA / k)
    return not failed and not math.isnan(p_holm) and min(test.seeds) >= analysis.min_seeds and decided


def _arms(by_label: dict[str, Group], contrast: Contrast, analysis: AnalysisConfig) -> tuple:
    """(a's per-seed values, b's, paired) of a contrast, seeds in order."""
    if contrast.minus is not None:
        return _interaction_arms(by_label, contrast, analysis)
    if contrast.between is not None:
        return _subset_arms(by_label, contrast)
    a, b = by_label[contrast.a], by_label[contrast.b]
    a_values, b_values = _per_seed(a, analysis.metric), _per_seed(b, analysis.metric)
    return ([a_values[s] for s in sorted(a_values)], [b_values[s] for s in sorted(b_values)],
            sorted(a.seeds) == sorted(b.seeds))


def _interaction_arms(by_label: dict[str, Group], contrast: Contrast, analysis: AnalysisConfig) -> tuple:
    """The interaction (b − a) − (minus.b − minus.a) of four arms on the endpoint."""
    values = [_per_seed(by_label[label], analysis.metric) for label in contrast.labels()]
    return _difference_of_differences(values, f"the interaction's four arms ({', '.join(contrast.labels())})")


def _subset_arms(by_label: dict[str, Group], contrast: Contrast) -> tuple:
    """The method x subset interaction (b − a on metric x) − (b − a on metric y)."""
    x, y = contrast.between  # type: ignore[misc]
    a, b = by_label[contrast.a], by_label[contrast.b]
    values = [_per_seed(a, x), _per_seed(b, x), _per_seed(a, y), _per_seed(b, y)]
    return _difference_of_differences(values, f"{contrast.a} and {contrast.b}")


def _difference_of_differences(values: list[dict[int, float]], arms: str) -> tuple:
    """Per seed, (a + minus_b, b + minus_a) of per-seed values [a, b, minus_a, minus_b]: their
    paired difference is (b − a) − (minus_b − minus_a), so the paired t-test, its interval and
    TOST test the interaction itself."""
    seeds = sorted(values[0])
    if any(sorted(v) != seeds for v in values):
        raise HarnessError(f"{arms} ran on different seeds", field="analysis.contrasts",
                           fix="run every arm of the contrast on the same seeds")
    a, b, minus_a, minus_b = values
    return [a[s] + minus_b[s] for s in seeds], [b[s] + minus_a[s] for s in seeds], True


def main_effect_cells(groups: Sequence[Group], effect: MainEffect) -> list[tuple[Group, Group]]:
    """(a's group, b's group) of each combination of the other grid keys where both levels ran."""
    cells: dict[str, dict[str, Group]] = {}
    for group in groups:
        config = group.runs[0].config
        level = config_value(config, effect.factor)
        for side, wanted in (("a", effect.a), ("b", effect.b)):
            if same_level(level, wanted):
                cells.setdefault(_other_settings(config, effect.factor), {})[side] = group
    pairs = [(cell["a"], cell["b"]) for cell in cells.values() if len(cell) == 2]
    if not pairs:
        raise HarnessError(f"no combination of the other settings ran {effect.factor} at both {_level(effect.a)} and "
                           f"{_level(effect.b)}", field="analysis.contrasts",
                           fix="name the factor's path and two levels the grid runs")
    return pairs


def _other_settings(config: dict[str, Any], factor: str) -> str:
    """The run's settings but the factor and the seed, as one comparable text."""
    rest = copy.deepcopy(config)
    *parents, last = factor.split(".")
    node = rest
    for key in parents:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
        node.pop(last, None)
    rest.pop("seed", None)
    return json.dumps(rest, sort_keys=True, default=str)


def _main_effect_arms(groups: Sequence[Group], effect: MainEffect, analysis: AnalysisConfig) -> tuple:
    """Per seed, (mean of a's cells, mean of b's cells): their paired difference is the seed's
    mean difference over the cells, so the paired t-test, its interval and TOST test the main effect."""
    pairs = main_effect_cells(groups, effect)
    values = [(_per_seed(a, analysis.metric), _per_seed(b, analysis.metric)) for a, b in pairs]
    seeds = sorted(values[0][0])
    if any(sorted(a) != seeds or sorted(b) != seeds for a, b in values):
        raise HarnessError(f"the cells of the main effect of {effect.factor} ran on different seeds",
                           field="analysis.contrasts", fix="run every cell of the grid on the same seeds")
    return ([statistics.fmean(a[s] for a, _ in values) for s in seeds],
            [statistics.fmean(b[s] for _, b in values) for s in seeds], True)


def _trend(groups: Sequence[Group], analysis: AnalysisConfig, comparisons: int) -> SeedLevelTest:
    """The slope of the endpoint on log(setting) over every run that sets it to a positive number."""
    points, seeds = [], []
    for group in groups:
        value = config_value(group.runs[0].config, str(analysis.trend))
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            per_seed = _per_seed(group, analysis.metric)
            points += [(math.log(value), v) for v in per_seed.values()]
            seeds.append(len(per_seed))
    if not seeds:
        raise HarnessError(f"no run sets {analysis.trend} to a positive number", field="analysis.trend",
                           fix="name the grid's numeric setting, e.g. method.params.pool_size")
    return trend_test([x for x, _ in points], [y for _, y in points], min(seeds), comparisons)


def _per_seed(group: Group, metric: str) -> dict[int, float]:
    values = {r.seed: r.metrics.get(metric) for r in group.runs}
    if any(v is None for v in values.values()):
        raise HarnessError(f"run {group.label} records no {metric!r}", field="analysis.metric",
                           fix="name a metric every run records (see a result.json's metrics)")
    return {seed: float(v) for seed, v in values.items()}  # type: ignore[arg-type]


def _words(contrast: Contrast | MainEffect, test: SeedLevelTest, p_holm: float, analysis: AnalysisConfig, k: int,
           failed: list[str]) -> str:
    """The verdict; where the gate fails, "not testable here", and what the test alone would say."""
    interval = f"{test.difference:+.2f} [{test.low:+.2f}, {test.high:+.2f}]"
    if contrast.a == TREND:
        interval = f"slope {interval} per unit of {contrast.b}"
    if math.isnan(p_holm):
        verdict = f"not tested: an arm has too few seeds to estimate its variance (b − a = {test.difference:+.2f})"
    elif p_holm < ALPHA and contrast.a == TREND:
        verdict = f"{'increasing' if test.difference > 0 else 'decreasing'} with {contrast.b}: {interval}"
    elif p_holm < ALPHA:
        b_text, a_text = contrast.sides()
        verdict = f"{b_text} {'above' if test.difference > 0 else 'below'} {a_text}: {interval}"
    elif test.tost_p is not None and test.tost_p < ALPHA / k:
        verdict = f"equivalent within ±{analysis.margin:g}: {interval}"
    else:
        verdict = f"inconclusive: {interval}, MDE {test.mde:.2f}"
    if not math.isnan(p_holm) and min(test.seeds) < analysis.min_seeds:
        verdict = f"not confirmatory ({min(test.seeds)} seeds per arm, fewer than {analysis.min_seeds}): {verdict}"
    if failed:
        return f"not testable here: gate ({', '.join(failed)}) failed; the test alone: {verdict}"
    return verdict


def analysis_table(found: Sequence[Verdict], analysis: AnalysisConfig) -> Table:
    """The pre-registered contrasts, one row each."""
    rows, csv_rows = [], []
    for v in found:
        t = v.test
        numbers = [t.difference, t.low, t.high, t.p, v.p_holm, t.mde, t.tost_p]
        b_text, a_text = v.contrast.sides()
        rows.append([Cell(b_text), Cell(a_text), Cell(f"{t.difference:+.2f}", t.difference),
                     Cell(f"[{t.low:+.2f}, {t.high:+.2f}]"), Cell(p_text(t.p)), Cell(p_text(v.p_holm)),
                     Cell(f"{t.mde:.2f}"), Cell(p_text(t.tost_p)), Cell(f"{t.seeds[0]} / {t.seeds[1]}"),
                     Cell(v.words, mark="bold" if v.confirmatory else "")])
        csv_rows.append([b_text, a_text, *numbers, t.seeds[0], t.seeds[1], t.paired, v.words,
                         analysis.metric])
    margin = f"±{analysis.margin:g} points" if analysis.margin is not None else "none declared"
    caption = (f"Pre-registered in the experiment file: endpoint {title(analysis.metric)}; {len(found)} confirmatory "
               f"contrast(s), Holm over them; seeds are the unit (a t-test on per-seed values: paired where the arms "
               f"share their seeds); 95 % interval of b − a; MDE at 80 % power after Holm (alpha / k); equivalence "
               f"margin {margin} (two one-sided tests at alpha / k); at least {analysis.min_seeds} seeds per arm for "
               "a confirmatory verdict, which alone is in bold (a gate failed, too few seeds or an undecided test: "
               "plain). Every other table of this report is exploratory: its p-values are not adjusted across tables "
               "and none of its cells is emphasised.")
    return Table("Pre-registered analysis", ["b", "a", "b − a", "95% CI", "p", "p (Holm)", "MDE", "TOST p", "seeds",
                                             "verdict"], rows, caption, name="preregistered",
                 csv_header=["b", "a", "difference", "low", "high", "p", "p_holm", "mde", "tost_p", "seeds_a",
                             "seeds_b", "paired", "verdict", "metric"], csv_rows=csv_rows)
