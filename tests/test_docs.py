"""The docs' code runs: the method in docs/adding_a_method.md registers, builds and trains."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import torch

from harness.data.cirr import load_cirr_split
from harness.experiments.config import RunConfig
from harness.methods.registry import build_run_method, get_method
from harness.training.loop import TrainConfig, train
from tests import stand_ins

from .conftest import REPO


def test_the_method_in_adding_a_method_trains(tiny_benchmark: Path, tmp_path: Path):
    text = (REPO / "docs" / "adding_a_method.md").read_text(encoding="utf-8")
    [code] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    module = tmp_path / "gated_sum.py"
    module.write_text(code, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("docs_gated_sum", module)
    loaded = importlib.util.module_from_spec(spec)
    sys.modules["docs_gated_sum"] = loaded
    spec.loader.exec_module(loaded)
    assert get_method("gated_sum").family == "late_fusion"

    split = load_cirr_split(tiny_benchmark, "train")
    clip = stand_ins.save_clip(tmp_path / "clip")  # a pretrained CLIP, not stage 0's (minutes to build)
    config = RunConfig.model_validate({"experiment": "docs", "method": {
        "name": "gated_sum", "params": {"backbone": {"source": "pretrained", "vision_dir": str(clip)}}}})
    method = build_run_method(config, split)
    before = float(method.gate.detach())
    summary = train(method, split, TrainConfig(max_steps=2, batch_size=16, checkpoint=False), seed=0, progress=False)
    assert summary.steps == 2 and float(method.gate.detach()) != before
    assert [name for name, p in method.named_parameters() if p.requires_grad] == ["gate"]
    with torch.no_grad():
        query = method.encode_query(split.images.load([split.triplets[0].reference]), [split.triplets[0].caption])
    assert torch.allclose(query.norm(dim=-1), torch.ones(1))
