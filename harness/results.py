"""The results JSON of a run (schema-versioned) and atomic file writes.

    result = RunResult(...); write_result(run_dir / "result.json", result)
    result = read_result(run_dir / "result.json")

Results files are the source of truth for reports; mlflow mirrors them. Files are written to
a temporary file in the same folder and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


class RunResult(BaseModel):
    """One run's metrics, settings, provenance and timings."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    run_id: str
    experiment: str
    label: str = Field(description="readable grid point, e.g. 'method=sum'")
    method: str
    dataset: str
    split: str
    seed: int
    metrics: dict[str, float]
    metrics_by_edit_type: dict[str, dict[str, float]] = Field(default_factory=dict)
    metrics_by_category: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="FashionIQ: per category; `metrics` then holds the category mean")
    num_queries: int
    num_gallery: int
    protocol: dict[str, Any]
    parameters: dict[str, int]
    train: dict[str, Any]
    timings: dict[str, float]
    config: dict[str, Any]
    environment: dict[str, Any]
    created_at: str
    method_statistics: dict[str, Any] = Field(default_factory=dict, description="e.g. prompt-pool usage")
    rankings_file: str | None = None
    examples: list[dict[str, Any]] = Field(
        default_factory=list, description="a few queries: caption, reference, top-5, target and image paths (report grid)")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_result(path: Path, result: RunResult) -> None:
    atomic_write_text(path, result.model_dump_json(indent=2) + "\n")


def read_result(path: Path) -> RunResult:
    return RunResult.model_validate_json(Path(path).read_text(encoding="utf-8"))


def write_rankings(path: Path, rankings: Iterable[dict[str, Any]]) -> None:
    """Per-query rankings as gzipped JSON lines (mtime 0, so equal content gives equal bytes)."""
    lines = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in rankings)
    atomic_write_bytes(path, gzip.compress(lines.encode("utf-8"), mtime=0))


def read_rankings(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]
