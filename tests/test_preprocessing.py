"""dataset.resize auto: each run's images are made square the way its checkpoint's own image
processor does it (harness.backbones.vision.processor_resize, harness.experiments.executor.image_resize)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.backbones.vision import processor_resize
from harness.core.errors import HarnessError
from harness.experiments.config import RunConfig
from harness.experiments.executor import image_resize
from tests import stand_ins


def test_each_checkpoints_processor_gives_its_geometry(tmp_path: Path):
    assert processor_resize(stand_ins.save_clip(tmp_path / "clip", torch.float16)) == "crop"  # CLIPImageProcessor
    assert processor_resize(stand_ins.save_llava15(tmp_path / "llava")) == "crop"  # the hf conversion's processor
    assert processor_resize(stand_ins.save_siglip(tmp_path / "siglip")) == "squash"  # fixed height x width
    assert processor_resize(stand_ins.save_qwen_vl(tmp_path / "qwen")) == "pad"  # aspect kept (dynamic resolution)
    assert processor_resize(tmp_path / "nothing-here") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(HarnessError, match="preprocessor_config.json: dataset.resize: not valid JSON"):
        processor_resize(tmp_path / "broken")


def _config(resize: str, backbone: dict) -> RunConfig:
    return RunConfig.model_validate({"experiment": "x", "dataset": {"name": "synthetic", "resize": resize},
                                     "method": {"name": "sum", "params": {"backbone": backbone}}})


def test_auto_follows_the_pretrained_checkpoint_and_an_explicit_mode_wins(tmp_path: Path):
    clip = str(stand_ins.save_clip(tmp_path / "clip", torch.float16))
    assert image_resize(_config("auto", {"source": "pretrained", "vision_dir": clip})) == "crop"
    assert image_resize(_config("auto", {})) == "squash"  # tiny backbones: no processor
    assert image_resize(_config("pad", {"source": "pretrained", "vision_dir": clip})) == "pad"
    assert _config("auto", {}).run_id() != _config("squash", {}).run_id()  # auto is a setting of its own
    assert json.loads(_config("squash", {}).model_dump_json())["dataset"]["resize"] == "squash"
