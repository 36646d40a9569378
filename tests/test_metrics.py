"""Metrics on hand-worked cases and their invariants."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.evaluation.metrics import (
    cirr_metrics,
    ranking,
    recall_at_k,
    subset_ranks,
    target_ranks,
)


def test_reference_removed_from_candidates():
    # gallery: 0=reference (scores highest), 1=target, 2,3 others
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.5]])
    target = torch.tensor([1])
    reference = torch.tensor([0])
    assert target_ranks(scores, target).tolist() == [1]  # reference would be ahead
    assert target_ranks(scores, target, reference).tolist() == [0]
    assert ranking(scores, reference).tolist() == [[1, 3, 2]]  # reference deleted, ranks shift up
    assert recall_at_k(target_ranks(scores, target, reference), [1]) == {1: 100.0}


def test_ties_break_by_gallery_index():
    scores = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    # target at index 2 ties with 0 and 1 (lower indices come first) -> rank 2
    assert target_ranks(scores, torch.tensor([2])).tolist() == [2]
    # with index 0 removed as the reference, only index 1 is ahead
    assert target_ranks(scores, torch.tensor([2]), torch.tensor([0])).tolist() == [1]
    assert ranking(scores, torch.tensor([0])).tolist() == [[1, 2, 3]]


def test_subset_recall_over_five_candidates():
    # 8 gallery images; set = {0 (reference), 1, 2, 3, 4, 5}; target = 3
    scores = torch.tensor([[0.99, 0.2, 0.9, 0.5, 0.4, 0.6, 0.95, 0.97]])
    subset = torch.tensor([[0, 1, 2, 3, 4, 5]])
    ranks = subset_ranks(scores, subset, torch.tensor([3]), torch.tensor([0]))
    # among {1,2,3,4,5} the target (0.5) is behind 2 (0.9) and 5 (0.6); 6, 7 are outside the set
    assert ranks.tolist() == [2]
    metrics = cirr_metrics(target_ranks(scores, torch.tensor([3]), torch.tensor([0])), [1, 5], ranks, [1, 2, 3])
    assert metrics["recall_subset_at_1"] == 0.0
    assert metrics["recall_subset_at_2"] == 0.0
    assert metrics["recall_subset_at_3"] == 100.0
    # global rank: 7, 6, 2, 5 ahead of target (reference removed) -> rank 4 -> R@5 hit, R@1 miss
    assert metrics["recall_at_1"] == 0.0 and metrics["recall_at_5"] == 100.0
    assert metrics["avg"] == (100.0 + 0.0) / 2


def test_recall_over_several_queries():
    ranks = torch.tensor([0, 3, 10, 60])
    assert recall_at_k(ranks, [1, 5, 50]) == {1: 25.0, 5: 50.0, 50: 75.0}


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(3, 40), st.integers(0, 10_000))
def test_recall_monotone_in_k(queries: int, gallery: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(queries, gallery, generator=generator)
    target = torch.randint(0, gallery, (queries,), generator=generator)
    ranks = target_ranks(scores, target)
    recalls = recall_at_k(ranks, list(range(1, gallery + 1)))
    values = [recalls[k] for k in sorted(recalls)]
    assert all(a <= b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] == 100.0


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8), st.integers(3, 40), st.integers(0, 10_000))
def test_ranks_invariant_to_gallery_order(queries: int, gallery: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randperm(queries * gallery, generator=generator).float().reshape(queries, gallery)  # no ties
    target = torch.randint(0, gallery, (queries,), generator=generator)
    reference = (target + 1) % gallery
    permutation = torch.randperm(gallery, generator=generator)
    inverse = torch.argsort(permutation)
    permuted = scores[:, permutation]  # new column j holds old column permutation[j]
    before = target_ranks(scores, target, reference)
    after = target_ranks(permuted, inverse[target], inverse[reference])
    assert torch.equal(before, after)
    top_before = ranking(scores, reference, top=5)
    top_after = permutation[ranking(permuted, inverse[reference], top=5)]
    assert torch.equal(top_before, top_after)


def test_the_metric_catalogue_titles_and_per_query_values():
    from harness.evaluation.protocol import higher_is_better, per_query_value, table_columns, title

    assert [title(k) for k in ("recall_at_10", "recall_subset_at_2", "map_at_25", "avg", "visual_retention")] == \
        ["R@10", "Rs@2", "mAP@25", "Avg", "visual retention"]
    assert title("recall_at_") == "recall_at_" and title("unknown_metric") == "unknown_metric"  # not catalogued
    entry = {"target_rank": 3, "subset_rank": 0, "intent_fidelity": 0.5}
    assert per_query_value(entry, "recall_at_3") == 0.0 and per_query_value(entry, "recall_at_4") == 100.0
    assert per_query_value(entry, "avg") == 100.0  # (R@5 hit + Rs@1 hit) / 2
    assert per_query_value(entry, "intent_fidelity") == 50.0 and per_query_value(entry, "map_at_5") is None
    assert per_query_value({}, "recall_at_1") is None and higher_is_better("recall_at_1")
    assert table_columns({"map_at_5", "recall_at_1",
                          "intent_fidelity"}) == [("recall_at_1", "R@1"), ("map_at_5", "mAP@5")]
