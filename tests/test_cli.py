"""The CLI's informational commands and the benchmark generator command."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from harness import __version__
from harness.cli import app


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_every_command_has_help():
    for command in (["run"], ["list"], ["data"], ["data", "synthetic"], ["data", "check"]):
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
        assert "Usage" in result.stdout and len(result.stdout.splitlines()) > 5


def test_list_shows_methods_with_parameters_and_datasets():
    text = CliRunner().invoke(app, ["list"]).stdout
    assert "image_only  [reference]" in text and "embed_dim = 256" in text and "synthetic" in text and "cirr" in text
    payload = json.loads(CliRunner().invoke(app, ["list", "--json"]).stdout)
    assert {m["name"] for m in payload["methods"]} >= {"image_only", "text_only", "sum"}
    assert payload["methods"][0]["parameters"]


def test_data_synthetic_writes_a_benchmark_and_refuses_to_overwrite(tmp_path: Path):
    out = tmp_path / "bench"
    result = CliRunner().invoke(app,
                                ["data", "synthetic", "--out", str(out), "--size", "tiny", "--seed", "1",
                                 "--image-size", "32"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "synthetic.json").read_text())
    assert manifest["counts"]["train"]["queries"] == 200 and manifest["config"]["image_size"] == 32
    again = CliRunner().invoke(app, ["data", "synthetic", "--out", str(out), "--size", "tiny"])
    assert again.exit_code == 2 and "exists" in again.stderr
    check = CliRunner().invoke(app, ["data", "check", "--dataset", "synthetic", "--root", str(out)])
    assert check.exit_code == 0 and "synthetic/test1: 50 queries (0 with targets)" in check.stdout
