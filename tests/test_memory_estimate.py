"""`harness plan`'s memory estimate against what a full-depth step really keeps for backward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.core.device import autocast
from harness.data.cirr import load_cirr_split
from harness.experiments.config import RunConfig, RunSpec
from harness.measure.memory_estimate import estimate_run, probe_batch, sizes
from harness.methods.registry import build_run_method
from harness.training.activation_memory import SavedTensors, enable_gradient_checkpointing
from tests import stand_ins

from .conftest import write_yaml


@pytest.fixture(scope="module")
def split(tiny_benchmark: Path):
    return load_cirr_split(tiny_benchmark, "train")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stand-ins deeper than the probes: Qwen2.5-VL with 5 LM layers and 3 vision blocks (bf16),
    a CLIP with 3 layers per tower (fp16)."""
    root = tmp_path_factory.mktemp("deep")
    return {"qwen2_5_vl": stand_ins.save_qwen_vl(root / "qwen", "qwen2_5_vl", torch.bfloat16, layers=5, vision_depth=3),
            "clip": stand_ins.save_clip(root / "clip", torch.float16, layers=3)}


def _spec(method: dict, **train) -> RunSpec:
    config = RunConfig.model_validate({"experiment": "plan", "dataset": {"name": "synthetic"}, "method": method,
                                       "train": {"batch_size": 12} | train})
    return RunSpec(config, {}, "plan")


def _methods(checkpoints: dict[str, Path]) -> dict[str, dict]:
    return {
        "cir_lvlm on Qwen2.5-VL (LoRA)": {"name": "cir_lvlm", "params": {
            "backbone": {"source": "pretrained", "lvlm_dir": str(checkpoints["qwen2_5_vl"]), "lora_rank": 4},
            "connector": {"num_queries": 4, "heads": 2}, "embed_dim": 16}},
        "sum on CLIP (both towers fine-tuned)": {"name": "sum", "params": {
            "backbone": {"source": "pretrained", "vision_dir": str(checkpoints["clip"])}}},
    }


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
@pytest.mark.parametrize("method", ["cir_lvlm on Qwen2.5-VL (LoRA)", "sum on CLIP (both towers fine-tuned)"])
def test_the_estimate_is_within_a_quarter_of_the_measured_saved_bytes(method: str, checkpointing: bool, checkpoints,
                                                                      split):
    spec = _spec(_methods(checkpoints)[method], gradient_checkpointing=checkpointing)
    estimate = estimate_run(spec, split, world_size=1, precision="bf16")
    assert estimate.depths == ({"language": 5, "vision": 3} if "Qwen" in method else {"language": 3, "vision": 3})

    full = build_run_method(spec.config, split).train()
    full.begin_step(0, 1)
    if checkpointing:
        enable_gradient_checkpointing(full)
    batch = probe_batch(full, split, spec.config.dataset.image_size, estimate.items_per_gpu)
    with autocast("cpu", "bf16"), SavedTensors(full) as saved:
        full.loss(batch)
    assert saved.bytes > 0
    assert 0.75 < estimate.activation_bytes / saved.bytes < 1.25
    measured = sizes(full, 0.0)
    assert (estimate.measured.parameters, estimate.measured.trainable) == (measured.parameters, measured.trainable)
    assert estimate.measured.frozen_bytes == pytest.approx(measured.frozen_bytes, rel=1e-6)


def test_more_gpus_and_micro_batches_shrink_the_activations_per_gpu(checkpoints, split):
    method = _methods(checkpoints)["cir_lvlm on Qwen2.5-VL (LoRA)"]
    one = estimate_run(_spec(method), split, world_size=1)
    four = estimate_run(_spec(method), split, world_size=4)
    micro = estimate_run(_spec(method, micro_batch_size=2), split, world_size=1)
    assert (one.items_per_gpu, four.items_per_gpu, micro.items_per_gpu) == (12, 3, 2)
    assert four.activation_bytes == pytest.approx(one.activation_bytes / 4)
    assert four.weight_bytes == one.weight_bytes  # each GPU holds a whole copy
    assert one.optimizer_bytes == 8 * one.measured.trainable


def test_harness_plan_prints_a_row_per_distinct_run(checkpoints, tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lvlm = json.dumps(_methods(checkpoints)["cir_lvlm on Qwen2.5-VL (LoRA)"])
    config = write_yaml(tmp_path / "plan.yaml", f"""
experiment: plan
dataset: {{name: synthetic, synthetic: {{seed: 5, num_train: 64, num_val: 16, num_test: 8}}}}
method: {lvlm}
train: {{batch_size: 16}}
grid:
  method.params.pool_size: [2, 4]
seeds: [0, 1]
""")
    result = CliRunner().invoke(app, ["plan", str(config), "--gpus", "2"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| method.params.pool_size=")]
    assert len(rows) == 2 and all("| 8 |" in row for row in rows)  # two grid points, seeds folded; 16 / 2 GPUs
    result = CliRunner().invoke(app, ["plan", str(config), "--json", "--set", "train.micro_batch_size=4"])
    assert [row["items_per_gpu"] for row in json.loads(result.stdout)] == [4, 4]  # progress is on stderr
    assert "[1/2] planning method.params.pool_size=2" in result.stderr
    result = CliRunner().invoke(app, ["plan", str(config), "--precision", "fp16"])
    assert result.exit_code == 2 and "--precision" in result.output
    missing = {"name": "sprc", "params": {"backbone": {"source": "pretrained", "blip2_dir": str(tmp_path / "none")}}}
    grid = f"grid={{method: [{lvlm}, {json.dumps(missing)}]}}"
    result = CliRunner().invoke(app, ["plan", str(config), "--set", grid])
    assert result.exit_code == 1, result.output  # the plannable run is planned, the other listed
    assert len([line for line in result.stdout.splitlines() if line.startswith("| cir_lvlm")]) == 1
    assert "NOT PLANNED sprc" in result.stderr and "method.params.backbone.blip2_dir" in result.stderr
    assert "1 of 2 runs could not be planned" in result.stderr
