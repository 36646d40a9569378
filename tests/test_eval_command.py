"""`harness eval RUN --split S`: a finished run's checkpoint evaluated on another split, kept
beside the run, read by `harness score` and `harness submit`, the run's own result untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.evaluation.results import read_result

from .conftest import EXPERIMENT, write_yaml

ONE_RUN = EXPERIMENT.replace("  method.name: [image_only, sum]\n", "  method.name: [sum]\n").replace(
    "tiny", "eval_tiny").replace("epochs: 2", "epochs: 1")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    config = write_yaml(root / "eval.yaml", ONE_RUN)
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(root / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    [run] = (root / "out" / "eval_tiny" / "runs").iterdir()
    return run


def test_the_checkpoint_evaluated_again_on_its_own_split_gives_the_runs_metrics(run_dir: Path):
    before = (run_dir / "result.json").read_bytes()
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--split", "val", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "-> " in result.output and "eval/val" in result.output
    again = read_result(run_dir / "eval" / "val" / "result.json")
    assert again.metrics == read_result(run_dir / "result.json").metrics
    assert (again.run_id, again.split) == (run_dir.name, "val")
    assert (run_dir / "result.json").read_bytes() == before  # the run's own result is untouched
    scored = CliRunner().invoke(app, ["score", str(run_dir / "eval" / "val")])
    assert scored.exit_code == 0, scored.output


def test_test1_is_evaluated_beside_the_run_and_submitted(run_dir: Path, tmp_path: Path):
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--split", "test1", "--quiet"])
    assert result.exit_code == 0, result.output
    folder = run_dir / "eval" / "test1"
    assert read_result(folder / "result.json").split == "test1"
    submitted = CliRunner().invoke(app, ["submit", str(folder), "--out", str(tmp_path / "submission")])
    assert submitted.exit_code == 0, submitted.output
    written = sorted(p.name for p in (tmp_path / "submission").iterdir())
    assert written and all(name.endswith(".json") for name in written)
    assert read_result(run_dir / "result.json").split == "val"


def test_a_run_without_its_checkpoint_or_with_a_broken_result_is_refused_in_one_line(run_dir: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "checkpoints")
    result = CliRunner().invoke(app, ["eval", str(copy), "--split", "val"])
    assert result.exit_code == 2 and "keep_checkpoint" in result.output and "Traceback" not in result.output
    (copy / "result.json").write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(app, ["eval", str(copy), "--split", "val"])
    assert result.exit_code == 2 and "result.json: not JSON" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "nowhere"), "--split", "val"])
    assert result.exit_code == 2 and "no config.yaml here" in result.output


def test_a_smoke_runs_query_limit_is_not_inherited_by_another_split_and_set_changes_eval(tmp_path: Path):
    """A run made with eval.max_queries evaluates test1 whole (and says so), so submit finds
    every query; --set changes eval.* settings and refuses anything else in one line."""
    config = write_yaml(tmp_path / "smoke.yaml", ONE_RUN + "eval: {batch_size: 64, max_queries: 4}\n")
    config.write_text(config.read_text().replace("eval: {batch_size: 64}\n", ""))
    made = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out"), "--quiet"])
    assert made.exit_code == 0, made.output
    [run] = (tmp_path / "out" / "eval_tiny" / "runs").iterdir()
    assert read_result(run / "result.json").num_queries == 4
    whole = CliRunner().invoke(app, ["eval", str(run), "--split", "test1", "--quiet"])
    assert whole.exit_code == 0, whole.output
    assert "eval.max_queries (4) is for val: test1 is evaluated whole" in whole.output
    assert read_result(run / "eval" / "test1" / "result.json").num_queries == 8  # every test1 query
    submitted = CliRunner().invoke(app, ["submit", str(run / "eval" / "test1"), "--out", str(tmp_path / "sub")])
    assert submitted.exit_code == 0, submitted.output
    limited = CliRunner().invoke(app, ["eval", str(run), "--split", "val", "--set", "eval.max_queries=10", "--quiet"])
    assert limited.exit_code == 0, limited.output
    assert read_result(run / "eval" / "val" / "result.json").num_queries == 10
    refused = CliRunner().invoke(app, ["eval", str(run), "--split", "val", "--set", "train.lr=1"])
    assert refused.exit_code == 2 and "--set" in refused.stderr and "eval.*" in refused.stderr, refused.output
