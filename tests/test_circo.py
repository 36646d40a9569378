"""CIRCO: loader on CIRCO-format annotation files (tests/circo_format.py; placeholder images) and mAP@K with
several ground truths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.core.errors import HarnessError
from harness.data.circo import read_circo_split
from harness.data.images import ImageStore
from harness.data.triplet import CIRSplit, Triplet
from harness.evaluation.evaluate import evaluate
from harness.evaluation.metrics import map_at_k
from harness.evaluation.protocol import EvalConfig

from .circo_format import write_circo_annotations
from .test_fashioniq import _Lookup


def test_map_follows_circos_formula():
    # ground truths {0, 2, 5}; ranking 0, 1, 2, 3, 4, 5: hits at positions 1, 3, 6
    top = torch.tensor([[0, 1, 2, 3, 4, 5], [9, 8, 7, 6, 5, 4]])
    result = map_at_k(top, [{0, 2, 5}, {4}], ks=[1, 5, 6])
    first_at_5 = (1 / 1 + 2 / 3) / 3  # precision at the hits within 5, over min(3 truths, 5)
    first_at_6 = (1 / 1 + 2 / 3 + 3 / 6) / 3
    second_at_6 = (1 / 6) / 1  # its only truth at position 6
    assert result["map_at_1"] == pytest.approx((1.0 + 0.0) / 2 * 100)
    assert result["map_at_5"] == pytest.approx((first_at_5 + 0.0) / 2 * 100)
    assert result["map_at_6"] == pytest.approx((first_at_6 + second_at_6) / 2 * 100)


@pytest.fixture(scope="module")
def circo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("circo")
    write_circo_annotations(root)
    (root / "unlabeled2017").mkdir()
    ids = {1, 2, 3}  # distractors
    for entry in json.loads((root / "annotations" / "val.json").read_text()):
        ids |= {entry["reference_img_id"], *entry["gt_img_ids"]}
    placeholder = Image.new("RGB", (8, 8), (10, 120, 200))
    for image_id in ids:
        placeholder.save(root / "unlabeled2017" / f"{image_id:012d}.jpg")
    return root


def test_val_loads_every_query_with_all_ground_truths(circo_root: Path):
    split, problems = read_circo_split(circo_root, "val")
    entries = json.loads((circo_root / "annotations" / "val.json").read_text())
    assert problems == [] and len(split.triplets) == len(entries) == 40
    first, written = split.triplets[0], entries[0]
    assert (first.pairid, first.reference, first.target) == (0, str(written["reference_img_id"]),
                                                              str(written["target_img_id"]))
    assert first.ground_truths == tuple(str(t) for t in written["gt_img_ids"])
    assert any(len(t.ground_truths) > 1 for t in split.triplets)
    named = {e["reference_img_id"] for e in entries} | {g for e in entries for g in e["gt_img_ids"]}
    assert len(split.gallery) == len(named) + 3


def test_test_split_has_no_targets_and_reports_missing_references(circo_root: Path):
    split, problems = read_circo_split(circo_root, "test")
    assert len(split.triplets) == 30 and all(t.target is None and not t.ground_truths for t in split.triplets)
    assert problems and all("reference_img_id: image file unlabeled2017/" in p and "is missing" in p for p in problems)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda entries: entries + [dict(entries[0])], "duplicate query id 0"),
    (lambda entries: [{k: v for k, v in entries[0].items() if k != "reference_img_id"}], "missing 'reference_img_id'"),
    (lambda entries: [{**entries[0], "gt_img_ids": ["x"]}], "is not a COCO image id"),
])
def test_malformed_annotations_name_file_and_entry(circo_root: Path, tmp_path: Path, mutate, message: str):
    root = tmp_path / "broken"
    shutil.copytree(circo_root, root)
    path = root / "annotations" / "val.json"
    path.chmod(0o644)
    path.write_text(json.dumps(mutate(json.loads(path.read_text()))))
    with pytest.raises(HarnessError, match=message) as error:
        read_circo_split(root, "val")
    assert "val.json" in str(error.value)


def test_evaluation_reports_map_over_every_ground_truth(tmp_path: Path):
    names = ["10", "11", "12", "13"]
    paths = {}
    for i, name in enumerate(names):
        image = Image.new("RGB", (8, 8))
        image.putpixel((0, 0), (i, 0, 0))
        image.save(tmp_path / f"{name}.png")  # lossless: the pixel names the image
        paths[name] = tmp_path / f"{name}.png"
    vectors = {name: torch.nn.functional.one_hot(torch.tensor(i), 4).float() for i, name in enumerate(names)}
    query = {"q": torch.tensor([0.9, 1.0, 0.0, 0.5])}  # ranking 11, 10 (reference, kept), 13, 12
    split = CIRSplit("circo", "val", tmp_path, [Triplet(0, "10", "q", "13", ground_truths=("13", "11"))], names,
                     ImageStore(paths, 8))
    config = EvalConfig(protocol="circo", device="cpu", warmup_batches=0)
    _, resolved = config.resolved("circo")
    result = evaluate(_Lookup(vectors, query, names), split, resolved.model_copy(update={"map_ks": [1, 2, 3]}),
                      progress=False)
    assert result.metrics["map_at_1"] == pytest.approx(100.0)  # 11 is a ground truth
    assert result.metrics["map_at_3"] == pytest.approx((1 + 2 / 3) / 2 * 100)  # hits at 1 and 3, two truths
    assert result.metrics["recall_at_5"] == 100.0  # Recall@K reads target_img_id only


def test_image_links_out_of_the_dataset_are_refused_and_linked_folders_followed(circo_root: Path, tmp_path: Path):
    from .confinement import check_confinement

    image = sorted((circo_root / "unlabeled2017").glob("*.jpg"))[0]
    check_confinement(circo_root, tmp_path, image, circo_root / "unlabeled2017",
                      lambda root: read_circo_split(root, "val"))
