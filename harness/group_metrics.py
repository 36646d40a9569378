"""What a ranking shows about following intent, on the embedded benchmark v2: per query, read
from its recorded certificate and image group, and the metrics and learning-free rows made
from them.

Per query (added to its rankings entry): ``needs_joint_reading``, ``held_out`` (phrasing),
``group_rank`` (the target's rank among its own group, the reference left out; ties count for
the target) and ``top1_kind`` (target, intent or retention distractor, topped-up member, or
elsewhere in the gallery). Metrics (see harness.protocol's catalogue): R@1 on the
joint-reading queries and on the rest, R@1 within the group, R@1 on held-out and on seen
phrasings, and the share of queries whose top-1 is each kind of error.

    annotate(split, triplets, rankings, group_scores)    # group_scores(row, names) -> scores
    metrics |= group_metrics(rankings)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.data.triplet import CIRSplit, Triplet
from harness.intent import cached_json
from harness.protocol import per_query_value

#: The error kinds of a top-1 image, as metric keys top1_<kind>.
ERROR_KINDS = ("intent", "retention", "topped_up", "elsewhere")
GROUP_METRICS = ("recall_joint_at_1", "recall_rest_at_1", "recall_group_at_1", "recall_held_out_at_1",
                 "recall_seen_at_1", *(f"top1_{kind}" for kind in ERROR_KINDS))
#: The learning-free scorers recorded per query by the generator (harness.data.synthetic.additive).
LEARNING_FREE = {"oracle": "oracle (scene graphs)", "best_additive": "best additive",
                 "caption_only": "caption only", "reference_only": "reference only"}


def records(split: CIRSplit) -> dict[int, dict[str, Any]] | None:
    """Version 2's per-query records of a split by pair id; None where the split has none."""
    path = Path(split.root) / f"query_edits.rc2.{split.split}.json"
    if not path.is_file():
        return None
    found = {int(e["pairid"]): e for e in cached_json(path) if isinstance(e, dict) and "group" in e}
    return found or None


def annotate(split: CIRSplit, triplets: Sequence[Triplet], rankings: list[dict[str, Any]],
             group_scores: Callable[[int, list[str]], list[float]]) -> bool:
    """Add the per-query fields to ``rankings`` (in place); False when the split has no records."""
    found = records(split)
    if found is None or not split.has_targets:
        return False
    for row, (triplet, entry) in enumerate(zip(triplets, rankings, strict=True)):
        record = found.get(triplet.pairid)
        if record is None or record.get("needs_joint_reading") is None:
            continue
        members = [name for name in record["group"] if name != triplet.reference]
        scores = group_scores(row, members)
        target_score = scores[members.index(str(triplet.target))]
        top = entry["top"][0] if entry.get("top") else None
        entry.update(needs_joint_reading=bool(record["needs_joint_reading"]), held_out=bool(record["held_out"]),
                     group_rank=sum(score > target_score for score in scores),
                     top1_kind=record["group"].get(top, "elsewhere"))  # the group names the target "target"
    return True


def rescored(split: CIRSplit, triplets: Sequence[Triplet], entries: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The group metrics of saved rankings, from their ``top`` lists and the split's records
    alone (``harness score``): a query's group rank is the count of its group members ranked
    above the target, known when the target is in ``top`` or a member is; recall_group_at_1
    is left out when some query's is not known (neither is in ``top``). {} without records."""
    found = records(split)
    if found is None or not split.has_targets:
        return {}
    fresh = []
    for triplet, entry in zip(triplets, entries, strict=True):
        record = found.get(triplet.pairid)
        if record is None or record.get("needs_joint_reading") is None:
            continue
        top = list(entry["top"])
        members = {name for name in record["group"] if name not in (triplet.reference, triplet.target)}
        position = top.index(triplet.target) if triplet.target in top else len(top)
        above = sum(name in members for name in top[:position])
        known = position < len(top) or above > 0
        fresh.append({"target_rank": position, "needs_joint_reading": bool(record["needs_joint_reading"]),
                      "held_out": bool(record["held_out"]), "group_rank": above if known else None,
                      "top1_kind": record["group"].get(top[0], "elsewhere") if top else "elsewhere"})
    metrics = group_metrics(fresh)
    if any(e["group_rank"] is None for e in fresh):
        metrics.pop("recall_group_at_1", None)
    return metrics


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def group_metrics(rankings: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The catalogue's group metrics of annotated rankings (percent); those without queries left out."""
    metrics = {key: _mean([per_query_value(e, key) for e in rankings]) for key in GROUP_METRICS}
    return {key: value for key, value in metrics.items() if value is not None}


def learning_free(split: CIRSplit, triplets: Sequence[Triplet]) -> dict[str, dict[str, float]]:
    """R@1 of each learning-free scorer on the evaluated queries, on all of them and on the
    joint-reading ones and the rest (the rows "perfect perception, no learning" of a report)."""
    found = records(split) or {}
    chosen = [found[t.pairid] for t in triplets if t.pairid in found and "learning_free_r1" in found[t.pairid]]
    if not chosen:
        return {}
    rows = {}
    for scorer in LEARNING_FREE:
        def r1(selected: list[dict[str, Any]]) -> float | None:
            return _mean([100.0 * float(r["learning_free_r1"][scorer]) for r in selected])

        row = {"recall_at_1": r1(chosen), "recall_joint_at_1": r1([r for r in chosen if r["needs_joint_reading"]]),
               "recall_rest_at_1": r1([r for r in chosen if not r["needs_joint_reading"]])}
        rows[scorer] = {key: value for key, value in row.items() if value is not None}
    return rows
