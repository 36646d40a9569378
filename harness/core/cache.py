"""What the cache holds and how to free it (`harness cache`), and a note when it grows large.

    entries = cache_entries()                      # one per cached thing: kind, name, bytes, last written
    removed = prune(entries, kinds={"images"}, older_than_days=30)
    note_size(echo)                                # once per process, when the cache passes the threshold

Everything under the cache (``harness.core.paths.cache_dir``) is derived and rebuilt on demand:
generated benchmarks (``datasets/``), stage-0 warm starts (``backbones/``), decoded images
(``images/``, the largest: a 224-px gallery of 123k images is 18.6 GB), gallery embeddings
(``embeddings/``), frozen towers' outputs (``features/``: 449 MB for the main job's CIR-LVLM
tower), SEARLE's inverted tokens (``searle/``) and scratch files. Pruning costs the
time to rebuild, never a result: run ids and results live in the runs folders, not here.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from harness.core.paths import cache_dir

log = logging.getLogger(__name__)

#: the cache's top-level folders, each a kind of entry, and what rebuilding one costs
KINDS = {
    "datasets": "generated embedded benchmarks (minutes to render again)",
    "backbones": "stage-0 warm starts (minutes to train again)",
    "images": "decoded images (seconds to minutes to decode again)",
    "embeddings": "gallery embeddings (one encoding pass)",
    "features": "frozen vision towers' outputs (one pass over the training images and gallery)",
    "searle": "SEARLE's inverted tokens (one OTI pass)",
    "scratch": "temporary embedding files (nothing)",
}
#: the size past which a command that adds decoded images says how large the cache is;
#: CIR_HARNESS_CACHE_NOTE_GB changes it (an assumption: a tenth of a laptop's free disk)
NOTE_ENV, NOTE_DEFAULT_GB = "CIR_HARNESS_CACHE_NOTE_GB", 10.0
_noted = False


def hash_tensors(digest, tensors: dict) -> None:
    """Feed ``tensors`` (name -> tensor: a frozen encoder's weights and buffers) into ``digest`` by
    name, dtype, shape and every byte: the part of a cache key that changes with another checkpoint
    (gallery embeddings, frozen-feature tables)."""
    import torch

    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")


@dataclass(frozen=True)
class CacheEntry:
    """One cached thing: a folder (a stage-0 checkpoint, a benchmark) or a file (decoded images)."""

    kind: str
    path: Path
    bytes: int
    modified: float  # the newest file's modification time (seconds since the epoch)


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    """Every entry under the cache, by kind then name; a kind's folder missing is no entry."""
    root = root or cache_dir()
    entries = []
    for kind in sorted(KINDS):
        folder = root / kind
        if folder.is_dir():
            entries += [_entry(kind, path) for path in sorted(folder.iterdir()) if not path.name.startswith(".")]
    return entries


def _entry(kind: str, path: Path) -> CacheEntry:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    stats = [p.stat() for p in files]
    return CacheEntry(kind, path, sum(s.st_size for s in stats),
                      max((s.st_mtime for s in stats), default=path.stat().st_mtime))


def totals(entries: Iterable[CacheEntry]) -> dict[str, tuple[int, int]]:
    """Kind -> (entries, bytes)."""
    found: dict[str, tuple[int, int]] = {}
    for entry in entries:
        count, size = found.get(entry.kind, (0, 0))
        found[entry.kind] = (count + 1, size + entry.bytes)
    return found


def prune(entries: Iterable[CacheEntry], kinds: set[str], older_than_days: float | None = None,
          dry_run: bool = False) -> list[CacheEntry]:
    """Remove the entries of ``kinds`` not written for ``older_than_days`` (all of them when
    None); return what was (or, with ``dry_run``, would be) removed."""
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    chosen = [e for e in entries if e.kind in kinds and (cutoff is None or e.modified < cutoff)]
    for entry in [] if dry_run else chosen:
        if entry.path.is_dir():
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            entry.path.unlink(missing_ok=True)
    return chosen


def note_threshold() -> float:
    """The size in bytes past which the cache's size is noted (CIR_HARNESS_CACHE_NOTE_GB)."""
    try:
        return float(os.environ.get(NOTE_ENV, NOTE_DEFAULT_GB)) * 2**30
    except ValueError:
        return NOTE_DEFAULT_GB * 2**30


def note_size(echo: Callable[[str], None] | None = None) -> None:
    """Say, once per process, how large the cache is when it has grown past the threshold, and
    how to see and free it; called where the decoded-image cache adds a file."""
    global _noted
    if _noted:
        return
    entries = cache_entries()
    size = sum(e.bytes for e in entries)
    if size < note_threshold():
        return
    _noted = True
    images = totals(entries).get("images", (0, 0))[1]
    (echo or log.warning)(f"the cache at {cache_dir()} holds {size / 2**30:.1f} GiB ({images / 2**30:.1f} GiB of "
                          "decoded images); `harness cache` lists it, `harness cache --prune images` frees the "
                          f"decoded images ({NOTE_ENV} sets when this is said)")


def gib(size: int) -> str:
    """Bytes as GiB, or MiB below one GiB."""
    return f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
