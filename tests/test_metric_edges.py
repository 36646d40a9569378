"""Metric edge cases of custom data, each against a hand-computed value: a target outside its own
image set, a set member listed twice, FashionIQ's tie order and Avg column, CIRCO submissions that
repeat an image. Evaluation and `harness score` must agree on every one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.core.errors import HarnessError
from harness.data.images import ImageStore
from harness.data.triplet import CIRSplit, Triplet
from harness.evaluation.evaluate import evaluate
from harness.evaluation.metrics import metrics_from_ranks
from harness.evaluation.protocol import EvalConfig, per_query_value, table_columns
from harness.evaluation.saved_rankings import score
from harness.evaluation.submission import read_submission

from .test_fashioniq import _Lookup


def _images(root: Path, names: list[str]) -> dict[str, Path]:
    """One PNG per name whose pixel (0, 0) holds the image's index (what _Lookup reads)."""
    paths = {}
    for i, name in enumerate(names):
        image = Image.new("RGB", (8, 8), (0, 0, 0))
        image.putpixel((0, 0), (i, 0, 0))
        paths[name] = root / f"{name}.png"
        image.save(paths[name])
    return paths


def _config(**fields) -> EvalConfig:
    return EvalConfig(device="cpu", warmup_batches=0, **fields)


def test_a_target_outside_its_set_misses_and_a_member_listed_twice_counts_once(tmp_path: Path):
    names = ["a", "b", "c", "d", "e"]
    vectors = {n: torch.nn.functional.one_hot(torch.tensor(i), 5).float() for i, n in enumerate(names)}
    queries = {"outside": torch.tensor([0.0, 0.2, 0.1, 0.0, 1.0]),  # e (the target, in no set position) first
               "twice": torch.tensor([0.0, 1.0, 0.5, 0.0, 0.0])}  # b, then c = the target
    triplets = [Triplet(0, "a", "outside", "e", subset=("a", "b", "c")),
                Triplet(1, "a", "twice", "c", subset=("a", "b", "b", "c"))]
    split = CIRSplit("cirr", "val", tmp_path, triplets, names, ImageStore(_images(tmp_path, names), 8))
    config = _config(ks=[1], subset_ks=[1, 2, 3], remove_reference=True)
    evaluation = evaluate(_Lookup(vectors, queries, names), split, config, progress=False)
    # by hand: query 0's target is not a candidate of its set (CLIP4Cir's scorer: a miss at every K);
    # query 1 ranks b then c: the target is second of its set, b counted once
    assert evaluation.metrics["recall_at_1"] == 50.0  # e first for query 0; b first for query 1
    assert [evaluation.metrics[f"recall_subset_at_{k}"] for k in (1, 2, 3)] == [0.0, 50.0, 50.0]
    assert evaluation.rankings[1]["subset_top"] == ["b", "c"]
    rescored, _ = score(evaluation.rankings, split, config)
    assert {k: rescored[k] for k in evaluation.metrics if k in rescored} == \
        {k: evaluation.metrics[k] for k in rescored if k in evaluation.metrics}
    assert rescored["recall_subset_at_3"] == 50.0


def test_fashioniq_breaks_exact_ties_by_the_categorys_own_split_order(tmp_path: Path):
    """All scores tied: each category ranks its gallery in its split file's order, not in the order
    of the combined gallery (where toptee's "x" would come first)."""
    names = ["x", "y", "z"]
    vectors = {n: torch.ones(3) for n in names}
    queries = {"dress-q": torch.ones(3), "toptee-q": torch.ones(3)}
    triplets = [Triplet(0, "z", "dress-q", "y", category="dress"), Triplet(1, "y", "toptee-q", "x", category="toptee")]
    split = CIRSplit("fashioniq", "val", tmp_path, triplets, names, ImageStore(_images(tmp_path, names), 8),
                     galleries={"dress": ["x", "y", "z"], "toptee": ["z", "y", "x"]})
    config = _config(ks=[1, 2, 3], subset_ks=[], remove_reference=False)
    evaluation = evaluate(_Lookup(vectors, queries, names), split, config, progress=False)
    assert evaluation.rankings[0]["top"] == ["x", "y", "z"] and evaluation.rankings[1]["top"] == ["z", "y", "x"]
    assert evaluation.rankings[0]["target_rank"] == 1 and evaluation.rankings[1]["target_rank"] == 2
    by_category = evaluation.metrics_by_category
    assert [by_category["toptee"][f"recall_at_{k}"] for k in (1, 2, 3)] == [0.0, 0.0, 100.0]
    assert [by_category["dress"][f"recall_at_{k}"] for k in (1, 2, 3)] == [0.0, 100.0, 100.0]
    assert score(evaluation.rankings, split, config)[1] == {
        category: {k: v for k, v in values.items()} for category, values in by_category.items()}


def test_fashioniq_avg_is_the_mean_of_r10_and_r50_after_the_category_mean():
    triplets = [Triplet(i, "r", "c", "t", category=category)
                for i, category in enumerate(["dress", "dress", "shirt", "shirt"])]
    ranks = torch.tensor([0, 20, 60, 5])
    metrics, by_category = metrics_from_ranks(EvalConfig(ks=[10, 50], subset_ks=[]), triplets, ranks, None, None,
                                              categories=True)
    # by hand: dress R@10 50, R@50 100; shirt R@10 50, R@50 50 -> means 50 and 75 -> Avg 62.5
    assert (metrics["recall_at_10"], metrics["recall_at_50"], metrics["avg_r10_r50"]) == (50.0, 75.0, 62.5)
    assert by_category["dress"]["avg_r10_r50"] == 75.0 and by_category["shirt"]["avg_r10_r50"] == 50.0
    assert ("avg_r10_r50", "Avg") in table_columns(metrics)
    assert per_query_value({"target_rank": 20}, "avg_r10_r50") == 50.0  # missed at 10, hit at 50
    cirr, _ = metrics_from_ranks(EvalConfig(ks=[10, 50], subset_ks=[]), triplets, ranks, None, None, categories=False)
    assert "avg_r10_r50" not in cirr  # only under the category protocol


def test_circo_submissions_that_repeat_an_image_are_refused(tmp_path: Path):
    from harness.data.circo import read_circo_split

    from .circo_format import write_circo_annotations, write_circo_submission

    queries = write_circo_annotations(tmp_path)["val"]
    write_circo_submission(tmp_path / "submission_val.json", queries)
    payload = json.loads((tmp_path / "submission_val.json").read_text())
    first = next(iter(payload))
    payload[first] = [payload[first][0]] * 50  # one relevant image 50 times: AP@50 far above 100 % if counted
    (tmp_path / "submission_val.json").write_text(json.dumps(payload))
    split, _ = read_circo_split(tmp_path, "val")
    _, config = EvalConfig().resolved("circo")
    with pytest.raises(HarnessError, match=f"pair id {first} lists image .* twice"):
        score(read_submission(tmp_path / "submission_val.json"), split, config)
