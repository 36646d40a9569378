"""Plain Markdown tables of results (mean and std over seeds per grid point)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from harness.results import RunResult

#: (metric key, column title) shown in the results table, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("recall_at_1", "R@1"),
    ("recall_at_5", "R@5"),
    ("recall_at_10", "R@10"),
    ("recall_at_25", "R@25"),
    ("recall_at_50", "R@50"),
    ("recall_subset_at_1", "Rs@1"),
    ("recall_subset_at_2", "Rs@2"),
    ("recall_subset_at_3", "Rs@3"),
    ("avg", "Avg"),
    ("map_at_5", "mAP@5"),
    ("map_at_10", "mAP@10"),
    ("map_at_25", "mAP@25"),
    ("map_at_50", "mAP@50"),
)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def results_table(results: Sequence[RunResult]) -> str:
    """One row per grid point (label), metrics as mean ± std over its seeds."""
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for result in results:
        groups[result.label].append(result)
    columns = [(key, title) for key, title in COLUMNS if any(key in r.metrics for r in results)]
    header = ["run", "seeds", *(title for _, title in columns), "params (trainable)", "train s", "ms/query"]
    rows = []
    for label, group in groups.items():
        rows.append([
            label,
            ",".join(str(r.seed) for r in group),
            *(_cell([r.metrics[key] for r in group if key in r.metrics]) for key, _ in columns),
            f"{group[0].parameters['total'] / 1e6:.2f}M ({group[0].parameters['trainable'] / 1e6:.2f}M)",
            f"{statistics.mean(r.train.get('seconds', 0.0) for r in group):.0f}",
            f"{statistics.mean(r.timings['encode_and_score_ms_per_query'] for r in group):.2f}",
        ])
    return markdown_table(header, rows)
