"""The scene-graph oracle: applies each query's edits to the reference's scene graph and
scores the gallery by exact scene-graph match. It reaches R@1 = 100 exactly when the
benchmark is consistent (every target is the unique image showing the edited scene), and
is the ceiling every method is measured against.

    scores = oracle_scores(split)     # [queries, gallery], 1.0 where the scene graph matches
"""

from __future__ import annotations

import json

import torch

from harness.core.errors import HarnessError
from harness.data.synthetic.scene import (
    apply_edits,
    edit_from_json,
    scene_from_json,
    scene_key,
)
from harness.data.triplet import CIRSplit


def oracle_scores(split: CIRSplit) -> torch.Tensor:
    """Scores of the oracle on a split of the embedded benchmark."""
    graphs_file = split.root / "scene_graphs.json"
    edits_file = split.root / f"query_edits.rc2.{split.split}.json"
    if not graphs_file.is_file() or not edits_file.is_file():
        raise HarnessError("the oracle needs scene graphs and query edits", file=split.root,
                           fix="use a dataset written by `harness data synthetic`")
    graphs = json.loads(graphs_file.read_text())
    entries = json.loads(edits_file.read_text())
    edits = {entry["pairid"]: [edit_from_json(e) for e in entry["edits"]] for entry in entries}
    gallery_keys: dict[str, list[int]] = {}
    for column, name in enumerate(split.gallery):
        gallery_keys.setdefault(scene_key(scene_from_json(graphs[name])), []).append(column)
    scores = torch.zeros(len(split.triplets), len(split.gallery))
    for row, triplet in enumerate(split.triplets):
        expected = apply_edits(scene_from_json(graphs[triplet.reference]), edits[triplet.pairid])
        for column in gallery_keys.get(scene_key(expected), []):
            scores[row, column] = 1.0
    return scores
