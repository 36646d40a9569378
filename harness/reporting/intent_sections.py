"""The report's sections on following intent (embedded benchmark v2): R@1 on the queries that
need a joint reading of caption and reference and on the rest, within the query's own group
and on held-out phrasings; the kind of each top-1 error; and the learning-free ceilings as
rows labelled "perfect perception, no learning".

Every number comes from the runs' metrics (recomputable from their rankings files) and the
learning-free R@1 the generator recorded per query (``RunResult.learning_free``). Runs
without them (version 1, other datasets) give no section and no extra rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.evaluation.intent import ERROR_KINDS, LEARNING_FREE
from harness.evaluation.protocol import title as metric_title
from harness.reporting.data import Group
from harness.reporting.tables import Cell, Table, mean_std_text

#: Columns of the intent table, in order.
INTENT_METRICS = ("recall_at_1", "recall_joint_at_1", "recall_rest_at_1", "recall_group_at_1", "group_auc",
                  "recall_held_out_at_1", "recall_seen_at_1")
LEARNING_FREE_LABEL = "perfect perception, no learning"


def learning_free(groups: Sequence[Group]) -> dict[str, dict[str, float]]:
    """The learning-free R@1 rows of the first run that has them (all runs share the queries)."""
    return next((r.learning_free for g in groups for r in g.runs if r.learning_free), {})


def learning_free_rows(groups: Sequence[Group], columns: Sequence[str], leading: int) -> list[list[Cell]]:
    """One row per learning-free scorer: its label, ``leading - 1`` empty cells, then ``columns``."""
    rows = []
    for scorer, values in learning_free(groups).items():
        row = [Cell(f"{LEARNING_FREE_LABEL}: {LEARNING_FREE.get(scorer, scorer)}"),
               *(Cell("-") for _ in range(leading - 1))]
        row += [Cell(f"{values[c]:.1f}", values[c]) if c in values else Cell("-") for c in columns]
        rows.append(row)
    return rows


def _mean_std_cell(group: Group, metric: str) -> Cell:
    return Cell(mean_std_text(group.values(metric)), (group.mean_std(metric) or (None,))[0])


def intent_table(groups: Sequence[Group]) -> Table | None:
    """R@1 on all queries, the joint-reading ones and the rest, within the group, on held-out
    and on seen phrasings; mean ± std over seeds, learning-free ceilings below."""
    if not any(g.mean_std("recall_joint_at_1") for g in groups):
        return None
    metrics = [m for m in INTENT_METRICS if any(g.mean_std(m) for g in groups)]  # runs before a metric existed
    rows = [[Cell(g.label), *(_mean_std_cell(g, m) for m in metrics)] for g in groups]
    table = Table("Following intent", ["run", *(metric_title(m) for m in metrics)], rows, name="intent",
                  csv_header=["run", *metrics],
                  caption="Embedded benchmark v2 on, metrics in %, mean ± std over seeds. Joint = the queries that "
                  "need a joint reading of caption and reference (v3: the certified ones, whose group holds a twin; "
                  "v2: those no grid point of an additive scorer solves); rest = the others. Rg@1 = the target ranked "
                  "first within the query's own image group (reference left out); AUC group = the share of the other "
                  "group members ranked below the target (50 = chance). Held-out = captions phrased with phrasings "
                  "or synonyms training never shows. The last rows read the scene graphs instead of pixels and learn "
                  "nothing.")
    table.rows += learning_free_rows(groups, metrics, 1)
    return table


def error_kinds_table(groups: Sequence[Group]) -> Table | None:
    """Share of queries whose top-1 is the target, an intent distractor, a retention
    distractor, a topped-up group member or an image outside the group."""
    if not any(g.mean_std("top1_intent") for g in groups):
        return None
    kinds = [kind for kind in ERROR_KINDS if any(g.mean_std(f"top1_{kind}") for g in groups)]
    keys = ["recall_at_1", *(f"top1_{kind}" for kind in kinds)]
    rows = [[Cell(g.label), *(_mean_std_cell(g, k) for k in keys)] for g in groups]
    table = Table("Top-1 errors by kind", ["run", "top-1 target", *(metric_title(k) for k in keys[1:])], rows,
                  name="error_kinds", csv_header=["run", *keys],
                  caption="Share of queries (%) whose top-1 image is the target or each kind of error, mean ± std over "
                  "seeds; a row sums to 100 where the protocol leaves the reference out of the ranking (as CIRR's). "
                  "Twin = the target of the query's mirror, true to every word of the caption (benchmark v3); "
                  "intent = a misreading of the caption (wrong argument, wrong subject, the family's natural "
                  "misreading); retention = the requested edit with one unrequested change; topped-up = "
                  "a random edit added where a group had too few distractors; elsewhere = outside the query's group.")
    return table
