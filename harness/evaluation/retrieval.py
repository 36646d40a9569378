"""Exact top-K retrieval by inner product that scales: blockwise scoring or faiss, same answer.

The torch path is the evaluation's own ranking engine (harness.evaluation.ranking.score_blockwise), so
`harness bench --retrieval` measures the code the evaluation runs, against faiss.

    scores, indices = top_k(queries, gallery, k=50)                  # blockwise torch, bounded memory
    scores, indices = top_k(queries, gallery, k=50, backend="faiss") # faiss IndexFlatIP

Both return the K best gallery rows of each query, best first, ties broken by the lower
gallery index (the harness's rule, harness.evaluation.metrics), so the two backends and a brute-force
full sort give identical indices. Memory is bounded by ``query_block x gallery_block``
scores at a time, never the whole queries x gallery matrix. A multi-vector gallery [G, M, D]
(max-similarity scoring) takes the torch path: a flat faiss index has no maximum over an
image's vectors.
"""

from __future__ import annotations

from typing import Literal

import torch

from harness.evaluation.ranking import ordered_top_k, score_blockwise

Backend = Literal["auto", "torch", "faiss"]


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def top_k_torch(queries: torch.Tensor, gallery: torch.Tensor, k: int, query_block: int = 1024,
                gallery_block: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise exact top-k: the evaluation's own ranking engine (harness.evaluation.ranking), each block of
    ``query_block`` queries scoring the gallery ``gallery_block`` rows at a time."""
    k = min(k, gallery.shape[0])
    scored = score_blockwise(queries.float(), gallery.float(), k, max_scores=query_block * min(gallery_block, max(
        1, gallery.shape[0])), gallery_block=gallery_block)
    return scored.top_scores, scored.top


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
    return ordered_top_k(values, indices, k)


def top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int, backend: Backend = "auto",
          query_block: int = 1024, gallery_block: int = 65536) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by inner product; ``auto`` takes faiss when it is installed (measured faster on
    large galleries by `harness bench --retrieval`), else the blockwise torch path. A [G, M, D]
    gallery is ranked by max-similarity, on the torch path only."""
    if gallery.dim() == 3:
        if backend == "faiss":
            raise ValueError("faiss ranks single-vector galleries only; use backend torch or auto for [G, M, D]")
        return top_k_torch(queries.float(), gallery.float(), k, query_block, gallery_block)
    if backend == "faiss" or (backend == "auto" and faiss_available() and gallery.shape[0] >= 10_000):
        return top_k_faiss(queries, gallery, k)
    return top_k_torch(queries.float(), gallery.float(), k, query_block, gallery_block)
