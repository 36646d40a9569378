"""`harness data check`: a dataset on disk checked before any run reads it: counts, missing or
unreadable images, duplicate ids, targets or set members absent from the split and, on the
embedded benchmark, the learning-free ceilings of each evaluation split.

    problems = check_dataset("cirr", Path("/data/cirr"), ["val"], echo=print)   # 0: nothing wrong
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from harness.core.errors import HarnessError, did_you_mean
from harness.data.datasets import DATASETS, TABLE, read_split
from harness.data.triplet import CIRSplit

#: problems listed one by one per split; the rest are counted
SHOWN_PROBLEMS = 20


def check_dataset(dataset: str, root: Path, splits: list[str] | None, echo: Callable[[str], None],
                  progress: bool = False) -> int:
    """Check ``splits`` (default: every split present) of ``dataset`` at ``root``, print what
    was found through ``echo`` and return the number of problems."""
    if dataset not in DATASETS:
        raise HarnessError(f"unknown dataset '{dataset}'{did_you_mean(dataset, DATASETS)}", field="--dataset",
                           fix="run `harness list` to see every dataset")
    if not root.is_dir():
        raise HarnessError("dataset root does not exist", file=root, field="--root", fix="give the dataset folder")
    splits = splits or TABLE[dataset].present_splits(root)
    if not splits:
        raise HarnessError("no annotation files found", file=root, field="--root",
                           fix="point --root at the dataset folder in its official layout")
    return sum(_check_split(dataset, root, name, echo, progress) for name in splits)


def _check_split(dataset: str, root: Path, name: str, echo: Callable[[str], None], progress: bool) -> int:
    loaded, problems = read_split(dataset, root, name)
    missing = {image for image in loaded.gallery if not loaded.images.paths[image].is_file()}
    unreadable = _unreadable(loaded, missing, problems, progress)
    with_target = sum(t.target is not None for t in loaded.triplets)
    echo(f"{dataset}/{name}: {len(loaded.triplets)} queries ({with_target} with targets), "
         f"{len(loaded.gallery)} images, {len(missing)} missing, {unreadable} unreadable, {len(problems)} problems")
    kinds = Counter(t.edit_type or t.category for t in loaded.triplets if t.edit_type or t.category)
    if kinds:
        what = "categories" if loaded.galleries else "edit types"
        echo(f"  {what}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    for category, names in loaded.galleries.items():
        echo(f"  {category}: gallery {len(names)} images")
    if dataset == "synthetic" and name != "train" and (root / "scene_graphs.json").is_file():
        from harness.data.synthetic.ceilings import format_audit, format_rows, split_audit, split_ceilings

        echo("  learning-free R@1 (perfect perception, no learning; see harness.data.synthetic.additive):")
        for line in format_rows(split_ceilings(root, name)):
            echo(line)
        if _has_groups(root, name):
            echo("  joint-reading certificate against an adversary, R@1 % (harness.data.synthetic.adversary) and "
                 "caption-free structure (harness.data.synthetic.structure):")
            for line in format_audit(split_audit(root, name)):
                echo(line)
    if missing:
        echo(f"  {len(missing)} gallery image files are missing: a run refuses the split unless "
             "dataset.allow_missing_images: true, which drops the queries and gallery images that need them and "
             "records how many in each result (docs/datasets.md, 'Missing images')")
    for problem in problems[:SHOWN_PROBLEMS]:
        echo(f"  problem: {problem}")
    if len(problems) > SHOWN_PROBLEMS:
        echo(f"  ... and {len(problems) - SHOWN_PROBLEMS} more")
    return len(problems)


def _has_groups(root: Path, split: str) -> bool:
    """Whether a written embedded benchmark records each query's image group (version 2 on)."""
    from harness.data.cirr import read_json

    entries = read_json(root / f"query_edits.rc2.{split}.json", what="query edits file")
    return bool(entries) and isinstance(entries[0], dict) and "group" in entries[0]


def _unreadable(loaded: CIRSplit, missing: set[str], problems: list[str], progress: bool) -> int:
    """Decode every present gallery image once; each that fails is a problem."""
    count = 0
    for image in tqdm(loaded.gallery, desc=f"reading {loaded.split}", unit="img", disable=not progress, leave=False):
        if image in missing:
            continue
        try:
            loaded.images.read(image)
        except HarnessError as error:
            problems.append(str(error))
            count += 1
    return count
