"""The results JSON of a run (schema-versioned) and its per-query rankings file.

    result = RunResult(...); write_result(run_dir / "result.json", result)
    result = read_result(run_dir / "result.json")

Results files are the source of truth for reports; mlflow mirrors them. Files are written to
a temporary file in the same folder and renamed (harness.core.files), so a crash never leaves
half a file. Schema 2 types the protocol record (harness.evaluation.protocol.ProtocolRecord); a schema-1 file is read
and upgraded (its protocol dict is validated as that record). A file that is not a result
is one line naming it, the field and the fix (HarnessError), never a traceback.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_bytes, atomic_write_text, read_json_lines_gz
from harness.evaluation.protocol import ProtocolRecord

SCHEMA_VERSION = 2


class RunResult(BaseModel):
    """One run's metrics, settings, provenance and timings."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = SCHEMA_VERSION
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
    protocol: ProtocolRecord
    parameters: dict[str, int]
    train: dict[str, Any]
    timings: dict[str, float]
    config: dict[str, Any]
    environment: dict[str, Any]
    created_at: str
    method_statistics: dict[str, Any] = Field(default_factory=dict, description="e.g. prompt-pool usage")
    rankings_file: str | None = None
    learning_free: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="embedded benchmark v2: R@1 of the learning-free scorers (perfect "
        "perception, no learning) on the evaluated queries, all / joint-reading / the rest")
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="where the embeddings are taken, the prompt texts, the image preprocessing "
        "(harness.methods.base.CIRMethod.provenance); `harness score` warns where two results differ")
    examples: list[dict[str, Any]] = Field(
        default_factory=list, description="a few queries: caption, reference, top-5, target and image paths (report "
                                          "grid)")


def provenance_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys where two results' provenance differs (a key one of them lacks included)."""
    found = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += provenance_differences(left, right, f"{prefix}{key}.")
        elif left != right:
            found.append(f"{prefix}{key}")
    return found


def evaluation_of(result: RunResult) -> dict[str, str]:
    """What a result's numbers were measured on: the split, the query and gallery counts, the
    protocol and the query subset. Two runs that differ here are never averaged into one row."""
    subset = (result.config.get("eval") or {}).get("subset_file")
    return {"split": result.split, "queries": f"{result.num_queries} queries",
            "gallery": f"{result.num_gallery} gallery images", "protocol": result.protocol.model_dump_json(),
            "subset": f"subset {Path(str(subset)).name}" if subset else "all queries"}


def row_labels(results: Iterable[RunResult]) -> list[str]:
    """Each result's row in a results table: its grid point's label, with what its evaluation was
    measured on appended where runs of one label were evaluated differently (a smoke run with
    ``eval.max_queries`` beside a full one, another split or protocol), so they stay apart."""
    results = list(results)
    by_label: dict[str, list[dict[str, str]]] = {}
    for result in results:
        by_label.setdefault(result.label, []).append(evaluation_of(result))
    labels = []
    for result, evaluation in zip(results, (evaluation_of(r) for r in results), strict=True):
        differing = [key for key in evaluation if len({e[key] for e in by_label[result.label]}) > 1]
        shown = [evaluation[k] if k != "protocol" else _protocol_text(result) for k in differing]
        labels.append(f"{result.label} [{', '.join(shown)}]" if shown else result.label)
    return labels


def _protocol_text(result: RunResult) -> str:
    protocol = result.protocol
    return f"protocol {protocol.preset or protocol.gallery}, K {','.join(map(str, protocol.ks))}"


def write_result(path: Path, result: RunResult) -> None:
    atomic_write_text(path, result.model_dump_json(indent=2) + "\n")


def read_result(path: Path) -> RunResult:
    """The result at ``path``, a schema-1 file upgraded; a file that is not one is a HarnessError."""
    fix = "delete the run folder's result.json and run the same command again (the run is redone or resumed)"
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HarnessError(f"not JSON, cannot be read as a result ({type(error).__name__}: {error})", file=path,
                           fix=fix) from None
    if isinstance(data, dict) and data.get("schema_version") == 1:
        data = upgrade_v1(data)
    try:
        return RunResult.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise HarnessError(f"not a result of schema {SCHEMA_VERSION}: {first['msg']}", file=path, field=where,
                           fix=fix) from None


def upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """A schema-1 result as schema 2: the same fields, its protocol dict now a typed record."""
    return {**data, "schema_version": 2}


def write_rankings(path: Path, rankings: Iterable[dict[str, Any]]) -> None:
    """Per-query rankings as gzipped JSON lines (mtime 0, so equal content gives equal bytes)."""
    lines = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in rankings)
    atomic_write_bytes(path, gzip.compress(lines.encode("utf-8"), mtime=0))


def read_rankings(path: Path) -> list[dict[str, Any]]:
    """A rankings file's entries; a truncated or foreign file is a HarnessError naming it."""
    return read_json_lines_gz(path, fix="re-evaluate the run (harness eval RUN_DIR --split SPLIT) or run it again "
                              "with --overwrite always; the rankings cannot be rebuilt from result.json")
