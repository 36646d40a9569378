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


def _torchrun(target: Path, output: Path, command_name: str, *settings: str) -> subprocess.CompletedProcess:
    """`harness run CONFIG --output OUTPUT` or `harness eval RUN` on two gloo ranks."""
    where = ["--output", str(output)] if command_name == "run" else []
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "harness",
               command_name, str(target), "--quiet", *where, *settings]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


#: Training on two ranks sums each gradient in another order than one process, so the losses and
#: what the trained model computes agree to float rounding, never bit for bit; Adam turns the
#: rounding of a near-zero gradient into a step of up to the learning rate (weights differed by up to
#: 1.4e-4 after 8 steps), so the weights are not the thing to compare, their embeddings are (lowest
#: cosine measured on the AMD EPYC: 0.999998). A near-tie between two gallery images may flip (an AVX2
#: CPU flipped one of 40 queries), so the trained metrics are not compared either. Evaluation sharding
#: adds no reordered sum: one checkpoint on one and on two ranks gives identical rankings.
LOSS_RTOL, EMBEDDING_COSINE = 1e-5, 0.9999


def test_torchrun_with_two_cpu_ranks_trains_as_one_process_and_evaluates_identically(tmp_path: Path):
    """Training shards each global batch over two gloo ranks (gathered negatives, averaged
    gradients, global batch statistics): the losses and trained weights of one process, to float
    rounding; and again with each rank's share in micro-batches (GradCache over gathered
    negatives). Evaluation deals whole batches to the ranks and gathers the embeddings (SPRC's as
    [G, M, D]): one process's checkpoint evaluated on two ranks gives its rankings and metrics
    exactly."""
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.evaluation.results import read_rankings

    config = write_yaml(tmp_path / "ddp.yaml", _experiment("cir_lvlm", "sprc"))
    two = _torchrun(config, tmp_path / "two", "run", "--set", "tracking.enabled=true")
    one = CliRunner().invoke(app, ["run", str(config), "--quiet", "--output", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    single, sharded = _results(tmp_path / "one"), _results(tmp_path / "two")
    assert sorted(single) == sorted(sharded) == ["cir_lvlm", "sprc"]
    for method in single:
        assert sharded[method]["environment"]["hardware"]["world_size"] == 2
        assert single[method]["environment"]["hardware"]["world_size"] == 1
        assert sharded[method]["train"]["steps"] == single[method]["train"]["steps"] == 8
        assert sharded[method]["train"]["loss_per_epoch"] == pytest.approx(single[method]["train"]["loss_per_epoch"],
                                                                           rel=LOSS_RTOL)
        _assert_same_embeddings(_run_dir(tmp_path / "two", method), _run_dir(tmp_path / "one", method))
    usage = sharded["cir_lvlm"]["method_statistics"]["prompt_usage"]
    assert sum(usage) == sharded["cir_lvlm"]["num_queries"] == 40  # summed over ranks
    assert two.stdout.count("[1/2] cir_lvlm") == 1  # rank 0 alone prints and writes
    _assert_one_step_log(tmp_path / "two" / "ddp", steps=8)
    for method in single:  # the same checkpoint evaluated by one process and by two ranks
        run = _run_dir(tmp_path / "one", method)
        _torchrun(run, tmp_path / "unused", "eval", "--split", "val")
        assert json.loads((run / "eval" / "val" / "result.json").read_text())["metrics"] == single[method]["metrics"]
        assert read_rankings(run / "eval" / "val" / "rankings.jsonl.gz") == read_rankings(run / "rankings.jsonl.gz")
    only_lvlm = write_yaml(tmp_path / "micro.yaml", _experiment("cir_lvlm"))
    _torchrun(only_lvlm, tmp_path / "micro", "run", "--set", "train.micro_batch_size=4")
    cached = _results(tmp_path / "micro")["cir_lvlm"]  # GradCache on each rank's share, negatives gathered
    assert cached["train"]["loss_per_epoch"] == pytest.approx(single["cir_lvlm"]["train"]["loss_per_epoch"],
                                                              rel=LOSS_RTOL)
    _assert_same_embeddings(_run_dir(tmp_path / "micro", "cir_lvlm"), _run_dir(tmp_path / "one", "cir_lvlm"))


def _run_dir(output: Path, method: str) -> Path:
    [found] = [p.parent for p in (output / "ddp" / "runs").glob("*/result.json")
               if json.loads(p.read_text())["method"] == method]
    return found


def _assert_same_embeddings(run: Path, reference: Path, queries: int = 16) -> None:
    """Query and target embeddings of two runs' checkpoints agree in cosine to EMBEDDING_COSINE."""
    from harness.experiments.finished_run import read_run_config, rebuild_run

    encoded = []
    for folder in (run, reference):
        method, split = rebuild_run(folder, read_run_config(folder), progress=False)
        method.eval()
        triplets = split.triplets[:queries]
        with torch.no_grad():
            references = split.images.load([t.reference for t in triplets])
            query = method.encode_query(references, [t.caption for t in triplets])
            target = method.encode_target(split.images.load([t.target for t in triplets]))
        encoded.append((query.reshape(len(triplets), -1), target.reshape(len(triplets), -1)))
    for ours, theirs in zip(*encoded, strict=True):
        cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
        assert float(cosine.min()) >= EMBEDDING_COSINE, cosine
