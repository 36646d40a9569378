"""`harness cache`: what the cache holds by kind, pruning by kind and age, and the note a command
gives when the decoded-image cache has grown the cache past its threshold."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from harness.cli import app


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache with an entry of four kinds; the decoded-image file is 40 days old."""
    root = tmp_path / "cache"
    monkeypatch.setenv("CIR_HARNESS_CACHE", str(root))
    for relative, size in [("images/old.npy", 3000), ("images/new.npy", 1000), ("backbones/stage0-a/vision/m.bin", 500),
                           ("datasets/synthetic-b/captions.json", 200), ("embeddings/e.safetensors", 100)]:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    old = time.time() - 40 * 86400
    os.utime(root / "images" / "old.npy", (old, old))
    (root / "images" / ".old.lock").write_text("")  # a lock file is no entry
    return root


def test_the_cache_is_listed_by_kind_and_pruned_by_kind_and_age(cache: Path):
    listed = CliRunner().invoke(app, ["cache", "--entries"])
    assert listed.exit_code == 0, listed.output
    assert listed.output.startswith(f"cache {cache}: 0.0 MiB")  # 4,800 bytes in all
    assert "images         2 entries" in listed.output and "old.npy" in listed.output
    assert "backbones      1 entries" in listed.output and "searle" not in listed.output
    dry = CliRunner().invoke(app, ["cache", "--prune", "images", "--dry-run"])
    assert dry.exit_code == 0 and "would remove 2 entries" in dry.output
    assert (cache / "images" / "old.npy").is_file()  # a dry run removes nothing
    aged = CliRunner().invoke(app, ["cache", "--prune", "images", "--older-than", "30"])
    assert aged.exit_code == 0 and "removed 1 entries" in aged.output, aged.output
    assert not (cache / "images" / "old.npy").exists() and (cache / "images" / "new.npy").is_file()
    everything = CliRunner().invoke(app, ["cache", "--prune", "all"])
    assert everything.exit_code == 0 and "removed 4 entries" in everything.output, everything.output
    assert not [p for p in cache.rglob("*") if p.is_file() and not p.name.startswith(".")]


@pytest.mark.parametrize("args,field", [(["--prune", "imagez"], "--prune"), (["--older-than", "3"], "--prune")])
def test_a_wrong_prune_is_one_line(cache: Path, args: list[str], field: str):
    result = CliRunner().invoke(app, ["cache", *args])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and field in result.stderr, result.output
    assert (cache / "images" / "old.npy").is_file()


def test_the_decoded_image_cache_says_once_when_the_cache_passes_its_threshold(
        cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
    from harness.core import cache as cache_module
    from harness.data import images

    monkeypatch.setattr(images, "DISK_CACHE_MIN", 4)
    monkeypatch.setattr(cache_module, "_noted", False)
    paths = {}
    for index in range(6):
        paths[f"i{index}"] = tmp_path / f"i{index}.png"
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(paths[f"i{index}"])
    store = images.ImageStore(paths, 8)
    monkeypatch.setenv(cache_module.NOTE_ENV, "1")  # 1 GiB: this cache stays below it
    with caplog.at_level(logging.WARNING, logger="harness.core.cache"):
        store.load(["i0", "i1", "i2", "i3"])
        assert not caplog.records
        monkeypatch.setenv(cache_module.NOTE_ENV, "0.000001")  # about 1 KiB: past it
        store.load(["i1", "i2", "i3", "i4"])
        store.load(["i2", "i3", "i4", "i5"])
    [note] = [r.getMessage() for r in caplog.records]  # said once per process
    assert str(cache) in note and "harness cache --prune images" in note
