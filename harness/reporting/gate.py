"""The regime gate a report prints before any comparison: can these runs test a claim about how
a caption is read at all?

- (a) perception: what each run's fusion reads of an image holds every grid cell's content
  (the evaluation's linear perception probe at least ``PERCEPTION_BAR`` % for occupancy, shape,
  colour and size), or the run reads scene graphs instead of pixels (the perfect-perception track);
- (b) caption use: each run beats ``image_only``, which never reads the caption, on the primary
  metric (paired sign-flip test over the same queries, p < 0.05); a run that does not is said so;
- (c) range: the primary metric of every run lies between ``FLOOR`` and ``CEILING`` % (a run at
  the floor or the ceiling cannot show a difference in how it reads).

A claim whose gate fails is not testable here ("not testable here: gate (x) failed"), never
"not reproduced". A gate that cannot be checked (no probe recorded, no image_only run) says so.

    checks = regime_gate(groups, "recall_at_1")    # [Check("a", "perception", False, "..."), ...]
    lines = gate_lines(checks)
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from harness.evaluation.protocol import title
from harness.reporting.data import Group, config_value
from harness.reporting.stats import ALPHA, p_relation, paired_test

PERCEPTION_BAR, FLOOR, CEILING = 95.0, 15.0, 85.0
READOUTS = ("cell", "shape", "colour", "size")
CAPTION_BLIND = "image_only"


@dataclass(frozen=True)
class Check:
    """One gate: its letter, name, whether it passed (None: it could not be checked) and why."""

    letter: str
    name: str
    passed: bool | None
    detail: str


def _perception(group: Group) -> list[float] | None:
    """The run's mean probe accuracy per read-out over its seeds, or None without a probe."""
    probes = [r.method_statistics.get("perception") for r in group.runs]
    probes = [p for p in probes if isinstance(p, dict) and all(name in p for name in READOUTS)]
    return [statistics.fmean(float(p[name]) for p in probes) for name in READOUTS] if probes else None


def perception_check(groups: Sequence[Group]) -> Check:
    """Gate (a): every run sees what the scenes hold, or reads scene graphs."""
    failing, unknown = [], []
    for group in groups:
        if config_value(group.runs[0].config, "method.params.backbone.vision") == "scene_graph":
            continue
        probe = _perception(group)
        if probe is None:
            unknown.append(group.label)
        elif min(probe) < PERCEPTION_BAR:
            failing.append(f"{group.label} {' / '.join(f'{v:.0f}' for v in probe)}")
    if failing:
        return Check("a", "perception", False, f"probe below {PERCEPTION_BAR:.0f} % (occupied / shape / colour / "
                     f"size): {'; '.join(failing)}")
    if unknown:
        return Check("a", "perception", None, f"no perception probe recorded for {', '.join(unknown)}")
    return Check("a", "perception", True, f"every run's probe at least {PERCEPTION_BAR:.0f} % per read-out")


def caption_check(groups: Sequence[Group], metric: str) -> Check:
    """Gate (b): every run that reads the caption beats image_only on ``metric``."""
    blind = next((g for g in groups if g.method == CAPTION_BLIND), None)
    if blind is None:
        return Check("b", "caption use", None, f"no {CAPTION_BLIND} run in this experiment to compare with")
    reference = blind.per_query(metric)
    failing, unknown = [], []
    for group in (g for g in groups if g is not blind):
        values = group.per_query(metric)
        if values is None or reference is None or values.pairids != reference.pairids:
            unknown.append(group.label)
            continue
        test = paired_test(values.values, reference.values, values.weights, values.strata)
        if not (test.difference > 0 and test.p_value < ALPHA):
            failing.append(f"{group.label} {test.difference:+.1f} (p {p_relation(test.p_value)})")
    if failing:
        return Check("b", "caption use", False, f"not above {CAPTION_BLIND} on {title(metric)}: {'; '.join(failing)}")
    if unknown:
        return Check("b", "caption use", None, f"no paired values against {CAPTION_BLIND} for {', '.join(unknown)}")
    return Check("b", "caption use", True, f"every run above {CAPTION_BLIND} on {title(metric)} (p < {ALPHA})")


def range_check(groups: Sequence[Group], metric: str) -> Check:
    """Gate (c): the primary metric of every run away from the floor and the ceiling."""
    outside = []
    for group in groups:
        stats = group.mean_std(metric)
        if stats is not None and not FLOOR <= stats[0] <= CEILING:
            outside.append(f"{group.label} {stats[0]:.1f}")
    if outside:
        return Check("c", "range", False, f"{title(metric)} outside {FLOOR:.0f}-{CEILING:.0f} %: {'; '.join(outside)}")
    return Check("c", "range", True, f"{title(metric)} of every run within {FLOOR:.0f}-{CEILING:.0f} %")


def regime_gate(groups: Sequence[Group], metric: str) -> list[Check]:
    """The three gates on the report's primary metric."""
    return [perception_check(groups), caption_check(groups, metric), range_check(groups, metric)]


def gate_lines(checks: Sequence[Check]) -> list[str]:
    """The report's "Regime gate" paragraph: one line per gate and what a failure means."""
    word = {True: "passes", False: "**fails**", None: "not checked"}
    lines = [f"- ({c.letter}) {c.name}: {word[c.passed]}: {c.detail}." for c in checks]
    failed = [c.letter for c in checks if c.passed is False]
    if failed:
        lines.append(f"- A claim about how the caption is read is **not testable here: gate "
                     f"{', '.join(f'({x})' for x in failed)} failed**; the comparisons below describe these runs, "
                     "they neither reproduce nor refute it.")
    return lines
