"""What a ranking shows about following intent, where the embedded benchmark records it:
intent fidelity and visual retention of the top-1 image (from scene graphs), and the metrics
of each query's recorded image group (version 2 on).

## Intent fidelity and visual retention

    scores = intent_scores(split, [(triplet, top1_name), ...])   # None off the embedded benchmark
    scores[0]  # {"intent_fidelity": 1.0, "visual_retention": 0.5}

The seed paper argues that early fusion and textual inversion fail to meet two requirements
together: follow the user's intent and keep the reference's visual content. On the embedded
benchmark both can be read off the scene graphs of the top-1 image:

- *intent fidelity*: the share of the query's requested edits that the retrieved image
  shows. An edit is shown when the object it produces (colour, shape, size and cell, as the
  edit leaves it) is in the image; a removal is shown when the removed object's (colour,
  shape) is absent.
- *visual retention*: the share of the reference's objects no edit touches that the
  retrieved image keeps unchanged (same colour, shape, size and cell). A reference whose
  every object is edited has none to keep and is left out of the mean.

The target scores 1 on both; the reference itself keeps everything and shows no edit.
These are the harness's own measures (no CIR paper reports them).

## The query groups (benchmark v2 on)

Per query, read from its recorded certificate and image group, and the metrics and
learning-free rows made from them. Per query (added to its rankings entry):
``needs_joint_reading``, ``held_out`` (phrasing), ``group_rank`` (the target's rank among its own
group, the reference left out; ties count for the target), ``group_auc`` (the share of the other
members ranked below the target: 1 above all, 0 below all; sensitive where R@1 sits at the floor)
and ``top1_kind`` (target, intent or
retention distractor, topped-up member, or elsewhere in the gallery). Metrics (see
harness.evaluation.protocol's catalogue): R@1 on the joint-reading queries and on the rest, R@1
within the group, R@1 on held-out and on seen phrasings, and the share of queries whose top-1 is
each kind of error.

    annotate(split, triplets, rankings, group_scores)    # group_scores(row, names) -> scores
    metrics |= group_metrics(rankings)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from harness.core.files import read_json
from harness.data.synthetic.scene import (
    Scene,
    apply_edits,
    edit_from_json,
    edited_identity,
    scene_from_json,
)
from harness.data.triplet import CIRSplit, Triplet
from harness.evaluation.protocol import per_query_value


def intent_scores(split: CIRSplit, retrieved: list[tuple[Triplet, str | None]]) -> list[dict[str, float | None]] | None:
    """Per query: intent fidelity and visual retention of its retrieved image (None: no image
    retrieved). None for the whole split when it has no scene graphs (a real dataset)."""
    graphs_file = Path(split.root) / "scene_graphs.json"
    edits_file = Path(split.root) / f"query_edits.rc2.{split.split}.json"
    if not graphs_file.is_file() or not edits_file.is_file():
        return None
    graphs = cached_json(graphs_file)
    edits = {entry["pairid"]: entry["edits"] for entry in cached_json(edits_file)}
    scores = []
    for triplet, name in retrieved:
        if name is None or triplet.pairid not in edits or name not in graphs or triplet.reference not in graphs:
            scores.append({"intent_fidelity": None, "visual_retention": None})
            continue
        reference = scene_from_json(graphs[triplet.reference])
        scores.append(score_retrieved(reference, edits[triplet.pairid], scene_from_json(graphs[name])))
    return scores


def cached_json(path: Path) -> Any:
    """``path`` parsed once per process and file version (see ``_read_json``)."""
    return _read_json(Path(path), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_json(path: Path, mtime_ns: int) -> Any:
    """A JSON file parsed once per process and version (every run and pruning evaluation of a
    split reads the same scene graphs); callers must not modify what it returns."""
    return read_json(path, fix="generate the benchmark again (harness data synthetic) or restore the file")


def score_retrieved(reference: Scene, edits_json: list[dict], retrieved: Scene) -> dict[str, float | None]:
    """Intent fidelity and visual retention of ``retrieved`` for one query (see the module)."""
    edits = [edit_from_json(e) for e in edits_json]
    expected = apply_edits(reference, edits)
    present = set(retrieved)
    identities = {obj.identity for obj in retrieved}
    shown = 0
    for edit in edits:
        if edit.type == "remove":
            shown += edit.subject not in identities
        else:
            produced = next(obj for obj in expected if obj.identity == edited_identity(edit))
            shown += produced in present
    touched = {edit.subject for edit in edits if edit.subject is not None}
    touched |= {edit.new for edit in edits if edit.type == "swap"}  # a swap moves its partner too
    kept = [obj for obj in reference if obj.identity not in touched]
    return {"intent_fidelity": shown / len(edits),
            "visual_retention": sum(obj in present for obj in kept) / len(kept) if kept else None}


#: The error kinds of a top-1 image, as metric keys top1_<kind>.
ERROR_KINDS = ("twin", "intent", "retention", "topped_up", "elsewhere")  # a twin: benchmark v3 on
GROUP_METRICS = ("recall_joint_at_1", "recall_rest_at_1", "recall_group_at_1", "group_auc", "recall_held_out_at_1",
                 "recall_seen_at_1", *(f"top1_{kind}" for kind in ERROR_KINDS))
#: The learning-free scorers recorded per query by the generator (harness.data.synthetic.additive).
LEARNING_FREE = {"oracle": "oracle (scene graphs)", "best_additive": "additive grid",
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
        rank = sum(score > target_score for score in scores)
        entry.update(needs_joint_reading=bool(record["needs_joint_reading"]), held_out=bool(record["held_out"]),
                     group_rank=rank, group_auc=_auc(rank, len(members) - 1),
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
        exact = position < len(top) or above == len(members)  # the target's rank among its group, exactly
        fresh.append({"target_rank": position, "needs_joint_reading": bool(record["needs_joint_reading"]),
                      "held_out": bool(record["held_out"]), "group_rank": above if known else None,
                      "group_auc": _auc(above, len(members)) if exact else None,
                      "top1_kind": record["group"].get(top[0], "elsewhere") if top else "elsewhere"})
    metrics = group_metrics(fresh)
    for key, field in (("recall_group_at_1", "group_rank"), ("group_auc", "group_auc")):
        if any(e[field] is None for e in fresh):
            metrics.pop(key, None)
    return metrics


def _auc(rank: int, others: int) -> float:
    """The target's AUC against the other members of its group: the share ranked below it."""
    return 1.0 - rank / others if others else 1.0


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
