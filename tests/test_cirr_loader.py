"""The CIRR-layout loader: real CIRR annotation files, and every refusal it promises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.core.errors import HarnessError
from harness.data.cirr import load_cirr_split, read_cirr_split


def _copy(tiny_benchmark: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(tiny_benchmark, root)
    return root


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    data = change(data) or data
    path.write_text(json.dumps(data))


def test_embedded_benchmark_loads(tiny_benchmark: Path):
    split = load_cirr_split(tiny_benchmark, "val")
    assert len(split.triplets) == 64 and split.has_targets
    assert split.triplets[0].edit_type is not None
    images = split.images.load([t.reference for t in split.triplets[:4]])
    assert tuple(images.shape) == (4, 3, 64, 64) and str(images.dtype) == "torch.uint8"
    test = load_cirr_split(tiny_benchmark, "test1")
    assert not test.has_targets


def test_real_cirr_annotations_parse(cirr_fixtures: Path):
    split, problems = read_cirr_split(cirr_fixtures, "val")
    assert len(split.triplets) == 303
    assert split.triplets[0].pairid == 12060 and split.triplets[0].target == "dev-1028-1-img1"
    assert len(split.triplets[0].subset) == 6
    assert len(split.gallery) == 2297  # the whole split file is the gallery
    # no images ship with the fixtures: every one is reported missing, nothing else is wrong
    assert problems and all(p.endswith("is missing") for p in problems)
    test, _ = read_cirr_split(cirr_fixtures, "test1")
    assert all(t.target is None for t in test.triplets)


def test_missing_image_refused(tiny_benchmark: Path, tmp_path: Path):
    root = _copy(tiny_benchmark, tmp_path)
    split = json.loads((root / "image_splits" / "split.rc2.val.json").read_text())
    name, relative = next(iter(split.items()))
    (root / relative).unlink()
    with pytest.raises(HarnessError, match=f"{name}: image file .* is missing"):
        load_cirr_split(root, "val")


def test_unreadable_image_refused(tiny_benchmark: Path, tmp_path: Path):
    root = _copy(tiny_benchmark, tmp_path)
    split = json.loads((root / "image_splits" / "split.rc2.val.json").read_text())
    name, relative = next(iter(split.items()))
    (root / relative).write_bytes(b"not a png")
    loaded = load_cirr_split(root, "val")
    with pytest.raises(HarnessError, match="cannot read image"):
        loaded.images.decode(name)


def test_duplicate_pairid_refused(tiny_benchmark: Path, tmp_path: Path):
    root = _copy(tiny_benchmark, tmp_path)

    def duplicate(entries):
        entries[1]["pairid"] = entries[0]["pairid"]

    _edit_json(root / "captions" / "cap.rc2.val.json", duplicate)
    with pytest.raises(HarnessError, match="duplicate pair id"):
        load_cirr_split(root, "val")


def test_duplicate_image_name_refused(tiny_benchmark: Path, tmp_path: Path):
    root = _copy(tiny_benchmark, tmp_path)
    path = root / "image_splits" / "split.rc2.val.json"
    text = path.read_text()
    first = text[1 : text.index(",")]  # '"name": "path"'
    path.write_text("{" + first + ", " + text[1:])
    with pytest.raises(HarnessError, match="duplicate key"):
        load_cirr_split(root, "val")


def test_target_absent_from_gallery_refused(tiny_benchmark: Path, tmp_path: Path):
    root = _copy(tiny_benchmark, tmp_path)

    def retarget(entries):
        entries[0]["target_hard"] = "dev-99999-img0"

    _edit_json(root / "captions" / "cap.rc2.val.json", retarget)
    with pytest.raises(HarnessError, match=r"\[0\]\.target_hard: image 'dev-99999-img0' is not in split.rc2.val.json"):
        load_cirr_split(root, "val")


@pytest.mark.parametrize("bad_path", ["../outside.png", "./dev/../../outside.png", "/etc/passwd"])
def test_path_escape_refused(tiny_benchmark: Path, tmp_path: Path, bad_path: str):
    root = _copy(tiny_benchmark, tmp_path)

    def escape(split):
        split[next(iter(split))] = bad_path

    _edit_json(root / "image_splits" / "split.rc2.val.json", escape)
    with pytest.raises(HarnessError, match="absolute|climbs out"):
        load_cirr_split(root, "val")


def test_data_check_cli(tiny_benchmark: Path, tmp_path: Path):
    ok = CliRunner().invoke(app, ["data", "check", "--dataset", "synthetic", "--root", str(tiny_benchmark)])
    assert ok.exit_code == 0, ok.output
    assert "synthetic/val: 64 queries (64 with targets), 576 images, 0 missing, 0 unreadable, 0 problems" in ok.stdout
    root = _copy(tiny_benchmark, tmp_path)
    split = json.loads((root / "image_splits" / "split.rc2.val.json").read_text())
    relatives = list(split.values())
    (root / relatives[0]).unlink()
    (root / relatives[1]).write_bytes(b"broken")
    bad = CliRunner().invoke(app, ["data", "check", "--dataset", "synthetic", "--root", str(root), "--split", "val"])
    assert bad.exit_code == 1
    assert "1 missing, 1 unreadable" in bad.stdout


def test_data_check_unknown_dataset(tiny_benchmark: Path):
    result = CliRunner().invoke(app, ["data", "check", "--dataset", "cir", "--root", str(tiny_benchmark)])
    assert result.exit_code == 2 and "did you mean 'cirr'" in result.stderr


def test_decoded_images_are_kept_on_disk_and_a_changed_file_is_decoded_again(tiny_benchmark, monkeypatch):
    import os
    import shutil

    import torch

    from harness.data import images as image_store
    from harness.data.cirr import load_cirr_split

    monkeypatch.setattr(image_store, "DISK_CACHE_MIN", 8)
    names = sorted(load_cirr_split(tiny_benchmark, "val").images.paths)[:20]
    first = load_cirr_split(tiny_benchmark, "val").images.load(names)
    store = load_cirr_split(tiny_benchmark, "val").images  # another process would start like this
    monkeypatch.setattr(store, "read", lambda name: (_ for _ in ()).throw(AssertionError("decoded again")))
    assert torch.equal(store.load(names), first)  # read from <cache>/images/, nothing decoded
    changed = load_cirr_split(tiny_benchmark, "val").images
    path = changed.paths[names[0]]
    backup = path.with_suffix(".bak")
    shutil.copy2(path, backup)
    try:
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # the file changed
        calls = []
        original = changed.read
        monkeypatch.setattr(changed, "read", lambda name: calls.append(name) or original(name))
        assert torch.equal(changed.load(names), first) and len(calls) == len(names)  # decoded again, not the old file
    finally:
        shutil.move(backup, path)


def test_release_layout_and_image_folders_linked_from_shared_storage(tiny_benchmark: Path, tmp_path: Path):
    """CIRR unpacks its annotations into ``cirr/captions`` and ``cirr/image_splits``; the image
    folders may be links to shared storage, which the user's own root is allowed to use."""
    root = tmp_path / "cirr_dataset"
    (root / "cirr").mkdir(parents=True)
    for folder in ("captions", "image_splits"):
        shutil.copytree(tiny_benchmark / folder, root / "cirr" / folder)
    for folder in ("train", "dev", "test1"):
        (root / folder).symlink_to(tiny_benchmark / folder)  # e.g. /mnt/shared/cirr/dev
    loaded = load_cirr_split(root, "val")
    original = load_cirr_split(tiny_benchmark, "val")
    assert [t.pairid for t in loaded.triplets] == [t.pairid for t in original.triplets]
    name = loaded.triplets[0].reference
    assert loaded.images.paths[name] == original.images.paths[name].resolve()
    assert loaded.images.load([name]).equal(original.images.load([name]))
    result = CliRunner().invoke(app, ["data", "check", "--dataset", "cirr", "--root", str(root), "--split", "val"])
    assert result.exit_code == 0, result.output


def test_dropping_missing_images_drops_them_from_the_image_store_too(tiny_benchmark: Path, tmp_path: Path):
    """With allow_missing_images, an image-trained method (Pic2Word, SEARLE) draws its training
    images from the store: a missing file must not be left there for it to read."""
    from harness.data.datasets import drop_missing_images
    from harness.methods.base import MethodContext
    from harness.methods.registry import build_method

    root = _copy(tiny_benchmark, tmp_path)
    split, _ = read_cirr_split(root, "train")
    gone = split.triplets[0].reference
    split.images.paths[gone].unlink()
    split, problems = read_cirr_split(root, "train")
    kept, remaining = drop_missing_images(split, problems)
    assert not remaining and gone not in kept.images and gone not in kept.gallery
    assert kept.info["dropped_queries"] >= 1 and len(kept.images.paths) == len(split.images.paths) - 1
    names = build_method("image_only", {"start": "scratch"}, MethodContext(64, [])).training_images(kept)
    assert gone not in names


def test_a_large_load_is_decoded_once_into_a_mapped_file_and_a_broken_one_is_redone(tiny_benchmark, monkeypatch):
    """No per-image copies beside the mapped file (a gallery is never in memory twice); a cache
    file cut short is decoded again with a warning, never a traceback."""
    import numpy as np
    import torch

    from harness.data import images as image_store
    from harness.data.cirr import load_cirr_split

    monkeypatch.setattr(image_store, "DISK_CACHE_MIN", 8)
    store = load_cirr_split(tiny_benchmark, "val").images
    names = sorted(store.paths)[20:36]
    images = store.load(names)
    assert not store._cache  # decoded straight into the file, not kept image by image
    disk = store._disk_file(names)
    assert isinstance(np.load(disk, mmap_mode="r"), np.memmap) and images.shape[0] == 16
    assert torch.equal(images[3], store.read(names[3]))
    expected = images.clone()
    del images  # unmapped before the file is cut (a mapped page past the end would fault)
    disk.write_bytes(disk.read_bytes()[:100])  # cut short (a full disk, a copy interrupted)
    again = load_cirr_split(tiny_benchmark, "val").images.load(names)
    assert torch.equal(again, expected)


def test_images_become_square_by_squash_crop_or_pad():
    """crop: CLIPImageProcessor's shortest side + centre crop; pad: LLaVA-1.5's expand2square."""
    import numpy as np
    from PIL import Image

    from harness.data.images import squared

    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 5:35] = 200  # a bright centre, dark sides
    image = Image.fromarray(wide)
    crop = np.asarray(squared(image, 10, "crop"))
    assert crop.shape == (10, 10, 3) and crop.min() >= 190  # only the bright centre is kept
    pad = np.asarray(squared(image, 10, "pad"))
    assert pad.shape == (10, 10, 3) and pad[0, 5].tolist() == [150, 150, 150]  # padded with the mean colour (3/4 x 200)
    assert np.asarray(squared(image, 10, "squash")).shape == (10, 10, 3)
    square = Image.fromarray(np.full((10, 10, 3), 7, dtype=np.uint8))
    assert all(np.array_equal(np.asarray(squared(square, 10, mode)), np.asarray(square)) for mode in ("crop", "pad"))


def test_the_resize_setting_reaches_the_image_store(tiny_benchmark, tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from harness.data.datasets import DatasetConfig, load_dataset
    from harness.data.images import ImageStore, squared

    split = load_dataset(DatasetConfig(name="cirr", root=str(tiny_benchmark), resize="pad"), "val", progress=False)
    assert split.images.resize == "pad"
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, 5:35] = 200
    Image.fromarray(wide).save(tmp_path / "wide.png")
    decoded = {mode: ImageStore({"wide": tmp_path / "wide.png"}, 10, mode).read("wide") for mode in ("squash", "crop")}
    expected = torch.from_numpy(np.asarray(squared(Image.fromarray(wide), 10, "crop")).copy()).permute(2, 0, 1)
    assert torch.equal(decoded["crop"], expected) and not torch.equal(decoded["crop"], decoded["squash"])
