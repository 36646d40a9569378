"""Paths that come from users: confine them to their root, find the cache directory."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError

CACHE_ENV = "CIR_HARNESS_CACHE"


def cache_dir() -> Path:
    """The harness cache (generated benchmarks, pretrained backbones, embeddings).

    ``$CIR_HARNESS_CACHE`` when set, else ``~/.cache/cir-harness``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cir-harness")


def confined(root: Path, relative: str, *, file: str | Path, field: str) -> Path:
    """``root / relative``, refused when ``relative`` is absolute or climbs out of ``root``."""
    if os.path.isabs(relative) or relative.startswith(("/", "\\")) or ":" in relative.split("/")[0]:
        raise HarnessError(f"path {relative!r} is absolute", file=file, field=field,
                           fix="use a path relative to the dataset root")
    path = (root / relative).resolve()
    base = root.resolve()
    if path != base and base not in path.parents:
        raise HarnessError(f"path {relative!r} climbs out of the dataset root {root}", file=file, field=field,
                           fix="keep every image inside the dataset root")
    return path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created when absent) for the block: concurrent
    processes building one cache entry (``harness run --jobs``, sweep workers) take turns, and
    the later ones find it built. A no-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
