"""benchmarks/sprc_probe.py's target-side statistics on a method whose answers are known."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sprc_probe.py"


def _probe_module():
    spec = importlib.util.spec_from_file_location("sprc_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


class _TwoVectorMethod:
    """Target vectors: an image's identity (one-hot) and a constant; the query is the identity."""

    def __init__(self, count: int):
        self.count = count

    def _identity(self, images: torch.Tensor) -> torch.Tensor:
        return F.one_hot(images[:, 0, 0, 0].long(), self.count + 1).float()

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        constant = F.one_hot(torch.full((len(images),), self.count), self.count + 1).float()
        return torch.stack([self._identity(images), constant], dim=1)

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return self._identity(images)

    def query_text(self, triplet) -> str:
        return triplet.caption


@pytest.mark.parametrize(("offset", "recall"), [(0, 100.0), (1, 0.0)])
def test_target_side_statistics_match_a_method_with_known_answers(offset: int, recall: float):
    """offset 0: each target is its reference (found first, except by the best pair of vectors,
    where the constant vectors tie every image); 1: the next image, which no identity vector
    matches (every score ties, and ties count against the target)."""
    count = 6
    names = [f"img{i}" for i in range(count)]
    images = {name: torch.full((3, 4, 4), i, dtype=torch.uint8) for i, name in enumerate(names)}
    triplets = [SimpleNamespace(reference=n, target=names[(i + offset) % count], caption="x")
                for i, n in enumerate(names)]
    split = SimpleNamespace(triplets=triplets,
                            images=SimpleNamespace(load=lambda ns: torch.stack([images[n] for n in ns])))
    stats = _probe_module().target_side(_TwoVectorMethod(count), split, count)
    assert stats["mean_cos_between_images"] == [0.0, 1.0]  # the identity differs between images, the constant not
    assert stats["winning_vector_share"] == [1.0, 0.0]  # ties go to the first vector
    assert stats["reference_to_target_r1_max_similarity"] == 0.0  # constant . constant = 1 for every image
    assert stats["reference_to_target_r1_mean_pooled"] == recall
    assert stats["query_to_target_r1"] == recall


def test_recall_at_counts_ties_against_the_target():
    recall_at = _probe_module()._recall_at
    scores = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert recall_at(scores, 1) == 50.0 and recall_at(scores, 2) == 100.0
