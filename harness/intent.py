"""Intent fidelity and visual retention of a retrieved image, where scene graphs are known.

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
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from harness.data.synthetic.scene import (
    Scene,
    apply_edits,
    edit_from_json,
    edited_identity,
    scene_from_json,
)
from harness.data.triplet import CIRSplit, Triplet
from harness.files import read_json


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
