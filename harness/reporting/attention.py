"""Figure 5 made falsifiable: each prompt's attention share on the visual and the caption tokens
against what uniform causal attention over the same tokens gives, with an interval.

    table = attention_table(groups)   # None when no run recorded per-query attention shares

A softmax makes every share non-zero, so "the prompt attends to the caption" is only a finding
where the share stands above the uniform reference; the difference's interval is a t-interval
over the seeds' means where there are two or more seeds (seed luck included), else a bootstrap
over the diagnosed queries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

from harness.reporting.data import Group
from harness.reporting.stats import ALPHA, bootstrap_ci
from harness.reporting.tables import Cell, Table

SEGMENTS = {"soft_prompt": "soft prompt", "task": "task prompt", "embedding": "[EMB]"}
PARTS = {"image": "visual", "caption": "caption"}


def attention_rows(group: Group) -> list[tuple[str, str, float, float, float, float, float]]:
    """(segment, part, observed, uniform, difference, low, high) of one run's diagnosed queries."""
    runs = [r for r in group.runs if "attention_share_per_query" in r.method_statistics]
    rows = []
    for segment in SEGMENTS:
        for part in PARTS:
            pairs = [(np.asarray(r.method_statistics["attention_share_per_query"].get(segment, {}).get(part, [])),
                      np.asarray(r.method_statistics["attention_share_uniform_per_query"].get(segment, {}).get(part,
                                                                                                               [])))
                     for r in runs]
            pairs = [(o, u) for o, u in pairs if len(o) and len(o) == len(u)]
            if pairs:
                rows.append((segment, part, *_difference(pairs)))
    return rows


def _difference(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, float, float, float]:
    """(observed, uniform, observed − uniform, interval) over seeds (t) or, with one, over queries."""
    observed = float(np.mean([o.mean() for o, _ in pairs]))
    uniform = float(np.mean([u.mean() for _, u in pairs]))
    per_seed = np.array([(o - u).mean() for o, u in pairs])
    if len(pairs) >= 2:
        spread = per_seed.std(ddof=1) / np.sqrt(len(per_seed))
        low, high = scipy_stats.t.interval(1 - ALPHA, len(per_seed) - 1, loc=per_seed.mean(), scale=spread)
    else:
        values = pairs[0][0] - pairs[0][1]
        low, high = bootstrap_ci(values, np.ones(len(values)))
    return observed, uniform, float(per_seed.mean()), float(low), float(high)


def attention_table(groups: Sequence[Group]) -> Table | None:
    """Figure 5's shares beside uniform attention, with the difference's interval and a reading."""
    rows, csv_rows = [], []
    for group in groups:
        for segment, part, observed, uniform, difference, low, high in attention_rows(group):
            reading = ("above uniform" if low > 0 else "below uniform" if high < 0 else "not resolved")
            if observed == 0.0 and uniform == 0.0:
                reading = "precedes both (causal attention)"
            rows.append([Cell(group.label), Cell(SEGMENTS[segment]), Cell(PARTS[part]), Cell(f"{observed:.3f}"),
                         Cell(f"{uniform:.3f}"), Cell(f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"), Cell(reading)])
            csv_rows.append([group.label, segment, part, observed, uniform, difference, low, high, reading])
    if not rows:
        return None
    return Table("Figure 5 against uniform attention", ["run", "from", "to", "share", "uniform", "share − uniform "
                 "[95% CI]", "reading"], rows, name="attention", csv_header=["run", "segment", "part", "share",
                 "uniform", "difference", "low", "high", "reading"], csv_rows=csv_rows,
                 caption="Attention weight a prompt's tokens put on the visual and on the caption tokens (summed over "
                 "them, averaged over heads, layers, prompt tokens and the diagnosed queries), against uniform causal "
                 "attention over the same tokens: a softmax makes every share non-zero, so only the difference says "
                 "where a prompt looks. Interval: t over the seeds' means with two or more seeds (seed luck "
                 "included), else a bootstrap over queries; exploratory, not adjusted across rows.")
