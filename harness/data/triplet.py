"""The data model every dataset loads into: a query (``Triplet``) and a split of queries with
its gallery and images (``CIRSplit``; the images are harness.data.images' ``ImageStore``).

    split = load_dataset(config, "val")          # harness.data.datasets
    images = split.images.load([t.reference for t in split.triplets])   # uint8 [N, 3, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.data.images import ImageStore


@dataclass(frozen=True)
class Triplet:
    """One CIR query: a reference image and a relative caption; the target when known.

    ``subset`` holds the query's CIRR-style image set (reference included), empty when the
    dataset has none; ``edit_type`` is known for the embedded benchmark only. A query with
    several relative captions (FashionIQ: two) keeps them in ``captions``; ``caption`` is then
    their default joining, and a method joins them by its own convention
    (``harness.data.caption_join``). ``category`` names the query's gallery (FashionIQ);
    ``ground_truths`` lists every correct image when there are several (CIRCO; ``target`` is
    then the first)."""

    pairid: int
    reference: str
    caption: str
    target: str | None
    subset: tuple[str, ...] = ()
    edit_type: str | None = None
    captions: tuple[str, ...] = ()
    category: str | None = None
    ground_truths: tuple[str, ...] = ()
    #: CIRR's target_soft: (image, score) pairs from extra labelling (1.0 / 0.5 / 0.2 / -1.0)
    soft_targets: tuple[tuple[str, float], ...] = ()


@dataclass
class CIRSplit:
    """One split of a dataset: its queries, its gallery (candidate images) and the images."""

    dataset: str
    split: str
    root: Path
    triplets: list[Triplet]
    gallery: list[str]
    images: ImageStore
    info: dict[str, object] = field(default_factory=dict)
    #: per-category galleries (FashionIQ): a query ranks only its category's images
    galleries: dict[str, list[str]] = field(default_factory=dict)

    @property
    def has_targets(self) -> bool:
        return all(t.target is not None for t in self.triplets)
