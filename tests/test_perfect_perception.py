"""The perfect-perception track (backbone.vision: scene_graph): its code images spell each cell's
content out exactly, a 21-pixel patch embeds them as a sum of attribute embeddings, the runs read
them through the usual data path, and a run that cannot use them is refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from typer.testing import CliRunner

from harness.backbones.params import BackboneParams
from harness.cli import app
from harness.core.errors import HarnessError
from harness.data.datasets import SCENE_GRAPH, DatasetConfig, load_dataset
from harness.data.synthetic.render import scene_code_image
from harness.data.synthetic.scene import CELLS, COLOURS, GRID, SHAPES, SIZES, SceneObject, random_scene

from .conftest import TINY, write_yaml

SIDE = 64 // GRID  # 21: one patch per cell


def _read_back(codes: np.ndarray) -> set[tuple]:
    """The objects a code image spells, read slot by slot (the inverse of scene_code_image)."""
    objects = set()
    for row, col in CELLS:
        cell = codes[0, row * SIDE:(row + 1) * SIDE, col * SIDE:(col + 1) * SIDE]
        bands = [cell[band * (SIDE // 3)] for band in range(3)]
        slots = [[slot for slot in range(count) if band[slot * (SIDE // count)]] for band, count in
                 zip(bands, (len(SHAPES) + 1, len(COLOURS), len(SIZES)), strict=True)]
        assert all(len(found) <= 1 for found in slots) and len(slots[0]) == 1
        if slots[0][0]:
            objects.add(((row, col), SHAPES[slots[0][0] - 1], COLOURS[slots[1][0]], SIZES[slots[2][0]]))
        else:
            assert slots[1] == [] and slots[2] == []
    return objects


def test_a_code_image_spells_out_its_scene_exactly():
    rng = np.random.default_rng(0)
    for _ in range(50):
        scene = random_scene(rng, int(rng.integers(1, 6)))
        codes = scene_code_image(scene, 64)
        assert codes.shape == (3, 64, 64) and codes.dtype == np.uint8
        assert _read_back(codes) == {(o.cell, o.shape, o.colour, o.size) for o in scene}


def test_a_cell_aligned_patch_embeds_a_cell_as_the_sum_of_its_attribute_embeddings():
    """A linear patch embedding of a code image: changing the colour moves a cell's token by the
    same vector whatever its shape (additive), and leaves every other cell's token as it was."""
    torch.manual_seed(0)
    patch = torch.nn.Conv2d(3, 16, kernel_size=SIDE, stride=SIDE)

    def tokens(shape: str, colour: str) -> torch.Tensor:
        scene = [SceneObject(cell=(1, 2), shape=shape, colour=colour, size="large"),
                 SceneObject(cell=(0, 0), shape="circle", colour="red", size="small")]
        image = torch.from_numpy(scene_code_image(scene, 64)).float().unsqueeze(0) / 255.0
        return patch(image).flatten(2)[0].T  # [9 cells, 16], row-major as CELLS

    recolour_star = tokens("star", "blue") - tokens("star", "cyan")
    recolour_circle = tokens("circle", "blue") - tokens("circle", "cyan")
    assert torch.allclose(recolour_star, recolour_circle, atol=1e-5)
    moved = recolour_star.norm(dim=1) > 1e-4
    assert moved.tolist() == [cell == (1, 2) for cell in CELLS]


def test_the_track_loads_code_images_and_refuses_what_it_cannot_read(tiny_benchmark: Path):
    config = DatasetConfig(name="synthetic", root=str(tiny_benchmark))
    split = load_dataset(config, "val", progress=False, resize=SCENE_GRAPH)
    from harness.pretraining.stage0 import scene_graphs

    scenes = scene_graphs(split)
    names = split.gallery[:40]
    drawn = split.images.load(names)
    assert torch.equal(drawn, torch.stack([torch.from_numpy(scene_code_image(scenes[n], 64)) for n in names]))
    pixels = load_dataset(config, "val", progress=False).images.load(names)
    assert not torch.equal(drawn, pixels)
    with pytest.raises(HarnessError, match="only the embedded benchmark"):
        load_dataset(DatasetConfig(name="cirr", root=str(tiny_benchmark)), "val", False, SCENE_GRAPH)
    with pytest.raises(pydantic.ValidationError, match="source: tiny"):
        BackboneParams(source="pretrained", vision="scene_graph")


def test_a_scene_graph_run_needs_one_patch_per_cell_and_passes_gate_a(tmp_path: Path):
    """Through the CLI: a 16-pixel patch is one line naming the field and the fix; with 21 the
    run trains, its stage 0 is its own cache entry, and its report's gate (a) passes."""
    dataset = f"{{seed: {TINY.seed}, num_train: 160, num_val: 40, num_test: 8}}"
    text = f"""
experiment: track
dataset: {{name: synthetic, synthetic: {dataset}}}
method: {{name: sum, params: {{backbone: {{vision: scene_graph, patch_size: PATCH, vision_hidden: 32, vision_heads: 2,
          language_hidden: 32, language_heads: 2}}, stage0: {{vision_steps: 4, vision_batch_size: 16}}}}}}
train: {{max_steps: 2, batch_size: 16}}
eval: {{batch_size: 64}}
seeds: [0]
"""
    bad = write_yaml(tmp_path / "bad.yaml", text.replace("PATCH", "16"))
    result = CliRunner().invoke(app, ["run", str(bad), "--output", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "method.params.backbone.patch_size" in result.output and "set it to 21" in result.output
    assert "Traceback" not in result.output
    good = write_yaml(tmp_path / "good.yaml", text.replace("PATCH", "21"))
    result = CliRunner().invoke(app, ["run", str(good), "--output", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    report = (tmp_path / "out" / "track" / "report" / "report.md").read_text()
    assert "(a) perception: passes" in report
    from harness.evaluation.results import read_result

    [run] = [p for p in (tmp_path / "out" / "track" / "runs").iterdir() if (p / "result.json").is_file()]
    assert read_result(run / "result.json").provenance["image_mode"] == "scene_graph-v1"  # the drawing's version
    settings = BackboneParams(vision="scene_graph", patch_size=21).tiny_key()
    assert settings["scene_codes"] == 1 and "vision" not in BackboneParams().tiny_key()  # pixels keep their keys
