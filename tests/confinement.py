"""The CIRR loader's confinement tests, for any loader that finds its images on disk: an image
file that is a symbolic link out of the dataset is refused, naming it; an image folder that is
a link (to shared storage) is followed."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from harness.core.errors import HarnessError


def check_confinement(root: Path, tmp_path: Path, image: Path, folder: Path, load: Callable[[Path], object]) -> None:
    """``image`` and ``folder`` lie under ``root`` (the loader's images and the folder holding them)."""
    copy = tmp_path / "dataset"
    shutil.copytree(root, copy, symlinks=True)
    outside = tmp_path / "outside.jpg"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside)
    linked = copy / image.relative_to(root)
    linked.unlink()
    linked.symlink_to(outside)
    with pytest.raises(HarnessError, match="symbolic link out of the dataset") as refused:
        load(copy)
    assert linked.name in str(refused.value) or linked.stem in str(refused.value)
    linked.unlink()
    shutil.copy(image, linked)
    shared = tmp_path / "shared" / folder.name
    shutil.move(str(copy / folder.relative_to(root)), shared)
    (copy / folder.relative_to(root)).symlink_to(shared)  # e.g. /mnt/shared/images
    load(copy)  # followed
