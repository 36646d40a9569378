"""Paths that come from users: confine them to their root, find the cache directory."""

from __future__ import annotations

import os
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
