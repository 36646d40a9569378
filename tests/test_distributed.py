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

from harness.distributed import World, batch_starts, shard_rows
from harness.errors import HarnessError

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


EXPERIMENT = """
experiment: ddp""" + TINY_LVLM + """    pool_size: 4
train: {max_steps: 8, batch_size: 16, num_threads: 1, precision: fp32}
eval: {batch_size: 16, precision: fp32}
tracking: {enabled: false}
"""  # fp32: bf16's rounding depends on the shapes each rank multiplies, so it agrees only to ~1e-3


def _result(output: Path) -> dict:
    [path] = (output / "ddp" / "runs").glob("*/result.json")
    return json.loads(path.read_text())


def _assert_one_step_log(output: Path, steps: int) -> None:
    """Rank 0 alone wrote the per-step log and its mlflow curve: each step once."""
    from mlflow.tracking import MlflowClient

    [run_dir] = (output / "runs").iterdir()
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(1, steps + 1))
    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    [run] = [r for r in client.search_runs([client.get_experiment_by_name("ddp").experiment_id])
             if "mlflow.parentRunId" in r.data.tags]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, steps + 1))


def test_torchrun_with_two_cpu_ranks_gives_the_metrics_of_one_process(tmp_path: Path):
    """Training shards each global batch over two gloo ranks (gathered negatives, averaged
    gradients, global batch statistics), evaluation deals whole batches to the ranks and
    gathers the embeddings: the same metrics, prompt usage and (to float rounding) losses; and
    again with each rank's share computed in micro-batches (GradCache over gathered negatives)."""
    config = write_yaml(tmp_path / "ddp.yaml", EXPERIMENT)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    harness = [sys.executable, "-m", "harness", "run", str(config), "--quiet"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *harness[1:], "--output", str(tmp_path / "two"), "--set", "tracking.enabled=true"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([*harness, "--output", str(tmp_path / "one")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    single, sharded = _result(tmp_path / "one"), _result(tmp_path / "two")
    assert sharded["environment"]["hardware"]["world_size"] == 2 and single["environment"]["hardware"]["world_size"] == 1
    assert sharded["metrics"] == single["metrics"]
    assert sharded["method_statistics"]["prompt_usage"] == single["method_statistics"]["prompt_usage"]
    assert sum(sharded["method_statistics"]["prompt_usage"]) == sharded["num_queries"] == 40  # summed over ranks
    assert sharded["train"]["steps"] == single["train"]["steps"] == 8
    assert sharded["train"]["loss_per_epoch"] == pytest.approx(single["train"]["loss_per_epoch"], rel=1e-5)
    assert two.stdout.count("[1/1] cir_lvlm") == 1  # rank 0 alone prints and writes
    _assert_one_step_log(tmp_path / "two" / "ddp", steps=8)
    micro = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            *harness[1:], "--output", str(tmp_path / "micro"), "--set", "train.micro_batch_size=4"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert micro.returncode == 0, micro.stderr[-3000:]
    cached = _result(tmp_path / "micro")  # GradCache on each rank's share, negatives gathered over the ranks
    assert cached["metrics"] == single["metrics"]
    assert cached["train"]["loss_per_epoch"] == pytest.approx(single["train"]["loss_per_epoch"], rel=1e-5)


def test_torchrun_ranks_a_multi_vector_gallery_as_one_process(tmp_path: Path):
    """SPRC (M vectors per gallery image) under two gloo ranks: the gathered [G, M, D] gallery
    and the gathered negatives give the single process's metrics and losses (dropout off: its
    masks depend on each rank's share)."""
    from .test_sprc import EXPERIMENT as SPRC

    config = write_yaml(tmp_path / "sprc.yaml", SPRC.replace("'embed_dim': 16}", "'embed_dim': 16, 'dropout': 0.0}").replace("num_threads: 2}", "num_threads: 1, precision: fp32}")
                        .replace("eval: {batch_size: 32}", "eval: {batch_size: 8, precision: fp32}")
                        + "tracking: {enabled: false}\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    harness = [sys.executable, "-m", "harness", "run", str(config), "--quiet"]
    outputs = {}
    for name, command in (("two", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                   "2", *harness[1:]]), ("one", harness)):
        done = subprocess.run([*command, "--output", str(tmp_path / name)], capture_output=True, text=True, env=env,
                              timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        [path] = (tmp_path / name / "sprc" / "runs").glob("*/result.json")
        outputs[name] = json.loads(path.read_text())
    assert outputs["two"]["environment"]["hardware"]["world_size"] == 2
    assert outputs["two"]["metrics"] == outputs["one"]["metrics"]
    assert outputs["two"]["train"]["loss_per_epoch"] == pytest.approx(outputs["one"]["train"]["loss_per_epoch"], rel=1e-5)
