"""`harness run` under torchrun: sharding covers every item once, and two CPU ranks (gloo) end
with the metrics of one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.core.distributed import World, batch_starts, shard_rows
from harness.core.errors import HarnessError

from .conftest import TINY_LVLM, write_yaml


@pytest.mark.parametrize("count,batch_size,size", [(0, 4, 2), (7, 4, 2), (8, 4, 2), (9, 4, 3), (100, 16, 3), (5, 8, 4)])
def test_evaluation_batches_cover_every_item_once(count: int, batch_size: int, size: int):
    covered = []
    for rank in range(size):
        for start in batch_starts(count, batch_size, World(rank, size)):
            covered.extend(range(start, min(count, start + batch_size)))
    assert sorted(covered) == list(range(count))  # nothing dropped, nothing twice


def test_training_batches_split_into_equal_contiguous_shares():
    rows = torch.arange(12)
    shares = [shard_rows(rows, World(rank, 3)) for rank in range(3)]
    assert torch.equal(torch.cat(shares), rows) and {len(s) for s in shares} == {4}
    with pytest.raises(HarnessError, match="multiple of 3"):
        shard_rows(torch.arange(10), World(0, 3))


def _experiment(*methods: str) -> str:
    """CIR-LVLM and SPRC (M vectors per gallery image; dropout off, its masks depend on each
    rank's share) in one grid, so one torchrun launch covers both kinds of gallery. fp32:
    bf16's rounding depends on the shapes each rank multiplies, so it agrees only to ~1e-3."""
    from .test_sprc import PRETRAINING, QFORMER, STAGE0, TINY

    base = yaml.safe_load(TINY_LVLM)
    lvlm = {"name": "cir_lvlm", "params": {**base.pop("method")["params"], "pool_size": 4}}
    sprc = {"name": "sprc", "params": {"backbone": TINY, "stage0": STAGE0, "qformer": {**QFORMER, "dropout": 0.0},
                                       "qformer_pretraining": PRETRAINING}}
    grid = [m for m in (lvlm, sprc) if m["name"] in methods]
    return yaml.safe_dump({"experiment": "ddp", **base, "grid": {"method": grid},
                           "train": {"max_steps": 8, "batch_size": 16, "num_threads": 1, "precision": "fp32"},
                           "eval": {"batch_size": 16, "precision": "fp32"}, "tracking": {"enabled": False}})


def _results(output: Path) -> dict[str, dict]:
    """result.json of each run under ``output``, by method."""
    found = [json.loads(p.read_text()) for p in (output / "ddp" / "runs").glob("*/result.json")]
    return {r["method"]: r for r in found}


def _assert_one_step_log(output: Path, steps: int) -> None:
    """Rank 0 alone wrote each run's per-step log and its mlflow curve: each step once."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    nested = {r.data.tags["method"]: r for r in client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
              if "mlflow.parentRunId" in r.data.tags}
    assert sorted(nested) == ["cir_lvlm", "sprc"]
    for run_dir in (output / "runs").iterdir():
        logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert logged == list(range(1, steps + 1))
    for run in nested.values():
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, steps + 1))


def _torchrun(config: Path, output: Path, *settings: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "harness",
               "run", str(config), "--quiet", "--output", str(output), *settings]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_torchrun_with_two_cpu_ranks_gives_the_metrics_of_one_process(tmp_path: Path):
    """Training shards each global batch over two gloo ranks (gathered negatives, averaged
    gradients, global batch statistics), evaluation deals whole batches to the ranks and
    gathers the embeddings (SPRC's as [G, M, D]): the same metrics, prompt usage and (to float
    rounding) losses as one process; and again with each rank's share computed in micro-batches
    (GradCache over gathered negatives)."""
    from typer.testing import CliRunner

    from harness.cli import app

    config = write_yaml(tmp_path / "ddp.yaml", _experiment("cir_lvlm", "sprc"))
    two = _torchrun(config, tmp_path / "two", "--set", "tracking.enabled=true")
    one = CliRunner().invoke(app, ["run", str(config), "--quiet", "--output", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    single, sharded = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert sorted(single) == sorted(sharded) == ["cir_lvlm", "sprc"]
    for method in single:
        assert sharded[method]["environment"]["hardware"]["world_size"] == 2
        assert single[method]["environment"]["hardware"]["world_size"] == 1
        assert sharded[method]["metrics"] == single[method]["metrics"], method
        assert sharded[method]["train"]["steps"] == single[method]["train"]["steps"] == 8
        assert sharded[method]["train"]["loss_per_epoch"] == pytest.approx(single[method]["train"]["loss_per_epoch"],
                                                                           rel=1e-5)
    usage = sharded["cir_lvlm"]["method_statistics"]["prompt_usage"]
    assert usage == single["cir_lvlm"]["method_statistics"]["prompt_usage"]
    assert sum(usage) == sharded["cir_lvlm"]["num_queries"] == 40  # summed over ranks
    assert two.stdout.count("[1/2] cir_lvlm") == 1  # rank 0 alone prints and writes
    _assert_one_step_log(tmp_path / "two" / "ddp", steps=8)
    only_lvlm = write_yaml(tmp_path / "micro.yaml", _experiment("cir_lvlm"))
    _torchrun(only_lvlm, tmp_path / "micro", "--set", "train.micro_batch_size=4")
    cached = _results(tmp_path / "micro")["cir_lvlm"]  # GradCache on each rank's share, negatives gathered
    assert cached["metrics"] == single["cir_lvlm"]["metrics"]
    assert cached["train"]["loss_per_epoch"] == pytest.approx(single["cir_lvlm"]["train"]["loss_per_epoch"], rel=1e-5)
