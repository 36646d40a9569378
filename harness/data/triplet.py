"""The data model every dataset loads into: ``Triplet``, ``ImageStore`` and ``CIRSplit``.

    split = load_dataset(config, "val")          # harness.data.datasets
    images = split.images.load([t.reference for t in split.triplets])   # uint8 [N, 3, H, W]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from harness.errors import HarnessError


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


class ImageStore:
    """Maps image names to files and decodes them once into a uint8 tensor cache."""

    def __init__(self, paths: dict[str, Path], image_size: int):
        self.paths = paths
        self.image_size = image_size
        self._cache: dict[str, torch.Tensor] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.paths

    def read(self, name: str) -> torch.Tensor:
        """One image as uint8 [3, H, W], resized to ``image_size`` if needed (not cached)."""
        path = self.paths[name]
        try:
            with Image.open(path) as raw:
                image = raw.convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            raise HarnessError(f"cannot read image {name!r}: {error}", file=path,
                               fix="replace the file or remove it from the split") from None
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()

    def decode(self, name: str) -> torch.Tensor:
        """Like ``read``, decoding each image once per store."""
        cached = self._cache.get(name)
        if cached is None:
            cached = self._cache[name] = self.read(name)
        return cached

    def load(self, names: list[str]) -> torch.Tensor:
        """Images as one uint8 tensor [N, 3, H, W] in the order of ``names``."""
        if not names:
            return torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        return torch.stack([self.decode(name) for name in names])


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
