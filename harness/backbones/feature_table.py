"""A frozen vision tower's outputs, computed once per checkpoint and precision and read back by image.

    key = table_key(tower, image_size=64, resize="squash", device=cpu, precision="fp32")
    table = ensure_table(key, tower, lambda: [train_references, train_targets, gallery], device, "fp32")
    tower.feature_table = table         # tower(images) now reads rows it holds, computes the rest
    with computed(method): ...          # every tower of ``method`` computes (timed query encoding)

A frozen tower gives the same features for an image in every step, run, seed and grid point, so
they are paid once (issue 37: a tenth of a tiny CIR-LVLM training step and a quarter of its
gallery encoding on a 2-core CPU). Rows are found by the image's content (a BLAKE2b digest of
its uint8 pixels), so nothing upstream has to carry names, and an image the table lacks is
computed as before. The table is used only where that changes no bit: ``exactness`` checks
that the tower's outputs do not depend on the batch it is in, nor on train / eval mode, and a
row is served only under the autocast state it was computed in. Files live in
``<cache>/features/<key>/`` (a memory-mapped ``features.npy``), written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from harness.core.cache import hash_tensors
from harness.core.device import autocast
from harness.core.paths import cache_dir, cached_directory

FEATURES_VERSION = 1
#: images per forward pass when a table is built
BUILD_BATCH = 256
#: the autocast states a row may be served under: (device type, autocast dtype or "off")
AutocastState = tuple[str, str]
_STORED = {torch.bfloat16: np.uint16, torch.float16: np.float16, torch.float32: np.float32}


def image_digests(images: torch.Tensor) -> list[bytes]:
    """One 16-byte digest per uint8 image of ``images`` [B, 3, H, W] (its pixels and shape)."""
    rows = images.detach().to("cpu").contiguous().numpy()
    return [hashlib.blake2b(row.tobytes(), digest_size=16, person=str(row.shape).encode()[:16]).digest()
            for row in rows]


def autocast_state(device_type: str) -> AutocastState:
    """The autocast state in force on ``device_type`` (features under bf16 autocast differ)."""
    if not torch.is_autocast_enabled(device_type):
        return device_type, "off"
    return device_type, str(torch.get_autocast_dtype(device_type))


@dataclass
class FeatureTable:
    """Tower outputs of the images it holds, by image digest; ``autocast`` is the state they were
    computed under, the only one they are served under."""

    index: dict[bytes, int]
    features: np.ndarray  # [N, T, D], memory-mapped
    dtype: torch.dtype
    autocast: AutocastState
    directory: Path

    def lookup(self, images: torch.Tensor) -> torch.Tensor | None:
        """The rows of ``images`` [B, 3, H, W] uint8, on their device; None when one is missing or
        the autocast state differs (the caller then computes the whole batch, as without a table)."""
        if images.dtype != torch.uint8 or autocast_state(images.device.type) != self.autocast:
            return None
        rows = [self.index.get(digest) for digest in image_digests(images)]
        if not rows or any(row is None for row in rows):
            return None
        found = torch.from_numpy(np.ascontiguousarray(self.features[rows]))
        if self.dtype == torch.bfloat16:
            found = found.view(torch.bfloat16)
        return found.to(images.device)

    @classmethod
    def open(cls, directory: Path) -> FeatureTable:
        meta = json.loads((directory / "table.json").read_text())
        digests = np.load(directory / "digests.npy")
        features = np.load(directory / "features.npy", mmap_mode="r")
        index = {bytes(row): i for i, row in enumerate(digests)}
        return cls(index, features, getattr(torch, meta["dtype"]), tuple(meta["autocast"]), directory)  # type: ignore[arg-type]


def table_key(tower: torch.nn.Module, image_size: int, resize: str, device: torch.device, precision: str,
              sources: tuple[str, ...] = ()) -> str:
    """The table's cache key: the tower's class, weights and buffers (so another stage-0 checkpoint
    gives another key), the images' size and geometry, the device type, the precision and where the
    images come from (``sources``: a pretrained tower serves several datasets, each its own table)."""
    digest = hashlib.sha256()
    header = {"version": FEATURES_VERSION, "tower": f"{type(tower).__module__}.{type(tower).__qualname__}",
              "feature_layer": getattr(tower, "feature_layer", None), "drop_cls": getattr(tower, "drop_cls", None),
              "image_size": image_size, "resize": resize, "device": torch.device(device).type,
              "precision": precision, "sources": list(sources)}
    digest.update(json.dumps(header, sort_keys=True).encode())
    hash_tensors(digest, {**dict(tower.named_parameters()), **dict(tower.named_buffers())})
    return digest.hexdigest()[:32]


def table_directory(key: str) -> Path:
    return cache_dir() / "features" / key


def ensure_table(key: str, tower, image_sets: Callable[[], list[torch.Tensor]], device: torch.device,
                 precision: str, progress: bool = False) -> FeatureTable:
    """The table of ``key``, built when absent from the uint8 tensors ``image_sets()`` returns (only
    then are they loaded; read in batches); concurrent runs wait for the first to build it
    (harness.core.paths.cached_directory)."""
    directory = cached_directory(table_directory(key), "table.json",
                                 lambda staging: _build(staging, tower, image_sets(), device, precision, progress))
    return FeatureTable.open(directory)


def _build(out: Path, tower, image_sets: list[torch.Tensor], device: torch.device, precision: str,
           progress: bool) -> None:
    """Compute the tower's outputs for every distinct image of ``image_sets`` into ``out``, written
    batch by batch into a memory-mapped file (a large table never sits in memory whole)."""
    digests, picks = _distinct(image_sets)
    features, written, dtype = None, 0, torch.float32
    bar = tqdm(total=len(digests), desc="frozen features", unit="img", disable=not progress, leave=False)
    with torch.no_grad(), autocast(device, precision), _mode(tower, training=False):
        state = autocast_state(torch.device(device).type)
        for images, rows in zip(image_sets, picks, strict=True):
            for start in range(0, len(rows), BUILD_BATCH):
                chunk = tower.compute(images[rows[start:start + BUILD_BATCH]].to(device)).detach().to("cpu")
                if features is None:
                    dtype = chunk.dtype
                    features = np.lib.format.open_memmap(out / "features.npy", mode="w+", dtype=_STORED[dtype],
                                                         shape=(len(digests), *chunk.shape[1:]))
                features[written:written + len(chunk)] = _stored(chunk)
                written += len(chunk)
                bar.update(len(chunk))
    bar.close()
    if features is None:
        np.save(out / "features.npy", np.zeros((0,), np.float32))
    else:
        features.flush()
    np.save(out / "digests.npy", np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 16))
    (out / "table.json").write_text(json.dumps({"dtype": str(dtype).removeprefix("torch."), "autocast": list(state),
                                                "images": len(digests)}))


def _distinct(image_sets: list[torch.Tensor]) -> tuple[list[bytes], list[list[int]]]:
    """(digest of each distinct image in order of first sight, the rows of each set first seen there)."""
    digests: list[bytes] = []
    picks: list[list[int]] = []
    seen: set[bytes] = set()
    for images in image_sets:
        rows = []
        for start in range(0, len(images), BUILD_BATCH):
            for row, digest in enumerate(image_digests(images[start:start + BUILD_BATCH]), start):
                if digest not in seen:
                    seen.add(digest)
                    digests.append(digest)
                    rows.append(row)
        picks.append(rows)
    return digests, picks


def _stored(features: torch.Tensor) -> np.ndarray:
    """``features`` as the table's file holds them (bf16 as its raw 16 bits: numpy has no bf16)."""
    if features.dtype == torch.bfloat16:
        return features.view(torch.int16).numpy().view(np.uint16)
    return features.numpy()


def exactness(tower, images: torch.Tensor, device: torch.device, precision: str) -> str | None:
    """None when ``tower``'s outputs for ``images`` are the same bits whatever batch they are in
    and in train or eval mode (then a table changes no result); else why not. Random state is
    left as it was (a tower with dropout would draw from it)."""
    with torch.no_grad(), autocast(device, precision), torch.random.fork_rng(devices=_rng_devices(device)):
        x = images.to(device)
        with _mode(tower, training=False):
            whole = tower.compute(x)
            singles = torch.cat([tower.compute(x[i:i + 1]) for i in range(len(x))])
            sevens = torch.cat([tower.compute(x[i:i + 7]) for i in range(0, len(x), 7)])
        with _mode(tower, training=True):
            training = tower.compute(x)
    for name, other in (("one image at a time", singles), ("in batches of 7", sevens), ("in train mode", training)):
        if not torch.equal(whole, other):
            return f"its outputs differ {name} (max {float((whole.float() - other.float()).abs().max()):.2g})"
    return None


def _rng_devices(device: torch.device) -> list:
    return [device] if torch.device(device).type == "cuda" else []


@contextlib.contextmanager
def _mode(module: torch.nn.Module, training: bool) -> Iterator[None]:
    """``module`` in train or eval mode for the block, put back after."""
    was = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was)


def reads_feature_tables(module: torch.nn.Module) -> bool:
    """Whether a vision tower inside ``module`` reads a feature table (its gallery encoding time
    then leaves the tower's passes out)."""
    return any(getattr(m, "feature_table", None) is not None for m in module.modules())


@contextlib.contextmanager
def computed(module: torch.nn.Module) -> Iterator[None]:
    """Every vision tower inside ``module`` computes its features for the block (a timed pass
    measures the method's own cost, never a table read)."""
    towers = [m for m in module.modules() if getattr(m, "feature_table", None) is not None]
    tables = [m.feature_table for m in towers]
    for tower in towers:
        tower.feature_table = None
    try:
        yield
    finally:
        for tower, table in zip(towers, tables, strict=True):
            tower.feature_table = table
