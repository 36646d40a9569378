"""Score queries against the gallery a block of queries at a time: top lists, target ranks and
image-set ranks, each exactly what the full-matrix functions of harness.metrics give.

    scored = score_blockwise(query_embeddings, gallery_embeddings, depth=50, exclude=reference_index,
                             targets=target_index, subset_index=members, allowed=category_mask)

Memory is bounded by ``max_scores`` similarities at a time (64 MiB of float32 by default), so
a gallery of a million images is ranked without a queries x gallery matrix; a small benchmark
is one block. Ties are broken by the lower gallery index everywhere (harness.metrics' rule);
top lists come from ``topk`` with the tie rule made exact (harness.retrieval), not a full sort.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from harness.metrics import subset_ranks, target_ranks
from harness.retrieval import block_top_k

#: similarities held at once (float32): 2**24 = 64 MiB
MAX_SCORES = 2**24


@dataclass
class Scored:
    """What the evaluation reads off the similarities."""

    top: torch.Tensor  # [Q, depth] gallery indices, best first; -1 past a query's candidates
    ranks: torch.Tensor | None  # [Q] 0-based rank of the target among the candidates
    subset: torch.Tensor | None  # [Q] rank of the target within its image set (reference removed)
    subset_order: torch.Tensor | None  # [Q, S] set members but the reference, best first; -1 padding


def score_blockwise(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    depth: int,
    exclude: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    subset_index: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    allowed: Callable[[int, int], torch.Tensor] | None = None,
    max_scores: int = MAX_SCORES,
) -> Scored:
    """Rank ``gallery`` [G, D] for each of ``queries`` [Q, D] by inner product.

    ``exclude`` [Q]: a gallery index removed from each query's candidates (-1: none).
    ``targets`` [Q]: the target's gallery index, for ``ranks``. ``subset_index`` [Q, S] (-1
    padded) with ``reference`` [Q]: image sets, for ``subset`` and ``subset_order``.
    ``allowed(lo, hi)`` -> [hi - lo, G] bool: the candidates of queries lo..hi (category
    galleries); the others are never ranked."""
    count, size = queries.shape[0], gallery.shape[0]
    block = max(1, min(max(count, 1), max_scores // max(size, 1)))
    depth = min(depth, size)
    tops, ranks, subsets, orders = [], [], [], []
    gallery_t = gallery.T.contiguous()
    for lo in range(0, count, block):
        hi = min(count, lo + block)
        scores = queries[lo:hi] @ gallery_t
        if allowed is not None:
            scores.masked_fill_(~allowed(lo, hi), float("-inf"))
        excluded = None
        if exclude is not None:
            excluded = exclude[lo:hi]
            rows = (excluded >= 0).nonzero().squeeze(1)
            scores[rows, excluded[rows]] = float("-inf")
        if targets is not None:
            ranks.append(target_ranks(scores, targets[lo:hi], excluded))
        if subset_index is not None and targets is not None and reference is not None:
            subsets.append(subset_ranks(scores, subset_index[lo:hi], targets[lo:hi], reference[lo:hi]))
            orders.append(_member_order(scores, subset_index[lo:hi], reference[lo:hi]))
        if depth:
            values, indices = block_top_k(scores, depth, 0)
            tops.append(indices.masked_fill(values == float("-inf"), -1))
        else:
            tops.append(torch.empty(hi - lo, 0, dtype=torch.long))
    top = torch.cat(tops) if tops else torch.empty(0, depth, dtype=torch.long)
    return Scored(top=top, ranks=torch.cat(ranks) if ranks else None, subset=torch.cat(subsets) if subsets else None,
                  subset_order=torch.cat(orders) if orders else None)


def _member_order(scores: torch.Tensor, members: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each row's set members other than its reference, best first (ties by gallery index), -1
    padded at the end: what CIRR's recall_subset submission lists."""
    candidate = (members >= 0) & (members != reference.unsqueeze(1))
    values = scores.gather(1, members.clamp(min=0)).masked_fill(~candidate, float("-inf"))
    keys = members.masked_fill(~candidate, torch.iinfo(torch.long).max)
    order = torch.argsort(keys, dim=1, stable=True)  # index ascending first ...
    values, keys = values.gather(1, order), keys.gather(1, order)
    order = torch.argsort(values, dim=1, descending=True, stable=True)  # ... then score, keeping index order on ties
    ordered = keys.gather(1, order)
    return ordered.masked_fill(ordered == torch.iinfo(torch.long).max, -1)
