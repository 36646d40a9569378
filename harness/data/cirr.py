"""Read a dataset in CIRR's layout (the embedded benchmark now, real CIRR through the same code).

    split, problems = read_cirr_split(root, "val")        # problems: list of one-line strings
    split = load_cirr_split(root, "val", image_size=64)   # raises HarnessError on any problem

Both CIRR layouts are read: ``captions/`` and ``image_splits/`` at the root, or under
``root/cirr/`` as the release unpacks. Refused, with the file and the field named: missing files,
duplicate pair ids or image names, references, targets or set members absent from the split's images, and image paths
that are absolute or climb out of the root. Missing image files are reported too.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.core.paths import Confiner
from harness.data.images import ImageStore
from harness.data.spec import DatasetSpec
from harness.data.triplet import CIRSplit, Triplet

CIRR_SPLITS = ("train", "val", "test1")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    counts = Counter(key for key, _ in pairs)
    duplicated = [key for key, count in counts.items() if count > 1]
    if duplicated:
        raise ValueError(f"duplicate key {duplicated[0]!r}")
    return dict(pairs)


def read_json(path: Path, *, what: str) -> Any:
    """Parse a JSON file; a missing file, bad JSON or a duplicate key is a HarnessError."""
    if not path.is_file():
        raise HarnessError(f"{what} not found", file=path, fix="check --root and the dataset layout")
    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as error:
        raise HarnessError(f"{what} is not valid JSON ({error})", file=path, fix="restore the original file") from None


def annotation_dir(root: Path) -> Path:
    """Where ``captions/`` and ``image_splits/`` are: the root itself, or ``root/cirr`` as CIRR's
    release unpacks (``cirr/captions``, ``cirr/image_splits`` beside ``train/``, ``dev/``,
    ``test1/``; the split files' image paths are relative to the root either way)."""
    if not (root / "captions").is_dir() and (root / "cirr" / "captions").is_dir():
        return root / "cirr"
    return root


def read_cirr_split(root: Path, split: str, image_size: int = 64, dataset: str = "cirr") -> tuple[CIRSplit, list[str]]:
    """Load one split; return it with the list of problems found (empty when all is well)."""
    root = Path(root)
    if split not in CIRR_SPLITS:
        raise HarnessError(f"unknown split {split!r}", field="split", fix=f"use one of {', '.join(CIRR_SPLITS)}")
    annotations = annotation_dir(root)
    captions_file = annotations / "captions" / f"cap.rc2.{split}.json"
    split_file = annotations / "image_splits" / f"split.rc2.{split}.json"
    entries = read_json(captions_file, what="caption file")
    image_split = read_json(split_file, what="image split file")
    if not isinstance(entries, list):
        raise HarnessError("expected a JSON list of queries", file=captions_file, fix="restore the original file")
    if not isinstance(image_split, dict):
        raise HarnessError("expected a JSON object name -> path", file=split_file, fix="restore the original file")
    problems: list[str] = []
    paths: dict[str, Path] = {}
    confine = Confiner(root)
    for name, relative in image_split.items():
        path = confine(str(relative), file=split_file, field=name)
        paths[name] = path
        if not path.is_file():
            problems.append(f"{split_file}: {name}: image file {relative} is missing")
    edit_types = _edit_types(root, split)
    triplets: list[Triplet] = []
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        field = f"[{index}]"
        try:
            pairid = _typed(entry["pairid"], int, "pairid")
            reference = _typed(entry["reference"], str, "reference")
            caption = _typed(entry["caption"], str, "caption")
            members = tuple(_typed(m, str, "img_set.members") for m in entry.get("img_set", {}).get("members", ()))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise HarnessError(f"malformed query ({error!r})", file=captions_file, field=field,
                               fix="each query needs pairid, reference, caption and img_set") from None
        target = entry.get("target_hard")
        if pairid in seen:
            problems.append(f"{captions_file}: {field}.pairid: duplicate pair id {pairid}")
        seen.add(pairid)
        for role, name in (("reference", reference), ("target_hard", target)):
            if name is not None and name not in paths:
                problems.append(f"{captions_file}: {field}.{role}: image {name!r} is not in {split_file.name}")
        for name in members:
            if name not in paths:
                problems.append(f"{captions_file}: {field}.img_set.members: image {name!r} is not in {split_file.name}")
        soft = entry.get("target_soft") or {}
        if not isinstance(soft, dict) or not all(isinstance(v, (int, float)) for v in soft.values()):
            raise HarnessError("target_soft must map image names to numbers", file=captions_file,
                               field=f"{field}.target_soft", fix="restore the original file")
        triplets.append(Triplet(pairid, reference, caption, None if target is None else str(target), members,
                                edit_types.get(pairid),
                                soft_targets=tuple((str(k), float(v)) for k, v in soft.items())))
    loaded = CIRSplit(dataset, split, root, triplets, list(image_split), ImageStore(paths, image_size))
    return loaded, problems


def load_cirr_split(root: Path, split: str, image_size: int = 64, dataset: str = "cirr") -> CIRSplit:
    """Load one split or raise a HarnessError naming the first problem (and how many more)."""
    loaded, problems = read_cirr_split(root, split, image_size, dataset)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise HarnessError(problems[0] + more, fix=f"run `harness data check --dataset {dataset} --root {root} --split "
                                                   f"{split}`")
    return loaded


def _typed(value: Any, kind: type, name: str) -> Any:
    """``value`` when it is a ``kind`` (a bool is no int), else a TypeError naming the field."""
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def _edit_types(root: Path, split: str) -> dict[int, str]:
    """Edit type per pair id, from the embedded benchmark's query_edits file when present."""
    path = root / f"query_edits.rc2.{split}.json"
    if not path.is_file():
        return {}
    entries = read_json(path, what="query edits file")
    if not isinstance(entries, list):
        raise HarnessError("expected a JSON list of queries", file=path, fix="generate the benchmark again")
    types = {}
    for index, entry in enumerate(entries):
        try:
            types[_typed(entry["pairid"], int, "pairid")] = _typed(entry["edit_type"], str, "edit_type")
        except (KeyError, TypeError) as error:
            raise HarnessError(f"malformed entry ({error!r})", file=path, field=f"[{index}]",
                               fix="each entry needs pairid and edit_type; generate the benchmark again") from None
    return types


SPEC = DatasetSpec(
    "cirr", "CIRR (Liu et al., ICCV 2021) from a local root in its official layout (captions/, image_splits/, images)",
    CIRR_SPLITS, "cirr", lambda root, split, size, _: read_cirr_split(root, split, size),
    lambda root, split: (annotation_dir(root) / "captions" / f"cap.rc2.{split}.json").is_file())
