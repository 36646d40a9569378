"""The paper configs as a researcher runs them, on checkpoints saved the way they ship: every
method of ablations/paper/cirr.yaml trains and evaluates from tiny Qwen2-VL, Qwen2.5-VL (bf16
and fp16), LLaVA-1.5 (fp16), CLIP (fp16) and BLIP-2 retrieval (SPRC) stand-ins on placeholder images in CIRR's release
layout (tiny budget), then `harness eval --split test1`, `harness submit` and `harness score`."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from harness.cli import app
from harness.evaluation.results import read_result
from tests import stand_ins

from .conftest import FIXTURES, REPO

TINY_BUDGET = ["train.max_steps=2", "train.batch_size=8", "eval.batch_size=32", "dataset.image_size=32",
               "tracking.enabled=false", "method.params.oti_images=16", "method.params.oti_steps=2"]


def mini_cirr(root: Path, train: int = 16, val: int = 24, test1: int = 30) -> Path:
    """CIRR's release layout (cirr/captions, cirr/image_splits, dev/, test1/) holding the first
    queries of the real val and test1 annotation files and placeholder images of every image
    they name (val queries stand in for train ones: CIRR's train annotations are not shipped)."""
    source = FIXTURES / "cirr"
    dev = json.loads((source / "captions" / "cap.rc2.val.json").read_text())
    test = json.loads((source / "captions" / "cap.rc2.test1.json").read_text())
    splits = {"train": dev[:train], "val": dev[train:train + val], "test1": test[:test1]}
    for split, queries in splits.items():
        names = sorted({name for q in queries for name in (q["reference"], q.get("target_hard"),
                                                           *q["img_set"]["members"])
                        if name})
        folder = "test1" if split == "test1" else "dev"
        for directory in ("captions", "image_splits"):
            (root / "cirr" / directory).mkdir(parents=True, exist_ok=True)
        (root / "cirr" / "captions" / f"cap.rc2.{split}.json").write_text(json.dumps(queries))
        (root / "cirr" / "image_splits" / f"split.rc2.{split}.json").write_text(
            json.dumps({name: f"./{folder}/{name}.png" for name in names}))
        (root / folder).mkdir(exist_ok=True)
        for name in names:
            pixels = np.random.default_rng(zlib.crc32(name.encode())).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / folder / f"{name}.png")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paper")
    return {"data": mini_cirr(root / "cirr-release"),
            "clip": stand_ins.save_clip(root / "clip-vit-fp16", torch.float16),
            "out": root / "out",
            "qwen2.5-vl-bf16": stand_ins.save_qwen_vl(root / "qwen2.5-vl-bf16", "qwen2_5_vl", torch.bfloat16),
            "qwen2.5-vl-fp16": stand_ins.save_qwen_vl(root / "qwen2.5-vl-fp16", "qwen2_5_vl", torch.float16),
            "qwen2-vl-bf16": stand_ins.save_qwen_vl(root / "qwen2-vl-bf16", "qwen2_vl", torch.bfloat16),
            "llava-1.5-fp16": stand_ins.save_llava15(root / "llava-1.5-fp16", torch.float16),
            "blip2": stand_ins.save_blip2_retrieval(root / "blip2-itm")}


def _run(world: dict[str, Path], lvlm: str, monkeypatch) -> list[Path]:
    monkeypatch.setenv("CIRR_ROOT", str(world["data"]))
    monkeypatch.setenv("CIR_CLIP_DIR", str(world["clip"]))
    monkeypatch.setenv("CIR_LVLM_DIR", str(world[lvlm]))
    monkeypatch.setenv("CIR_BLIP2_DIR", str(world["blip2"]))
    args = ["run", str(REPO / "ablations" / "paper" / "cirr.yaml"), "--output", str(world["out"]), "--quiet"]
    result = CliRunner().invoke(app, args + [a for o in TINY_BUDGET for a in ("--set", o)])
    assert result.exit_code == 0, result.output
    runs = world["out"] / "paper_cirr" / "runs"
    return [run for run in runs.iterdir() if read_result(run / "result.json").method == "cir_lvlm"
            and lvlm in read_result(run / "result.json").label]


def test_every_method_of_the_paper_config_runs_then_test1_is_evaluated_submitted_and_scored(world, monkeypatch):
    [lvlm_run] = _run(world, "qwen2.5-vl-bf16", monkeypatch)
    results = [read_result(run / "result.json") for run in (world["out"] / "paper_cirr" / "runs").iterdir()]
    assert sorted(r.method for r in results) == ["cir_lvlm", "clip4cir", "pic2word", "searle", "sprc", "sum"]
    assert all(r.train["steps"] == 2 and r.num_queries == 24 and "recall_at_1" in r.metrics for r in results)
    # dataset.resize auto: each run's images as its checkpoint's processor makes them square
    assert {r.method: r.train["image_resize"] for r in results} == {
        "cir_lvlm": "pad", "clip4cir": "crop", "pic2word": "crop", "searle": "crop", "sum": "crop", "sprc": "squash"}
    assert read_result(lvlm_run / "result.json").label == "cir_lvlm(temperature=0.02, backbone.source=pretrained, " \
                                                          "backbone.lvlm_dir=qwen2.5-vl-bf16, backbone.lora_rank=16)"
    _evaluate_submit_and_score(lvlm_run)


@pytest.mark.parametrize("lvlm", ["qwen2.5-vl-fp16", "qwen2-vl-bf16", "llava-1.5-fp16"])
def test_cir_lvlm_runs_from_every_released_lvlm_family(lvlm: str, world, monkeypatch):
    """The baselines' runs are finished by the first test and skipped; CIR-LVLM runs anew."""
    [run] = _run(world, lvlm, monkeypatch)
    assert read_result(run / "result.json").train["steps"] == 2
    _evaluate_submit_and_score(run)


def _evaluate_submit_and_score(run: Path) -> None:
    runner = CliRunner()
    evaluated = runner.invoke(app, ["eval", str(run), "--split", "test1", "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    submitted = runner.invoke(app, ["submit", str(run / "eval" / "test1")])
    assert submitted.exit_code == 0, submitted.output
    files = sorted((run / "eval" / "test1" / "submission").iterdir())
    assert len(files) == 2  # CIRR's recall and recall_subset files
    recall = json.loads(next(f for f in files if "subset" not in f.name).read_text())
    assert len([k for k in recall if k not in ("version", "metric")]) == 30
    scored = runner.invoke(app, ["score", str(run)])
    assert scored.exit_code == 0, scored.output
