"""Feed a run's frozen vision towers from the frozen-feature cache (harness.backbones.feature_table).

    record = attach_frozen_features(method, config, train_split, eval_split, device, progress)

Every frozen ``VisionTower`` inside the method (CIR-LVLM's under LoRA, SPRC's, any with
``freeze_vision``) gets the table of its outputs for the run's training images and evaluation
gallery, built once per tower checkpoint, image size and precision and shared by every run,
seed and grid point after it. Only where ``exactness`` finds the tower's outputs independent of
the batch and of train / eval mode: then a run reads the very bits it would have computed, and
its metrics and rankings are the same with the table or without it (``train.frozen_features:
off``). The record says what was done and goes into result.json's training section.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.backbones.feature_table import ensure_table, exactness, table_directory, table_key
from harness.backbones.vision import VisionTower
from harness.core.device import resolve_precision
from harness.data.triplet import CIRSplit

#: tables larger than this are not built (a 7B tower's patch tokens for a 100k-image gallery run
#: to hundreds of GB); CIR_HARNESS_FEATURES_GB changes it. An assumption: a tenth of a laptop's disk.
LIMIT_ENV, LIMIT_DEFAULT_GB = "CIR_HARNESS_FEATURES_GB", 10.0
#: images the exactness check passes through the tower
PROBE_IMAGES = 64


def frozen_towers(method: torch.nn.Module) -> list[VisionTower]:
    """The vision towers inside ``method`` with no trainable parameter."""
    return [m for m in method.modules()
            if isinstance(m, VisionTower) and not any(p.requires_grad for p in m.parameters())]


def attach_frozen_features(method, config, train_split: CIRSplit, eval_split: CIRSplit, device: torch.device,
                           progress: bool) -> dict[str, Any]:
    """Attach a feature table to each frozen tower of ``method`` (``config.train.frozen_features``
    auto); what was done, for result.json."""
    towers = frozen_towers(method)
    if config.train.frozen_features == "off" or not towers:
        return {"used": False, "why": "train.frozen_features: off" if towers else "no frozen vision tower"}
    image_sets = _image_sets(method, config, train_split, eval_split)
    precision = resolve_precision(config.train.precision, device)
    records = [_attach(tower, image_sets, train_split, device, precision, progress) for tower in towers]
    return records[0] if len(records) == 1 else {"used": any(r["used"] for r in records), "towers": records}


@dataclass(frozen=True)
class _ImageSet:
    """Images a run passes through its towers in bulk: a split's images by name, and where they
    come from (part of the table's key)."""

    split: CIRSplit
    names: list[str]
    source: str

    def load(self, count: int | None = None) -> torch.Tensor:
        return self.split.images.load(self.names[:count])


def _attach(tower: VisionTower, image_sets: list[_ImageSet], split: CIRSplit, device: torch.device,
            precision: str, progress: bool) -> dict[str, Any]:
    start = time.perf_counter()
    probe = next((images.load(PROBE_IMAGES) for images in image_sets if images.names), None)
    if probe is None:
        return {"used": False, "why": "no images"}
    why_not = exactness(tower, probe, device, precision)
    if why_not is not None:
        return {"used": False, "why": f"the tower is not batch-invariant here: {why_not}"}
    key = table_key(tower, split.images.image_size, split.images.resize, device, precision,
                    tuple(images.source for images in image_sets))
    built = (table_directory(key) / "table.json").is_file()
    count = sum(len(images.names) for images in image_sets)
    if not built and (size := _estimated_gb(tower, probe[:1], count, device)) > _limit_gb():
        return {"used": False, "why": f"the table would take {size:.1f} GB (over {LIMIT_ENV}={_limit_gb():g})"}
    tower.feature_table = ensure_table(key, tower, lambda: [images.load() for images in image_sets], device,
                                       precision, progress)
    return {"used": True, "key": key, "images": len(tower.feature_table.index), "cached": built,
            "seconds": round(time.perf_counter() - start, 2)}


def _image_sets(method, config, train_split: CIRSplit, eval_split: CIRSplit) -> list[_ImageSet]:
    """The training triplets' references and targets (the lists the shared loop loads) and the
    evaluation's gallery; loaded only when a table is built. Query references are not held: the
    evaluation times query encoding with the tower computing (feature_table.computed)."""
    sets = []
    if getattr(method, "training_data", "triplets") == "triplets":
        triplets = [t for t in train_split.triplets if t.target is not None][: config.train.max_train_queries]
        source = f"{Path(train_split.root).resolve()}:{train_split.split}:triplets:{len(triplets)}"
        sets += [_ImageSet(train_split, [t.reference for t in triplets], source),
                 _ImageSet(train_split, [t.target for t in triplets], source)]  # type: ignore[misc]
    if config.eval.gallery == "split_file" and eval_split.gallery:
        sets.append(_ImageSet(eval_split, list(eval_split.gallery),
                              f"{Path(eval_split.root).resolve()}:{eval_split.split}:gallery:{len(eval_split.gallery)}"))
    return sets


def _estimated_gb(tower: VisionTower, one: torch.Tensor, count: int, device) -> float:
    with torch.no_grad():
        row = tower.compute(one.to(device))
    return row.numel() * row.element_size() * count / 2**30


def _limit_gb() -> float:
    return float(os.environ.get(LIMIT_ENV, LIMIT_DEFAULT_GB))
