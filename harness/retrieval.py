"""Exact top-K retrieval by inner product that scales: blockwise scoring or faiss, same answer.

    scores, indices = top_k(queries, gallery, k=50)                  # blockwise torch, bounded memory
    scores, indices = top_k(queries, gallery, k=50, backend="faiss") # faiss IndexFlatIP

Both return the K best gallery rows of each query, best first, ties broken by the lower
gallery index (the harness's rule, harness.metrics), so the two backends and a brute-force
full sort give identical indices. Memory is bounded by ``query_block x gallery_block``
scores at a time, never the whole queries x gallery matrix.
"""

from __future__ import annotations

from typing import Literal

import torch

Backend = Literal["auto", "torch", "faiss"]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _ordered(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (value desc, index asc) of each row of candidate pairs."""
    order = torch.argsort(indices, dim=1, stable=True)  # index ascending first ...
    values, indices = values.gather(1, order), indices.gather(1, order)
    order = torch.argsort(values, dim=1, descending=True, stable=True)  # ... then value, keeping index order on ties
    return values.gather(1, order)[:, :k], indices.gather(1, order)[:, :k]


def merge_top_k(best: tuple[torch.Tensor, torch.Tensor], block: tuple[torch.Tensor, torch.Tensor],
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (value desc, index asc) of two (values, indices) top lists of the same queries."""
    return _ordered(torch.cat([best[0], block[0]], 1), torch.cat([best[1], block[1]], 1), k)


def block_top_k(scores: torch.Tensor, k: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of a [q, g] score block with exact tie-breaking by index (global = local + offset)."""
    k = min(k, scores.shape[1])
    values, local = scores.topk(k, dim=1)
    # topk may pick any of several equal scores at the boundary: rows where a tie crosses it are
    # redone with a stable full sort of the row (rare with real embeddings)
    kth = values[:, -1:]
    crossing = (scores == kth).sum(1) != (values == kth).sum(1)
    if bool(crossing.any()):
        rows = crossing.nonzero().squeeze(1)
        order = torch.argsort(scores[rows], dim=1, descending=True, stable=True)[:, :k]
        values[rows], local[rows] = scores[rows].gather(1, order), order
    values, local = _ordered(values, local, k)
    return values, local + offset


def top_k_torch(queries: torch.Tensor, gallery: torch.Tensor, k: int, query_block: int = 1024,
                gallery_block: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise exact top-k: each query block scores the gallery block by block, keeps each
    block's top-k and merges them (at most query_block x (gallery_block + k) values held)."""
    k = min(k, gallery.shape[0])
    all_values, all_indices = [], []
    for q0 in range(0, queries.shape[0], query_block):
        block = queries[q0 : q0 + query_block]
        best_values = best_indices = None
        for g0 in range(0, gallery.shape[0], gallery_block):
            values, indices = block_top_k(block @ gallery[g0 : g0 + gallery_block].T, k, g0)
            if best_values is None:
                best_values, best_indices = values, indices
            else:
                best_values, best_indices = merge_top_k((best_values, best_indices), (values, indices), k)
        all_values.append(best_values)
        all_indices.append(best_indices)
    if not all_values:
        return torch.empty(0, k), torch.empty(0, k, dtype=torch.long)
    return torch.cat(all_values), torch.cat(all_indices)


def top_k_faiss(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """faiss IndexFlatIP (exact), with ties re-ordered by index: faiss returns equal scores in
    an order of its own, so each row's run of equal scores is sorted by index (and a tie that
    crosses the k-th place is settled by the blockwise path on that row)."""
    import faiss

    k = min(k, gallery.shape[0])
    index = faiss.IndexFlatIP(gallery.shape[1])
    index.add(gallery.float().contiguous().numpy())
    values, indices = index.search(queries.float().contiguous().numpy(), k + 1 if k < gallery.shape[0] else k)
    values, indices = torch.from_numpy(values), torch.from_numpy(indices).long()
    if values.shape[1] > k:  # a tie between the k-th and the (k+1)-th: that row's boundary is ambiguous
        crossing = values[:, k - 1] == values[:, k]
        values, indices = values[:, :k], indices[:, :k]
        if bool(crossing.any()):
            rows = crossing.nonzero().squeeze(1)
            fixed_values, fixed_indices = top_k_torch(queries[rows], gallery, k)
            values[rows], indices[rows] = fixed_values, fixed_indices
    return _ordered(values, indices, k)


def top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int, backend: Backend = "auto",
          query_block: int = 1024, gallery_block: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by inner product; ``auto`` takes faiss when it is installed (measured faster on
    large galleries by `harness bench --retrieval`), else the blockwise torch path."""
    if backend == "faiss" or (backend == "auto" and faiss_available() and gallery.shape[0] >= 10_000):
        return top_k_faiss(queries, gallery, k)
    return top_k_torch(queries.float(), gallery.float(), k, query_block, gallery_block)
