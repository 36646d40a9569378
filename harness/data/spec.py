"""What a dataset module declares about itself, so that loading, `data check` and the protocol
dispatch by table (harness.data.datasets.DATASETS) rather than by a chain of names.

    SPEC = DatasetSpec("shoes", "Shoes (Guo et al., NeurIPS 2018) ...", splits=("train", "eval"),
                       protocol="shoes", read=read_shoes_split, annotation_files=_present)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.data.triplet import CIRSplit

#: (root, split, image_size, categories) -> (the split, the problems found)
Reader = Callable[[Path, str, int, tuple[str, ...]], tuple[CIRSplit, list[str]]]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset by name: its description, splits, default evaluation protocol, reader, and which
    of its splits have annotation files under a root."""

    name: str
    description: str
    splits: tuple[str, ...]
    protocol: str
    read: Reader
    annotation_present: Callable[[Path, str], bool]

    def present_splits(self, root: Path) -> list[str]:
        """The splits whose annotation files are under ``root``."""
        return [split for split in self.splits if self.annotation_present(root, split)]
