"""Blockwise and faiss retrieval return the brute-force top-K, ties broken by gallery index."""

from __future__ import annotations

import pytest
import torch

from harness.metrics import ranking
from harness.retrieval import faiss_available, top_k, top_k_torch


def _brute_force(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> torch.Tensor:
    return ranking(queries @ gallery.T, None, top=k)  # the harness's own full ranking (ties by index)


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=1)


@pytest.mark.parametrize("query_block,gallery_block", [(7, 13), (64, 1000), (1, 5)])
def test_blockwise_top_k_equals_brute_force(query_block: int, gallery_block: int):
    queries, gallery = _unit(33, 16, 0), _unit(257, 16, 1)
    _, indices = top_k_torch(queries, gallery, 10, query_block, gallery_block)
    assert torch.equal(indices, _brute_force(queries, gallery, 10))


def test_ties_are_broken_by_gallery_index_across_blocks():
    gallery = torch.zeros(40, 4)
    gallery[:, 0] = 1.0  # every candidate scores the same
    gallery[35] = torch.tensor([2.0, 0, 0, 0])  # one clear winner in the last block
    queries = torch.tensor([[1.0, 0, 0, 0]])
    _, indices = top_k_torch(queries, gallery, 5, gallery_block=8)
    assert indices.tolist() == [[35, 0, 1, 2, 3]] == _brute_force(queries, gallery, 5).tolist()


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
def test_faiss_returns_the_same_top_k_including_ties():
    queries, gallery = _unit(50, 32, 2), _unit(2000, 32, 3)
    _, indices = top_k(queries, gallery, 20, backend="faiss")
    assert torch.equal(indices, _brute_force(queries, gallery, 20))
    tied = torch.zeros(30, 4)
    tied[:, 1] = 1.0
    _, indices = top_k(torch.tensor([[0.0, 1.0, 0, 0]]), tied, 6, backend="faiss")
    assert indices.tolist() == [[0, 1, 2, 3, 4, 5]]
