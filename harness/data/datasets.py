"""Datasets by name: the embedded ``synthetic`` benchmark and ``cirr`` from a local root.

    config = DatasetConfig(name="synthetic")            # generated once into the cache
    train = load_dataset(config, config.train_split)
    val = load_dataset(config, config.eval_split)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.core.errors import HarnessError, did_you_mean
from harness.core.files import read_json_object
from harness.core.paths import cache_dir, file_lock
from harness.data.circo import SPEC as CIRCO_SPEC
from harness.data.cirr import CIRR_SPLITS, read_cirr_split
from harness.data.cirr import SPEC as CIRR_SPEC
from harness.data.fashioniq import FASHIONIQ_CATEGORIES
from harness.data.fashioniq import SPEC as FASHIONIQ_SPEC
from harness.data.images import DrawnImageStore, ImageStore
from harness.data.shoes import SPEC as SHOES_SPEC
from harness.data.spec import DatasetSpec
from harness.data.synthetic.generate import (
    GENERATOR_VERSION,
    SyntheticConfig,
    write_benchmark,
)
from harness.data.synthetic.render import SCENE_CODE_VERSION, scene_code_image
from harness.data.synthetic.scene import scene_from_json
from harness.data.triplet import CIRSplit

log = logging.getLogger(__name__)

#: Every dataset by name (``harness list``): each module declares its own ``SPEC``; adding a
#: dataset is its module and one entry here (docs/architecture.md).
SYNTHETIC = DatasetSpec(
    "synthetic", "embedded benchmark: rendered scenes of shapes, template captions, CIRR layout, no download (default)",
    CIRR_SPLITS, "cirr", lambda root, split, size, _: read_cirr_split(root, split, size, dataset="synthetic"),
    CIRR_SPEC.annotation_present)
TABLE: dict[str,
            DatasetSpec] = {spec.name: spec for spec in (SYNTHETIC, CIRR_SPEC, FASHIONIQ_SPEC, CIRCO_SPEC, SHOES_SPEC)}
DATASETS: dict[str, str] = {name: spec.description for name, spec in TABLE.items()}


class DatasetConfig(BaseModel):
    """Which dataset, where it lives, and which splits train and evaluate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("synthetic", description="dataset name (see `harness list`)")
    root: str | None = Field(None,
                             description="local dataset directory; synthetic: generated into the cache when unset")
    train_split: str = "train"
    eval_split: str = "val"
    image_size: int = Field(64, ge=16, le=1024, description="images are resized to this square side")
    resize: Literal["squash", "crop", "pad", "auto"] = Field(
        "squash", description="how an image becomes square: squash (stretch to the square, the embedded benchmark's "
        "images are square already), crop (shortest side to image_size, centre crop: CLIPImageProcessor's resize + "
        "center_crop), pad (pad to a square with the mean colour, then resize: LLaVA-1.5's expand2square), auto (each "
        "run as its checkpoint's own image processor: harness.backbones.vision.processor_resize; squash for tiny "
        "backbones)")
    categories: tuple[str, ...] = Field(FASHIONIQ_CATEGORIES, description="FashionIQ categories to load")
    allow_missing_images: bool = Field(
        False, description="drop queries (and gallery entries) whose image files are missing instead of refusing to "
        "run; results then record how many were dropped (FashionIQ downloads are often incomplete)")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig, description="generator settings")

    @model_validator(mode="before")
    @classmethod
    def _one_image_size(cls, data: Any) -> Any:
        """The embedded benchmark is rendered at ``image_size``: one setting, not two."""
        if isinstance(data, dict) and isinstance(data.get("synthetic"), dict) and "image_size" in data["synthetic"]:
            rendered = data["synthetic"]["image_size"]
            if "image_size" in data and data["image_size"] != rendered:
                raise ValueError(f"synthetic.image_size {rendered} differs from image_size {data['image_size']}; set "
                                 "image_size only")
            data = {**data, "image_size": rendered}
        if isinstance(data, dict) and "image_size" in data:
            synthetic = data.get("synthetic") or {}
            if isinstance(synthetic, dict):
                data = {**data, "synthetic": {**synthetic, "image_size": data["image_size"]}}
        return data

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset '{name}'{did_you_mean(name, DATASETS)}; known: {', '.join(DATASETS)}")
        return name


def synthetic_key(config: SyntheticConfig) -> str:
    """Cache key of a generated benchmark: hash of its settings and the generator version."""
    blob = json.dumps({"version": GENERATOR_VERSION, **config.settings()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_synthetic(config: SyntheticConfig, progress: bool = True) -> Path:
    """The cached benchmark for ``config``, generated first when absent (under its lock)."""
    root = cache_dir() / "datasets" / f"synthetic-{synthetic_key(config)}"
    if (root / "synthetic.json").is_file():
        return root
    with file_lock(root.parent / f".{root.name}.lock"):  # a process finding another generating it waits
        if not (root / "synthetic.json").is_file():
            log.info("generating the embedded benchmark into %s", root)
            write_benchmark(config, root, progress=progress)
    return root


def dataset_root(config: DatasetConfig, progress: bool = True) -> Path:
    """Where the dataset's files are; generates the embedded benchmark when needed."""
    if config.root is not None:
        root = Path(os.path.expanduser(config.root))
        if not root.is_dir():
            raise HarnessError(f"dataset root {root} does not exist", field="dataset.root",
                               fix="point it at the directory that holds captions/ and image_splits/")
        return root
    if config.name == "synthetic":
        return ensure_synthetic(config.synthetic, progress)
    raise HarnessError(f"dataset '{config.name}' needs a root", field="dataset.root",
                       fix="set dataset.root to the local copy of the dataset")


def dataset_key(config: DatasetConfig) -> str:
    """A name for the data a model was trained on (the generator settings, or the root)."""
    if config.name == "synthetic" and config.root is None:
        return f"synthetic-{synthetic_key(config.synthetic)}"
    return f"{config.name}:{Path(os.path.expanduser(config.root or '')).resolve()}"


def read_split(name: str, root: Path, split: str, image_size: int = 64,
               categories: tuple[str, ...] = FASHIONIQ_CATEGORIES) -> tuple[CIRSplit, list[str]]:
    """One split of dataset ``name`` from ``root`` and the problems found (missing images, ...)."""
    return TABLE[name].read(Path(root), split, image_size, categories)


def default_protocol(name: str) -> str:
    """The evaluation protocol dataset ``name`` is reported under (CIRR's for an unknown name)."""
    return TABLE[name].protocol if name in TABLE else "cirr"


#: The image mode of the perfect-perception track (backbone.vision: scene_graph).
SCENE_GRAPH = "scene_graph"


def scene_code_store(config: DatasetConfig, split: CIRSplit) -> DrawnImageStore:
    """The split's images as scene-code images drawn from its scene graphs (the perfect-perception
    track): only the embedded benchmark has them."""
    path = Path(split.root) / "scene_graphs.json"
    if config.name != "synthetic" or not path.is_file():
        raise HarnessError("backbone.vision: scene_graph reads scene graphs, which only the embedded benchmark has",
                           file=path, field="method.params.backbone.vision",
                           fix="use dataset synthetic, or backbone.vision: pixels")
    graphs = read_json_object(path, field="scene_graphs.json", fix="generate the benchmark again (delete the folder)")
    try:
        scenes = {name: scene_from_json(graph) for name, graph in graphs.items()}
    except (KeyError, TypeError, ValueError) as error:
        raise HarnessError(f"unreadable scene graph ({error})", file=path,
                           fix="generate the benchmark again (delete the folder)") from None
    side = split.images.image_size
    return DrawnImageStore(split.images.paths, side, lambda name: scene_code_image(scenes[name], side),
                           f"{SCENE_GRAPH}-v{SCENE_CODE_VERSION}")


#: how every loader words a problem that is a missing image file
MISSING_FILE = "is missing"


def load_dataset(config: DatasetConfig, split: str, progress: bool = True, resize: str | None = None) -> CIRSplit:
    """Load one split of the configured dataset, its images made square by ``resize`` (default:
    ``config.resize``, squash for auto; ``scene_graph``: the perfect-perception track's scene-code
    images); any problem is a HarnessError naming the first."""
    root = dataset_root(config, progress)
    loaded, problems = read_split(config.name, root, split, config.image_size, config.categories)
    if resize == SCENE_GRAPH:
        loaded.images = scene_code_store(config, loaded)
    else:
        loaded.images.resize = resize or (config.resize if config.resize != "auto" else "squash")
    if problems and config.allow_missing_images:
        loaded, problems = drop_missing_images(loaded, problems)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        check = f"`harness data check --dataset {config.name} --root {root} --split {split}`"
        missing = sum(MISSING_FILE in p for p in problems)
        if missing and not config.allow_missing_images:
            raise HarnessError(f"{problems[0]}{more}; {missing} of the problems are missing image files",
                               field="dataset.allow_missing_images",
                               fix=f"restore the files, or set dataset.allow_missing_images: true to drop the queries "
                               f"and gallery images that need them (results record how many); {check} lists them")
        raise HarnessError(problems[0] + more, fix=f"run {check}")
    return loaded


def drop_missing_images(split: CIRSplit, problems: list[str]) -> tuple[CIRSplit, list[str]]:
    """The split without the queries, gallery images and image-store entries whose files are
    missing (an image-trained method such as Pic2Word draws from the store), and the problems
    that remain (anything but a missing file). Counts go to ``split.info``."""
    present = {name for name, path in split.images.paths.items() if path.is_file()}
    kept = [t for t in split.triplets
            if all(name in present for name in (t.reference, t.target, *t.subset,
                                                *t.ground_truths) if name is not None)]
    gallery = [name for name in split.gallery if name in present]
    galleries = {category: [n for n in names if n in present] for category, names in split.galleries.items()}
    info = {**split.info, "dropped_queries": len(split.triplets) - len(kept),
            "dropped_gallery_images": len(split.gallery) - len(gallery)}
    remaining = [p for p in problems if MISSING_FILE not in p]  # every loader words a missing file so
    images = ImageStore({name: path for name, path in split.images.paths.items() if name in present},
                        split.images.image_size, split.images.resize)
    return (dataclasses.replace(split, triplets=kept, gallery=gallery, galleries=galleries, images=images, info=info),
            remaining)
