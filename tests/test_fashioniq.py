"""FashionIQ from its official layout (real annotation files from tests/fixtures), its
caption joining and the canonical protocol (category galleries, reference kept, category mean)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.core.errors import HarnessError
from harness.data.fashioniq import read_fashioniq_split
from harness.data.images import ImageStore
from harness.data.triplet import CIRSplit, Triplet
from harness.evaluation.evaluate import evaluate
from harness.evaluation.protocol import EvalConfig
from harness.methods.base import CIRMethod, MethodContext, MethodParams

from .conftest import FIXTURES

VAL = {"dress": (2017, 3817), "shirt": (2038, 6346), "toptee": (1961, 5373)}  # queries / split images


@pytest.fixture(scope="module")
def fiq_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = FIXTURES / "fashioniq"
    root = tmp_path_factory.mktemp("fashioniq")
    shutil.copytree(source / "captions", root / "captions")
    shutil.copytree(source / "image_splits", root / "image_splits")
    (root / "images").mkdir()
    placeholder = Image.new("RGB", (8, 8), (200, 30, 90))
    for index, name in enumerate(json.loads((root / "image_splits" / "split.dress.val.json").read_text())):
        placeholder.save(root / "images" / f"{name}{'.png' if index % 2 else '.jpg'}")  # both extensions occur
    return root


def test_val_counts_per_category(fiq_root: Path):
    split, problems = read_fashioniq_split(fiq_root, "val")
    assert {c: len(g) for c, g in split.galleries.items()} == {c: n for c, (_, n) in VAL.items()}
    for category, (queries, _) in VAL.items():
        assert sum(t.category == category for t in split.triplets) == queries
    # only the dress images exist: every image of the other two galleries is reported missing
    assert len(problems) == len(set(split.gallery)) - VAL["dress"][1]
    assert all("image file is missing (.png or .jpg)" in p for p in problems)


def test_dress_loads_with_probed_extensions_and_joined_captions(fiq_root: Path):
    split, problems = read_fashioniq_split(fiq_root, "val", categories=("dress",))
    assert problems == []
    first = split.triplets[0]
    assert (first.reference, first.target) == ("B005X4PL1G", "B0084Y8XIU")
    assert first.captions == ("is shiny and silver with shorter sleeves", "fit and flare")
    assert first.caption == "Is shiny and silver with shorter sleeves and fit and flare"  # CLIP4Cir's joining
    suffixes = {split.images.paths[name].suffix for name in split.gallery[:2]}
    assert suffixes == {".png", ".jpg"}
    assert split.images.load(split.gallery[:2]).shape == (2, 3, 64, 64)


def test_methods_join_captions_by_their_own_convention(fiq_root: Path):
    from harness.methods.registry import get_method

    split, _ = read_fashioniq_split(fiq_root, "val", categories=("dress",))
    first = split.triplets[0]
    pic2word = get_method("pic2word").cls
    assert pic2word.caption_convention == "reversed"
    stub = _Lookup.__new__(_Lookup)  # only query_text is used
    stub.params = MethodParams()
    assert stub.query_text(first) == "Is shiny and silver with shorter sleeves and fit and flare"
    stub.params = MethodParams(caption_join="plain")
    assert stub.query_text(first) == "is shiny and silver with shorter sleeves and fit and flare"
    stub.params = MethodParams(caption_join="reversed")
    assert stub.query_text(first) == "fit and flare and is shiny and silver with shorter sleeves"


def test_test_split_has_no_targets(fiq_root: Path):
    split, _ = read_fashioniq_split(fiq_root, "test", categories=("dress",))
    assert len(split.triplets) == 2024 and all(t.target is None for t in split.triplets)


@pytest.mark.parametrize(("entry", "message"), [
    ({"candidate": "B005X4PL1G", "target": "B0084Y8XIU"}, "needs candidate and captions"),
    ({"candidate": "B005X4PL1G", "target": "B0084Y8XIU", "captions": "fit"}, "non-empty list of strings"),
    ({"candidate": "../../etc/passwd", "captions": ["x", "y"]}, "is not an image id"),
])
def test_malformed_query_names_file_and_entry(fiq_root: Path, tmp_path: Path, entry: dict, message: str):
    root = tmp_path / "broken"
    shutil.copytree(fiq_root / "captions", root / "captions")
    shutil.copytree(fiq_root / "image_splits", root / "image_splits")
    path = root / "captions" / "cap.dress.val.json"
    path.chmod(0o644)
    path.write_text(json.dumps([*json.loads(path.read_text())[:3], entry]))
    with pytest.raises(HarnessError, match=message) as error:
        read_fashioniq_split(root, "val", categories=("dress",))
    assert "cap.dress.val.json" in str(error.value) and "[3]" in str(error.value)


class _Lookup(CIRMethod):
    """Embeddings looked up by image name (and by caption for queries): a method whose
    ranking is known in advance."""

    def __init__(self, image_vectors: dict[str, torch.Tensor], query_vectors: dict[str, torch.Tensor], names):
        super().__init__(MethodParams(), MethodContext(8))
        self.image_vectors, self.query_vectors, self.names = image_vectors, query_vectors, names

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.image_vectors[self.names[int(i)]] for i in images[:, 0, 0, 0]])

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return torch.stack([self.query_vectors[c] for c in captions])


def test_protocol_ranks_each_category_gallery_and_averages_categories(tmp_path: Path):
    """Two categories; the query vector is nearest to an image of the *other* category, which
    the category gallery hides; the reference is not removed (it may rank first)."""
    names = ["d0", "d1", "d2", "s0", "s1"]
    paths = {}
    for i, name in enumerate(names):  # pixel (0, 0, 0) encodes the image's index for _Lookup
        image = Image.new("RGB", (8, 8), (0, 0, 0))
        image.putpixel((0, 0), (i, 0, 0))
        image.save(tmp_path / f"{name}.png")
        paths[name] = tmp_path / f"{name}.png"
    vectors = {name: torch.nn.functional.one_hot(torch.tensor(i), 5).float() for i, name in enumerate(names)}
    queries = {
        "q-dress": torch.tensor([0.9, 0.0, 0.5, 1.0, 0.0]),  # s0 closest (hidden), then d0 (the reference), then d2
        "q-shirt": torch.tensor([1.0, 0.0, 0.0, 0.0, 0.2]),  # d0 closest (hidden), then s1 = target
        "q-shirt-2": torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]),  # s0 = target
    }
    triplets = [Triplet(0, "d0", "q-dress", "d2", category="dress"),
                Triplet(1, "s0", "q-shirt", "s1", category="shirt"),
                Triplet(2, "s1", "q-shirt-2", "s0", category="shirt")]
    split = CIRSplit("fashioniq", "val", tmp_path, triplets, names, ImageStore(paths, 8),
                     galleries={"dress": ["d0", "d1", "d2"], "shirt": ["s0", "s1"]})
    method = _Lookup(vectors, queries, names)
    kept = evaluate(method, split, EvalConfig(ks=[1, 2], subset_ks=[], remove_reference=False, device="cpu",
                                              warmup_batches=0), progress=False)
    assert kept.metrics_by_category["dress"]["recall_at_1"] == 0.0  # d0, the reference, ranks first
    assert kept.metrics_by_category["dress"]["recall_at_2"] == 100.0
    assert kept.metrics_by_category["shirt"]["recall_at_1"] == 100.0  # d0 is not in the shirt gallery
    # the mean of the categories (0 and 100), not of the queries (1 of 3 missed: 66.7)
    assert kept.metrics["recall_at_1"] == 50.0 and kept.metrics["recall_at_2"] == 100.0
    assert kept.rankings[1]["top"] == ["s1", "s0"]  # only the shirt gallery is ranked
    per_query = evaluate(method, split, EvalConfig(ks=[1], subset_ks=[], remove_reference=False, category_mean=False,
                                                   device="cpu", warmup_batches=0), progress=False)
    assert per_query.metrics["recall_at_1"] == pytest.approx(200 / 3)  # 2 of 3 queries, categories not weighted
    removed = evaluate(method, split, EvalConfig(ks=[1], subset_ks=[], remove_reference=True, device="cpu",
                                                 warmup_batches=0), progress=False)
    assert removed.metrics_by_category["dress"]["recall_at_1"] == 100.0  # removing the reference shifts the rank
    # the VAL protocol's gallery: only the queries' own images (d1 is no query's image: it leaves)
    union = evaluate(method, split, EvalConfig(ks=[1], subset_ks=[], remove_reference=False, gallery="query_images",
                                               device="cpu", warmup_batches=0), progress=False)
    assert union.num_gallery == 4 and "d1" not in union.rankings[0]["top"]


def test_data_check_lists_counts_and_missing_images(fiq_root: Path):
    from typer.testing import CliRunner

    from harness.cli import app

    result = CliRunner().invoke(app,
                                ["data", "check", "--dataset", "fashioniq", "--root", str(fiq_root), "--split", "val"])
    assert result.exit_code == 1  # the shirt and toptee images are missing
    assert "fashioniq/val: 6016 queries (6016 with targets)" in result.stdout
    assert "dress: gallery 3817 images" in result.stdout
    assert "categories: dress 2017, shirt 2038, toptee 1961" in result.stdout
    assert "problem: " in result.stdout and "more" in result.stdout
    assert "image files are missing" in result.stdout and "dataset.allow_missing_images: true" in result.stdout


def test_protocol_presets_fill_unset_fields_and_explicit_ones_win():
    name, config = EvalConfig().resolved("fashioniq")
    assert name == "fashioniq" and config.ks == [10, 50] and config.remove_reference is False and config.subset_ks == []
    _, explicit = EvalConfig(remove_reference=True).resolved("fashioniq")
    assert explicit.remove_reference is True and explicit.ks == [10, 50]
    name, cirr = EvalConfig(protocol="cirr").resolved("fashioniq")
    assert name == "cirr" and cirr.subset_ks == [1, 2, 3]


def test_missing_images_refuse_a_run_unless_allowed_and_then_are_counted(fiq_root: Path):
    from harness.data.datasets import DatasetConfig, load_dataset

    config = DatasetConfig(name="fashioniq", root=str(fiq_root), categories=("dress", "shirt"))
    with pytest.raises(HarnessError, match="image file is missing") as refused:
        load_dataset(config, "val", progress=False)
    assert refused.value.field == "dataset.allow_missing_images"  # the error names the setting that allows them
    assert "allow_missing_images: true" in refused.value.fix and "data check" in refused.value.fix
    allowed = load_dataset(config.model_copy(update={"allow_missing_images": True}), "val", progress=False)
    assert allowed.info["dropped_queries"] == VAL["shirt"][0]  # every shirt query lost its images
    assert allowed.info["dropped_gallery_images"] == VAL["shirt"][1]
    assert len(allowed.triplets) == VAL["dress"][0] and allowed.galleries["shirt"] == []


def test_image_links_out_of_the_dataset_are_refused_and_linked_folders_followed(fiq_root: Path, tmp_path: Path):
    from harness.data.fashioniq import read_fashioniq_split

    from .confinement import check_confinement

    image = sorted((fiq_root / "images").iterdir())[0]
    check_confinement(fiq_root, tmp_path, image, fiq_root / "images",
                      lambda root: read_fashioniq_split(root, "val", ("dress",)))
