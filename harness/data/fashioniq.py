"""Read FashionIQ (Wu et al., CVPR 2021) from a local root in the layout of
XiaoxiaoGuo/fashion-iq (docs/sources.md):

    captions/cap.{dress,shirt,toptee}.{train,val,test}.json   [{"candidate", "target", "captions": [c1, c2]}]
    image_splits/split.{dress,shirt,toptee}.{train,val,test}.json   [asin, ...]
    images/<asin>.png or images/<asin>.jpg    (the extension is probed per image)

    split, problems = read_fashioniq_split(root, "val", categories=("dress", "shirt", "toptee"))

One query per caption pair: ``candidate`` is the reference, both captions are kept
(``Triplet.captions``; ``caption`` holds the CLIP4Cir joining) and the query's ``category``
selects its gallery: the category's split file (``CIRSplit.galleries``), as the canonical
protocol ranks each category separately. Test files have no targets. Refused with file and
entry named: malformed entries, ASINs with a path in them; targets absent from their
category's split file and missing images are reported as problems.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.paths import confine_found
from harness.data.caption_join import join_captions
from harness.data.cirr import read_json
from harness.data.images import ImageStore
from harness.data.spec import DatasetSpec
from harness.data.triplet import CIRSplit, Triplet

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_SPLITS = ("train", "val", "test")
EXTENSIONS = (".png", ".jpg")


def _asin(value: object, *, file: Path, field: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value.startswith("."):
        raise HarnessError(f"{value!r} is not an image id", file=file, field=field,
                           fix="use the ASINs of the original file (no paths)")
    return value


def _image_path(images: Path, asin: str) -> Path:
    for extension in EXTENSIONS:
        path = images / f"{asin}{extension}"
        if path.is_file():
            return path
    return images / f"{asin}{EXTENSIONS[0]}"


def read_fashioniq_split(root: Path, split: str, categories: tuple[str, ...] = FASHIONIQ_CATEGORIES,
                         image_size: int = 64) -> tuple[CIRSplit, list[str]]:
    """Load one split of the chosen categories; return it with the problems found."""
    root = Path(root)
    if split not in FASHIONIQ_SPLITS:
        raise HarnessError(f"unknown FashionIQ split {split!r}", field="split",
                           fix=f"use one of {', '.join(FASHIONIQ_SPLITS)} (papers report val)")
    unknown = [c for c in categories if c not in FASHIONIQ_CATEGORIES]
    if unknown or not categories:
        raise HarnessError(f"unknown FashionIQ categories {unknown}", field="dataset.categories",
                           fix=f"choose from {', '.join(FASHIONIQ_CATEGORIES)}")
    problems: list[str] = []
    triplets: list[Triplet] = []
    galleries: dict[str, list[str]] = {}
    gallery: dict[str, None] = {}  # union, in first-seen order
    for category in categories:
        split_file = root / "image_splits" / f"split.{category}.{split}.json"
        captions_file = root / "captions" / f"cap.{category}.{split}.json"
        names = read_json(split_file, what="image split file")
        entries = read_json(captions_file, what="caption file")
        if not isinstance(names, list):
            raise HarnessError("expected a JSON list of image ids", file=split_file, fix="restore the original file")
        if not isinstance(entries, list):
            raise HarnessError("expected a JSON list of queries", file=captions_file, fix="restore the original file")
        galleries[category] = [_asin(n, file=split_file, field=f"[{i}]") for i, n in enumerate(names)]
        gallery.update(dict.fromkeys(galleries[category]))
        in_split = set(galleries[category])
        for index, entry in enumerate(entries):
            field = f"[{index}]"
            if not isinstance(entry, dict) or "candidate" not in entry or "captions" not in entry:
                raise HarnessError("malformed query (needs candidate and captions)", file=captions_file, field=field,
                                   fix="restore the original file")
            reference = _asin(entry["candidate"], file=captions_file, field=f"{field}.candidate")
            target = entry.get("target")
            if target is not None:
                target = _asin(target, file=captions_file, field=f"{field}.target")
            captions = entry["captions"]
            if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
                raise HarnessError("captions must be a non-empty list of strings", file=captions_file,
                                   field=f"{field}.captions", fix="restore the original file")
            for role, name in (("candidate", reference), ("target", target)):
                if name is not None and name not in in_split:
                    problems.append(f"{captions_file}: {field}.{role}: image {name!r} is not in {split_file.name}")
            triplets.append(Triplet(len(triplets), reference, join_captions(captions), target,
                                    captions=tuple(captions), category=category))
    images = root / "images"
    paths = confine_found(root, {name: _image_path(images, name) for name in gallery}, file=images)
    problems += [f"{images}: {name}: image file is missing ({' or '.join(EXTENSIONS)})" for name, path in paths.items()
                 if not path.is_file()]
    loaded = CIRSplit("fashioniq", split, root, triplets, list(gallery), ImageStore(paths, image_size),
                      galleries=galleries)
    return loaded, problems


SPEC = DatasetSpec(
    "fashioniq", "FashionIQ (Wu et al., CVPR 2021) from a local root: captions/cap.<category>.<split>.json, "
    "image_splits/, images/<asin>.png|jpg; categories dress, shirt, toptee; papers report val",
    FASHIONIQ_SPLITS, "fashioniq",
    lambda root, split, size, categories: read_fashioniq_split(root, split, categories, size),
    lambda root, split: any((root / "captions").glob(f"cap.*.{split}.json")))
