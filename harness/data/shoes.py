"""Read Shoes (Guo et al., "Dialog-based interactive image retrieval", NeurIPS 2018) from a
local root in the layout of XiaoxiaoGuo/fashion-retrieval (docs/sources.md):

    relative_captions_shoes.json   [{"ImageName": target, "ReferenceImageName": ..., "RelativeCaption": ...}]
    train_im_names.txt, eval_im_names.txt   one image basename per line (disjoint)
    womens_<category>/<0|1>/img_womens_<category>_<n>.jpg   the Attribute Discovery images

    split, problems = read_shoes_split(root, "eval")

A triplet belongs to the split of its reference image (the rule of the common code, e.g.
DQU-CIR's ``Shoes``); the gallery is every image of the split's name list. Pair ids are the
entries' positions in the caption file. Refused with file and entry named: malformed entries,
names with a path in them, duplicate image files; missing images are reported as problems.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import read_text
from harness.core.paths import confine_found
from harness.data.cirr import read_json
from harness.data.images import ImageStore
from harness.data.spec import DatasetSpec
from harness.data.triplet import CIRSplit, Triplet

SHOES_SPLITS = ("train", "eval")
CAPTIONS = "relative_captions_shoes.json"


def _image_files(root: Path) -> dict[str, Path]:
    """Basename -> file for every .jpg under a ``*womens*`` folder (duplicates refused)."""
    files: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and "womens" in p.name):
        for path in sorted(folder.rglob("*.jpg")):
            if path.name in files:
                raise HarnessError(f"image {path.name} appears twice ({files[path.name]} and {path})", file=root,
                                   fix="keep one copy of each image")
            files[path.name] = path
    return files


def _names(path: Path) -> list[str]:
    if not path.is_file():
        raise HarnessError("image name list not found", file=path, fix="check --root and the dataset layout")
    names = [line.strip() for line in read_text(path,
                                                fix="restore the dataset's original file").splitlines() if line.strip()]
    for line, name in enumerate(names, start=1):
        if "/" in name or "\\" in name or name.startswith("."):
            raise HarnessError(f"line {line}: {name!r} is not a bare image name", file=path,
                               fix="list image basenames only, as in the original file")
    return names


def read_shoes_split(root: Path, split: str, image_size: int = 64) -> tuple[CIRSplit, list[str]]:
    """Load one split; return it with the problems found (empty when all is well)."""
    root = Path(root)
    if split not in SHOES_SPLITS:
        raise HarnessError(f"unknown Shoes split {split!r}", field="split", fix=f"use one of {', '.join(SHOES_SPLITS)}")
    names = _names(root / f"{split}_im_names.txt")
    in_split = set(names)
    captions_file = root / CAPTIONS
    entries = read_json(captions_file, what="Shoes caption file")
    if not isinstance(entries, list):
        raise HarnessError("expected a JSON list of triplets", file=captions_file, fix="restore the original file")
    files = _image_files(root)
    problems = [f"{root / f'{split}_im_names.txt'}: {name}: image file is missing"
                for name in names if name not in files]
    triplets: list[Triplet] = []
    for index, entry in enumerate(entries):
        field = f"[{index}]"
        try:
            target, reference, caption = entry["ImageName"], entry["ReferenceImageName"], entry["RelativeCaption"]
        except (KeyError, TypeError) as error:
            raise HarnessError(f"malformed triplet (missing {error})", file=captions_file, field=field,
                               fix="each entry needs ImageName, ReferenceImageName and RelativeCaption") from None
        if not all(isinstance(value, str) for value in (target, reference, caption)):
            raise HarnessError("ImageName, ReferenceImageName and RelativeCaption must be strings", file=captions_file,
                               field=field, fix="restore the original file")
        if reference not in in_split:
            continue
        if target not in in_split:
            problems.append(f"{captions_file}: {field}.ImageName: target {target!r} is not in {split}_im_names.txt")
        triplets.append(Triplet(index, reference, caption, target))
    paths = confine_found(root, {name: files.get(name, root / name) for name in names}, file=root)
    # e.g. 1 eval triplet of the full file: unreachable when the reference is removed from its gallery
    info = {"reference_is_target": sum(t.reference == t.target for t in triplets)}
    return CIRSplit("shoes", split, root, triplets, names, ImageStore(paths, image_size), info), problems


SPEC = DatasetSpec(
    "shoes", "Shoes (Guo et al., NeurIPS 2018) from a local root: relative_captions_shoes.json, "
    "{train,eval}_im_names.txt, womens_*/ images; splits train, eval",
    SHOES_SPLITS, "shoes", lambda root, split, size, _: read_shoes_split(root, split, size),
    lambda root, split: (root / f"{split}_im_names.txt").is_file())
