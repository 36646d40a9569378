"""Read CIRCO (Baldrati et al., ICCV 2023) from a local root in the layout of miccunifi/CIRCO
(docs/sources.md):

    annotations/{val,test}.json   [{"id", "reference_img_id", "relative_caption", "target_img_id",
                                    "gt_img_ids": [...], ...}]  (test: no targets)
    unlabeled2017/<12-digit COCO id>.jpg   the COCO 2017 unlabeled images: the gallery

    split, problems = read_circo_split(root, "val")

Image names are the COCO ids as decimal strings ("271520"); the gallery is every image in
unlabeled2017/ (the whole set, as the benchmark defines it). ``target`` is ``target_img_id``
(used by Recall@K) and ``ground_truths`` all of ``gt_img_ids`` (used by mAP@K). Refused with
file and entry named: malformed entries, duplicate ids; references and ground truths without
an image file are reported as problems.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.paths import confine_found
from harness.data.cirr import read_json
from harness.data.images import ImageStore
from harness.data.spec import DatasetSpec
from harness.data.triplet import CIRSplit, Triplet

CIRCO_SPLITS = ("val", "test")
IMAGES = "unlabeled2017"


def _image_id(value: object, *, file: Path, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise HarnessError(f"{value!r} is not a COCO image id", file=file, field=field, fix="restore the original file")
    return str(value)


def read_circo_split(root: Path, split: str, image_size: int = 64) -> tuple[CIRSplit, list[str]]:
    """Load one split; return it with the problems found (empty when all is well)."""
    root = Path(root)
    if split not in CIRCO_SPLITS:
        raise HarnessError(f"unknown CIRCO split {split!r}", field="split", fix=f"use one of {', '.join(CIRCO_SPLITS)}")
    annotations = root / "annotations" / f"{split}.json"
    entries = read_json(annotations, what="CIRCO annotation file")
    if not isinstance(entries, list):
        raise HarnessError("expected a JSON list of queries", file=annotations, fix="restore the original file")
    images = root / IMAGES
    problems: list[str] = [] if images.is_dir() else [f"{root}: the {IMAGES}/ folder (the COCO 2017 unlabeled images) "
                                                      "is missing"]
    paths = confine_found(root,
                          {str(int(path.stem)): path for path in sorted(images.glob("*.jpg")) if path.stem.isdigit()},
                          file=images)
    triplets: list[Triplet] = []
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        field = f"[{index}]"
        if not isinstance(entry, dict):
            raise HarnessError("expected an object", file=annotations, field=field, fix="restore the original file")
        try:
            query_id, caption = entry["id"], entry["relative_caption"]
            reference = _image_id(entry["reference_img_id"], file=annotations, field=f"{field}.reference_img_id")
        except KeyError as error:
            raise HarnessError(f"malformed query (missing {error})", file=annotations, field=field,
                               fix="each query needs id, reference_img_id and relative_caption") from None
        if isinstance(query_id, bool) or not isinstance(query_id, int) or not isinstance(caption, str):
            raise HarnessError("id must be an integer and relative_caption a string", file=annotations, field=field,
                               fix="restore the original file")
        if query_id in seen:
            raise HarnessError(f"duplicate query id {query_id}", file=annotations, field=f"{field}.id",
                               fix="restore the original file")
        seen.add(query_id)
        truths = tuple(_image_id(v, file=annotations, field=f"{field}.gt_img_ids")
                       for v in entry.get("gt_img_ids") or ())
        target = entry.get("target_img_id")
        target = None if target is None else _image_id(target, file=annotations, field=f"{field}.target_img_id")
        if target is not None and truths and target != truths[0]:
            problems.append(f"{annotations}: {field}.target_img_id: {target} is not gt_img_ids[0]")
        for role, name in (("reference_img_id", reference), *(("gt_img_ids", t) for t in truths)):
            if name not in paths:
                problems.append(f"{annotations}: {field}.{role}: image file {IMAGES}/{int(name):012d}.jpg is missing")
        triplets.append(Triplet(query_id, reference, caption, target, ground_truths=truths))
    return CIRSplit("circo", split, root, triplets, list(paths), ImageStore(paths, image_size)), problems


SPEC = DatasetSpec(
    "circo", "CIRCO (Baldrati et al., ICCV 2023) from a local root: annotations/{val,test}.json, "
    "unlabeled2017/ (the COCO 2017 unlabeled images, the gallery); mAP@K over every ground truth",
    CIRCO_SPLITS, "circo", lambda root, split, size, _: read_circo_split(root, split, size),
    lambda root, split: (root / "annotations" / f"{split}.json").is_file())
