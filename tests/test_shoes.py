"""Shoes from its official layout (real annotation files from tests/fixtures, placeholder images)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from harness.cli import app
from harness.core.errors import HarnessError
from harness.data.datasets import DatasetConfig, load_dataset
from harness.data.shoes import read_shoes_split

from .conftest import FIXTURES


@pytest.fixture(scope="module")
def shoes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = FIXTURES / "shoes"
    root = tmp_path_factory.mktemp("shoes")
    for name in ("relative_captions_shoes.json", "train_im_names.txt", "eval_im_names.txt"):
        shutil.copy(source / name, root / name)
    placeholder = Image.new("RGB", (8, 8), (120, 60, 30))
    for name in (root / "eval_im_names.txt").read_text().split():
        category = name.removeprefix("img_").rsplit("_", 1)[0]  # img_womens_clogs_12.jpg -> womens_clogs
        folder = root / category / "0"
        folder.mkdir(parents=True, exist_ok=True)
        placeholder.save(folder / name)
    return root


def _expected(root: Path, split: str) -> list[dict]:
    names = set((root / f"{split}_im_names.txt").read_text().split())
    entries = json.loads((root / "relative_captions_shoes.json").read_text())
    return [e for e in entries if e["ReferenceImageName"] in names]


def test_eval_split_counts_gallery_and_triplets(shoes_root: Path):
    split, problems = read_shoes_split(shoes_root, "eval")
    assert problems == []
    assert len(split.gallery) == 4658  # eval_im_names.txt, the whole gallery
    expected = _expected(shoes_root, "eval")
    assert len(split.triplets) == len(expected) > 0
    first = split.triplets[0]
    assert (first.reference, first.caption, first.target) == (
        expected[0]["ReferenceImageName"], expected[0]["RelativeCaption"], expected[0]["ImageName"])
    assert split.images.load([first.reference]).shape == (1, 3, 64, 64)


def test_train_split_reports_its_missing_images(shoes_root: Path):
    split, problems = read_shoes_split(shoes_root, "train")
    assert len(split.gallery) == 10000 and len(split.triplets) == len(_expected(shoes_root, "train"))
    assert len(problems) == 10000 and "image file is missing" in problems[0]  # only eval images were made
    with pytest.raises(HarnessError, match="missing"):
        load_dataset(DatasetConfig(name="shoes", root=str(shoes_root)), "train", progress=False)


@pytest.mark.parametrize(("entry", "message"), [
    ({"ImageName": "a.jpg", "RelativeCaption": "x"}, "missing 'ReferenceImageName'"),
    ({"ImageName": "a.jpg", "ReferenceImageName": 3, "RelativeCaption": "x"}, "must be strings"),
])
def test_malformed_triplet_names_file_and_entry(shoes_root: Path, tmp_path: Path, entry: dict, message: str):
    root = tmp_path / "broken"
    shutil.copytree(shoes_root, root)
    entries = json.loads((root / "relative_captions_shoes.json").read_text())
    (root / "relative_captions_shoes.json").write_text(json.dumps([*entries[:5], entry]))
    with pytest.raises(HarnessError, match=message) as error:
        read_shoes_split(root, "eval")
    assert "relative_captions_shoes.json" in str(error.value) and "[5]" in str(error.value)


def test_image_names_with_a_path_are_refused(tmp_path: Path):
    (tmp_path / "eval_im_names.txt").write_text("img_womens_clogs_1.jpg\n../../etc/passwd\n")
    with pytest.raises(HarnessError, match="line 2: '../../etc/passwd' is not a bare image name"):
        read_shoes_split(tmp_path, "eval")


def test_data_check_reports_shoes_counts(shoes_root: Path):
    result = CliRunner().invoke(app,
                                ["data", "check", "--dataset", "shoes", "--root", str(shoes_root), "--split", "eval"])
    assert result.exit_code == 0, result.output
    assert f"shoes/eval: {len(_expected(shoes_root, 'eval'))} queries" in result.stdout
    assert "4658 images, 0 missing" in result.stdout


def _mini_shoes(root: Path) -> Path:
    """A Shoes layout of 48 train and 24 eval images with one triplet per image pair."""
    import random

    rng = random.Random(0)
    names = {split: [f"img_womens_clogs_{split}{i}.jpg" for i in range(n)] for split,
             n in (("train", 48), ("eval", 24))}
    folder = root / "womens_clogs" / "0"
    folder.mkdir(parents=True)
    for split, listed in names.items():
        (root / f"{split}_im_names.txt").write_text("\n".join(listed) + "\n")
        for name in listed:
            Image.new("RGB", (16, 16), tuple(rng.randrange(256) for _ in range(3))).save(folder / name)
    entries = [{"ImageName": b, "ReferenceImageName": a,
                "RelativeCaption": rng.choice(["is red", "has laces", "is taller"])}
               for listed in names.values() for a, b in zip(listed, listed[1:], strict=False)]
    (root / "relative_captions_shoes.json").write_text(json.dumps(entries))
    return root


def test_a_run_on_shoes_uses_its_protocol(tmp_path: Path):
    from harness.evaluation.results import read_result

    root = _mini_shoes(tmp_path / "shoes")
    (tmp_path / "shoes.yaml").write_text(f"""
experiment: shoes
dataset: {{name: shoes, root: {root}, eval_split: eval, image_size: 32}}
method: {{name: image_only, params: {{start: scratch, embed_dim: 16, vision_hidden: 32, vision_heads: 2,
                                    patch_size: 8}}}}
train: {{epochs: 1, batch_size: 16}}
eval: {{batch_size: 16}}
tracking: {{enabled: false}}
""")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "shoes.yaml"), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    [path] = (tmp_path / "out" / "shoes" / "runs").glob("*/result.json")
    run = read_result(path)
    assert run.protocol.preset == "shoes" and run.protocol.remove_reference is True
    assert set(run.metrics) == {"recall_at_1", "recall_at_10", "recall_at_50"}  # no image sets on Shoes
    assert run.num_queries == 23 and run.num_gallery == 24


def test_image_links_out_of_the_dataset_are_refused_and_linked_folders_followed(shoes_root: Path, tmp_path: Path):
    from .confinement import check_confinement

    image = sorted(shoes_root.rglob("*.jpg"))[0]
    check_confinement(shoes_root, tmp_path, image, image.parent.parent, lambda root: read_shoes_split(root, "eval"))
