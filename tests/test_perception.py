"""The perception probe (harness.pretraining.perception) and stage 0's dense supervision: the probe
reads what features hold and nothing more, stage 0 records it, and the dense loss is an option
that leaves the default stage 0 (and its cache key) as it was."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from harness.data.cirr import load_cirr_split
from harness.data.synthetic.scene import COLOURS, SHAPES, SIZES, random_scene
from harness.pretraining.perception import ATTRIBUTES, cell_labels, probe


def _scenes(count: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    return [random_scene(rng, int(rng.integers(1, 5))) for _ in range(count)]


def _one_hot(labels: torch.Tensor) -> torch.Tensor:
    """Features that spell each cell's content out: a linear probe must read them perfectly."""
    parts = []
    for index, classes in enumerate((2, len(SHAPES), len(COLOURS), len(SIZES))):
        values = labels[:, :, index].clamp_min(0)
        parts.append(torch.nn.functional.one_hot(values, classes).float() * (labels[:, :, index:index + 1] >= 0))
    return torch.cat(parts, dim=-1).flatten(1)


def test_cell_labels_follow_the_scene_graphs():
    scenes = _scenes(20)
    labels = cell_labels(scenes)
    assert labels.shape == (20, 9, 4)
    assert int(labels[:, :, 0].sum()) == sum(len(s) for s in scenes)
    assert bool((labels[:, :, 1:][labels[:, :, 0] == 0] == -1).all())


def test_the_probe_reads_features_that_hold_the_content_and_not_features_that_do_not():
    labels = cell_labels(_scenes(900))
    perfect = probe(_one_hot(labels[:600]), labels[:600], _one_hot(labels[600:]), labels[600:])
    assert all(perfect[name] == 100.0 for name in ATTRIBUTES)
    torch.manual_seed(0)
    noise = torch.randn(900, 32)
    blind = probe(noise[:600], labels[:600], noise[600:], labels[600:])
    assert blind["shape"] < 40.0 and blind["colour"] < 40.0  # chance: 1/6 and 1/8


def test_stage0_records_its_perception_and_dense_supervision_is_an_option(tiny_benchmark: Path, tmp_path: Path,
                                                                           monkeypatch):
    from harness.backbones.params import BackboneParams
    from harness.pretraining.stage0 import Stage0Params, clip_request, ensure_stage0_clip

    from .test_cir_lvlm import TINY

    monkeypatch.setenv("CIR_HARNESS_CACHE", str(tmp_path))
    split = load_cirr_split(tiny_benchmark, "train")
    plain = Stage0Params(vision_steps=2, vision_batch_size=8)
    request = clip_request("perception-test", BackboneParams(**TINY), plain)
    summary = json.loads((ensure_stage0_clip(request, split, progress=False) / "vision.json").read_text())
    for features in ("pooled", "tokens"):
        assert set(summary["vision"]["perception"][features]) == set(ATTRIBUTES)
    assert "dense_weight" not in summary["settings"]  # off: the cache key and summary of before issue 34
    dense = clip_request("perception-test", BackboneParams(**TINY), plain.model_copy(update={"dense_weight": 1.0}))
    assert dense.vision_key() != request.vision_key()
    trained = json.loads((ensure_stage0_clip(dense, split, progress=False) / "vision.json").read_text())
    assert trained["settings"]["dense_weight"] == 1.0
    assert trained["vision"]["first_loss"] > summary["vision"]["first_loss"]  # the dense loss is added


def test_a_cell_aligned_tower_reads_each_cell_from_its_own_token_and_can_perceive_first(
        tiny_benchmark: Path, tmp_path: Path, monkeypatch):
    """With 21-pixel patches the dense head is one map shared by the nine cell tokens (token i
    -> cell i); ``dense_steps`` adds a perceive phase of its own, keyed and reported."""
    from harness.backbones.params import BackboneParams
    from harness.pretraining.perception import CellTokenHead
    from harness.pretraining.stage0 import Stage0Params, _dense_heads, clip_request, ensure_stage0_clip

    from .test_cir_lvlm import TINY

    head = CellTokenHead(8)
    tokens = torch.zeros(2, 9, 8)
    tokens[1, 4] = 1.0  # only the middle cell's token differs: only the middle cell's read-out moves
    moved = [(logits[1] - logits[0]).abs().sum(-1) for logits in head(tokens)]
    assert all(m[4] > 0 and bool((m[torch.arange(9) != 4] == 0).all()) for m in moved)

    monkeypatch.setenv("CIR_HARNESS_CACHE", str(tmp_path))
    split = load_cirr_split(tiny_benchmark, "train")
    aligned = BackboneParams(**{**TINY, "patch_size": 21})
    params = Stage0Params(vision_steps=2, vision_batch_size=8, dense_steps=3)
    request = clip_request("perception-test", aligned, params)
    summary = json.loads((ensure_stage0_clip(request, split, progress=False) / "vision.json").read_text())
    assert summary["settings"]["dense_steps"] == 3 and summary["perceive"]["first_loss"] is not None
    assert "dense_weight" not in summary["settings"]
    off = clip_request("perception-test", aligned, params.model_copy(update={"dense_steps": 0}))
    assert off.vision_key() != request.vision_key()
    from transformers import CLIPModel

    clip = CLIPModel.from_pretrained(request.vision_directory() / "clip")
    assert isinstance(_dense_heads(clip)["tokens"], CellTokenHead)
