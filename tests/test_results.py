"""Results JSON schema and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text
from harness.evaluation.results import (
    RunResult,
    read_rankings,
    read_result,
    write_rankings,
    write_result,
)


def _result(**changes) -> RunResult:
    fields = dict(
        run_id="abc123def456", experiment="demo", label="method=sum", method="sum", dataset="synthetic", split="val",
        seed=0, metrics={"recall_at_1": 12.5}, num_queries=8, num_gallery=72,
        protocol={"remove_reference": True}, parameters={"total": 10, "trainable": 10},
        train={"steps": 3}, timings={"encode_and_score_ms_per_query": 0.5}, config={"seed": 0},
        environment={"git_commit": None}, created_at="2026-11-27T00:00:00+00:00",
    )
    fields.update(changes)
    return RunResult(**fields)


def test_round_trip_and_schema_version(tmp_path: Path):
    path = tmp_path / "result.json"
    write_result(path, _result())
    data = json.loads(path.read_text())
    assert data["schema_version"] == 2
    assert {"metrics", "config", "seed", "environment", "timings", "parameters", "protocol"} <= set(data)
    assert read_result(path) == _result()


def test_schema_refuses_unknown_version_fields_and_broken_files_in_one_line(tmp_path: Path):
    path = tmp_path / "result.json"
    write_result(path, _result())
    data = json.loads(path.read_text())
    for broken, field in (({**data, "schema_version": 3}, "schema_version"), ({**data, "surprise": 1}, "surprise"),
                          ({**data, "protocol": {"gallery": "everything"}}, "protocol.gallery")):
        path.write_text(json.dumps(broken))
        with pytest.raises(HarnessError) as error:
            read_result(path)
        assert error.value.file == str(path) and error.value.field == field and "\n" not in str(error.value)
    path.write_text('{"schema_version": 2, "run_id": ')  # cut off mid-write by something else
    with pytest.raises(HarnessError, match="not JSON, cannot be read as a result.*JSONDecodeError"):
        read_result(path)


def test_a_schema_1_result_is_upgraded(tmp_path: Path):
    """A result.json written by the schema-1 harness (committed as it was written) reads as
    schema 2 with its protocol typed, and `harness score` can use it."""
    fixture = Path(__file__).parent / "fixtures" / "results" / "v1_result.json"
    assert json.loads(fixture.read_text())["schema_version"] == 1
    result = read_result(fixture)
    assert result.schema_version == 2 and result.protocol.preset == "cirr" and result.protocol.remove_reference
    assert result.protocol.eval_config().ks == [1, 5, 10, 50] and result.metrics["recall_at_1"] >= 0
    write_result(tmp_path / "result.json", result)
    assert read_result(tmp_path / "result.json") == result


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "result.json"
    write_result(path, _result())
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("harness.core.files.os.replace", crash)
    with pytest.raises(OSError):
        write_result(path, _result(seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left behind


def test_atomic_write_text_creates_folders(tmp_path: Path):
    path = tmp_path / "a" / "b" / "file.txt"
    atomic_write_text(path, "hello")
    assert path.read_text() == "hello"


def test_rankings_round_trip_and_are_reproducible(tmp_path: Path):
    rankings = [{"pairid": 1, "top": ["a", "b"], "target_rank": 1}]
    write_rankings(tmp_path / "r1.jsonl.gz", rankings)
    write_rankings(tmp_path / "r2.jsonl.gz", rankings)
    assert read_rankings(tmp_path / "r1.jsonl.gz") == rankings
    assert (tmp_path / "r1.jsonl.gz").read_bytes() == (tmp_path / "r2.jsonl.gz").read_bytes()
