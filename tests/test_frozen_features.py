"""The frozen-feature cache (issue 37): a run fed from it equals one computed without it, bit for bit."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionModel
from typer.testing import CliRunner

from harness.backbones import feature_table
from harness.backbones.feature_table import computed, ensure_table, exactness, table_key
from harness.backbones.vision import TINY_MEAN, TINY_STD, VisionTower, tiny_vision_config
from harness.cli import app
from harness.core.device import autocast
from harness.evaluation.results import read_result

from .conftest import TINY_LVLM, write_yaml

FROZEN_LVLM = """
experiment: frozen""" + TINY_LVLM + """train: {max_steps: 6, batch_size: 16, num_threads: 2}
tracking: {enabled: false}
"""


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[dict, Path]:
    config = write_yaml(tmp_path / "frozen.yaml", FROZEN_LVLM)
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / name), "--quiet", *extra])
    assert result.exit_code == 0, result.output
    [run] = (tmp_path / name / "frozen" / "runs").iterdir()
    return json.loads((run / "result.json").read_text()), run


def test_a_run_fed_from_the_frozen_feature_cache_equals_one_computed_without_it(tmp_path: Path, monkeypatch):
    served: list[int] = []
    lookup = feature_table.FeatureTable.lookup

    def counted(self, images):
        found = lookup(self, images)
        served.append(0 if found is None else len(images))
        return found

    monkeypatch.setattr(feature_table.FeatureTable, "lookup", counted)
    off, off_dir = _run(tmp_path, "off", "--set", "train.frozen_features=off")
    assert not served and off["train"]["frozen_features"]["used"] is False
    on, on_dir = _run(tmp_path, "on")
    assert off_dir.name == on_dir.name  # the setting cannot change a result, so it is not in the run id
    record = on["train"]["frozen_features"]
    assert record["used"] is True and record["images"] > 100  # built here, or by an earlier test of the session
    # every training step's references and targets and the whole gallery were read from the table
    assert sum(served) >= 6 * 16 * 2 + on["num_gallery"]
    assert on["metrics"] == off["metrics"]
    with gzip.open(on_dir / "rankings.jsonl.gz", "rt") as a, gzip.open(off_dir / "rankings.jsonl.gz", "rt") as b:
        assert a.read() == b.read()
    assert _losses(on_dir) == _losses(off_dir)
    assert read_result(on_dir / "result.json").timings["gallery_feature_table"] == 1.0


def _losses(run: Path) -> list[float]:
    """Each step's training loss (metrics.jsonl: the step log, wall times aside)."""
    return [json.loads(line)["train/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tower(seed: int = 0, image_size: int = 32, **settings) -> VisionTower:
    torch.manual_seed(seed)
    config = tiny_vision_config(hidden=32, layers=1, heads=2, image_size=image_size, patch_size=8)
    for name, value in settings.items():
        setattr(config, name, value)
    return VisionTower(CLIPVisionModel(config), image_size, TINY_MEAN, TINY_STD).requires_grad_(False)


def test_the_table_key_changes_with_the_checkpoint_precision_and_image_size():
    cpu = torch.device("cpu")
    tower = _tower()
    key = table_key(tower, 32, "squash", cpu, "fp32")
    assert key == table_key(_tower(), 32, "squash", cpu, "fp32")
    assert key != table_key(_tower(seed=1), 32, "squash", cpu, "fp32")  # another stage-0 checkpoint
    assert key != table_key(tower, 32, "squash", cpu, "bf16")
    assert key != table_key(tower, 48, "squash", cpu, "fp32")
    assert key != table_key(tower, 32, "pad", cpu, "fp32")
    assert key != table_key(tower, 32, "squash", cpu, "fp32", ("/data/cirr:val:gallery:2297",))  # another dataset


def test_a_table_serves_only_the_images_and_autocast_it_was_built_for(monkeypatch):
    cpu = torch.device("cpu")
    tower = _tower()
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    other = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    key = table_key(tower, 32, "squash", cpu, "fp32")
    table = ensure_table(key, tower, lambda: [images, images[:3]], cpu, "fp32")
    assert len(table.index) == 10  # the repeated images are held once
    monkeypatch.setattr(feature_table, "_build", lambda *_: pytest.fail("a built table is built again"))
    assert ensure_table(key, tower, lambda: [images], cpu, "fp32").index == table.index  # read back, not rebuilt
    tower.feature_table = table
    with torch.no_grad():
        assert torch.equal(tower(images[[4, 1, 1]]), tower.compute(images[[4, 1, 1]]))
        assert table.lookup(torch.cat([images[:1], other])) is None  # one image it lacks: the batch is computed
        assert torch.equal(tower(torch.cat([images[:1], other])), tower.compute(torch.cat([images[:1], other])))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert table.lookup(images[:2]) is None
    with computed(tower):
        assert tower.feature_table is None
    assert tower.feature_table is table
    tower.model.embeddings.patch_embedding.weight.requires_grad_(True)  # a tower that trains reads no table
    assert tower(images[:2]).requires_grad


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_tower_whose_outputs_depend_on_train_mode_gets_no_table(dropout: float):
    cpu = torch.device("cpu")
    tower = _tower(attention_dropout=dropout)
    images = torch.randint(0, 256, (9, 3, 32, 32), dtype=torch.uint8)
    state = torch.random.get_rng_state()
    why = exactness(tower, images, cpu, "fp32")
    assert torch.equal(torch.random.get_rng_state(), state)  # the check draws nothing from the run's stream
    assert (why is None) == (dropout == 0.0)
    if why is not None:
        assert "train mode" in why


def test_a_table_built_under_bf16_autocast_serves_its_bits_there_only():
    """Under bf16 autocast the tower's outputs are stored as computed (bf16 as its raw 16 bits when
    they are bf16) and served under that autocast alone."""
    cpu = torch.device("cpu")
    tower = _tower(seed=2)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    tower.feature_table = ensure_table(table_key(tower, 32, "squash", cpu, "bf16"), tower, lambda: [images], cpu,
                                         "bf16")
    with torch.no_grad(), autocast(cpu, "bf16"):
        served, computed_now = tower(images), tower.compute(images)
    assert served.dtype == computed_now.dtype and torch.equal(served, computed_now)
    assert tower.feature_table.lookup(images) is None  # outside the autocast it was built under
