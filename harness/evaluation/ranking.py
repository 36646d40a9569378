"""Score queries against the gallery a block at a time: top lists, target ranks and image-set
ranks, each exactly what the full-matrix functions of harness.evaluation.metrics give.

    scored = score_blockwise(query_embeddings, gallery_embeddings, depth=50, exclude=reference_index,
                             targets=target_index, subset_index=members)
    scored = score_per_gallery(query_embeddings, gallery_embeddings, 50, galleries, exclude, targets)  # FashionIQ

Memory is bounded by ``max_scores`` similarities at a time (64 MiB of float32 by default) and
the gallery is read ``gallery_block`` rows at a time, so a gallery of a million images (its
embeddings in RAM or in a memory-mapped file, harness.evaluation.embedding_file) is ranked without a
queries x gallery matrix; a small benchmark is one block. A gallery of several blocks is read
twice per block of queries: the first pass takes each target's and set member's score from the
very block computation the second pass ranks against, so ranks stay exact. Ties are broken by
the lower gallery index everywhere (harness.evaluation.metrics' rule); top lists come from ``topk`` with
the tie rule made exact (``block_top_k``), not a full sort. harness.evaluation.retrieval's torch top-K is
this function too.

A multi-vector gallery [G, M, D] (a method that declares ``scoring = "max_similarity"``, SPRC's
query-token outputs) scores each image by its best vector, ``max_m q . t_m`` (harness.objectives.losses.similarity);
a block then holds M similarities per image and shrinks by M, so memory stays bounded. With
M = 1 the numbers are those of the [G, D] gallery, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from harness.evaluation.metrics import ABSENT, first_members, subset_ranks_of_members

#: similarities held at once (float32): 2**24 = 64 MiB
MAX_SCORES = 2**24
#: gallery rows scored at once; a larger gallery is read (from RAM or disk) a block at a time
GALLERY_BLOCK = 2**16


def vectors_per_image(gallery: torch.Tensor) -> int:
    """M of a [G, M, D] gallery; 1 for a [G, D] one."""
    return int(gallery.shape[1]) if gallery.dim() == 3 else 1


@dataclass
class Scored:
    """What the evaluation reads off the similarities."""

    top: torch.Tensor  # [Q, depth] gallery indices, best first; -1 past a query's candidates
    top_scores: torch.Tensor  # [Q, depth] their similarities (-inf past a query's candidates)
    ranks: torch.Tensor | None  # [Q] 0-based rank of the target among the candidates
    subset: torch.Tensor | None  # [Q] rank of the target within its image set (reference removed)
    subset_order: torch.Tensor | None  # [Q, S] set members but the reference, best first; -1 padding


@dataclass
class _Query:
    """One block of queries: rows lo..hi with their own slices of the per-query inputs."""

    lo: int
    hi: int
    exclude: torch.Tensor | None
    targets: torch.Tensor | None
    members: torch.Tensor | None
    reference: torch.Tensor | None


def score_blockwise(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    depth: int,
    exclude: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    subset_index: torch.Tensor | None = None,
    reference: torch.Tensor | None = None,
    max_scores: int = MAX_SCORES,
    gallery_block: int | None = None,
) -> Scored:
    """Rank ``gallery`` [G, D] for each of ``queries`` [Q, D] by inner product ([G, M, D]: by
    the best of each image's M vectors).

    ``exclude`` [Q]: a gallery index removed from each query's candidates (-1: none).
    ``targets`` [Q]: the target's gallery index, for ``ranks``. ``subset_index`` [Q, S] (-1
    padded) with ``reference`` [Q]: image sets, for ``subset`` and ``subset_order``.
    ``gallery_block``: rows per gallery block (default ``GALLERY_BLOCK``)."""
    count, size = queries.shape[0], gallery.shape[0]
    gallery_block = gallery_block or GALLERY_BLOCK
    spans = [(g0, min(size, g0 + max(1, gallery_block))) for g0 in range(0, size, max(1, gallery_block))]
    per_query = max(1, min(size, gallery_block)) * vectors_per_image(gallery)  # similarities a query holds per block
    block = max(1, min(max(count, 1), max_scores // per_query))
    depth = min(depth, size)
    sets = subset_index is not None and targets is not None and reference is not None
    parts: dict[str, list[torch.Tensor]] = {"top": [], "scores": [], "ranks": [], "subset": [], "order": []}
    scorer = _block_scorer(gallery, spans)
    for lo in range(0, count, block):
        hi = min(count, lo + block)
        rows = _Query(lo, hi, *(None if x is None else x[lo:hi] for x in (exclude, targets)),
                      subset_index[lo:hi] if sets else None, reference[lo:hi] if sets else None)
        (top, top_scores), ranks, member_scores = _score_query_block(queries[lo:hi], scorer, spans, rows, depth)
        parts["top"].append(top)
        parts["scores"].append(top_scores)
        if ranks is not None:
            parts["ranks"].append(ranks)
        if member_scores is not None:
            target_scores, scores = member_scores
            parts["subset"].append(subset_ranks_of_members(scores, rows.members, target_scores, rows.targets,
                                                           rows.reference))
            parts["order"].append(_member_order(scores, rows.members, rows.reference))
    joined = {name: torch.cat(values) if values else None for name, values in parts.items()}
    top = joined["top"] if joined["top"] is not None else torch.empty(0, depth, dtype=torch.long)
    scores = joined["scores"] if joined["scores"] is not None else torch.empty(0, depth)
    return Scored(top=top, top_scores=scores, ranks=joined["ranks"], subset=joined["subset"],
                  subset_order=joined["order"])


def score_per_gallery(queries: torch.Tensor, gallery: torch.Tensor, depth: int,
                      galleries: list[tuple[torch.Tensor, torch.Tensor]], exclude: torch.Tensor | None = None,
                      targets: torch.Tensor | None = None, **blockwise) -> Scored:
    """``score_blockwise`` for queries that each rank their own gallery (FashionIQ's categories):
    ``galleries`` holds (query rows, gallery indices in that gallery's own order) pairs. Each
    gallery is ranked as if it were the whole one, so exact ties go by its own order (the
    category's split file), and the results come back in global indices (-1 past a short gallery)."""
    count = queries.shape[0]
    depth = min(depth, max((len(columns) for _, columns in galleries), default=0))
    top = torch.full((count, depth), -1, dtype=torch.long)
    top_scores = torch.full((count, depth), float("-inf"))
    ranks = None if targets is None else torch.full((count,), ABSENT, dtype=torch.long)
    for rows, columns in galleries:
        local = torch.full((gallery.shape[0],), -1, dtype=torch.long)
        local[columns] = torch.arange(len(columns))
        local_targets = _local(targets, rows, local)
        part = score_blockwise(queries[rows], gallery[columns], depth, _local(exclude, rows, local), local_targets,
                               **blockwise)
        width = part.top.shape[1]
        top[rows, :width] = torch.where(part.top >= 0, columns[part.top.clamp(min=0)], -1)
        top_scores[rows, :width] = part.top_scores
        if ranks is not None and part.ranks is not None:
            ranks[rows] = part.ranks.masked_fill(local_targets < 0, ABSENT)
    return Scored(top=top, top_scores=top_scores, ranks=ranks, subset=None, subset_order=None)


def _local(indices: torch.Tensor | None, rows: torch.Tensor, local: torch.Tensor) -> torch.Tensor | None:
    """Global gallery indices of ``rows`` as indices into one gallery (-1 where outside it or none)."""
    if indices is None:
        return None
    picked = indices[rows]
    return torch.where(picked >= 0, local[picked.clamp(min=0)], -1)


def _block_scorer(gallery: torch.Tensor, spans: list[tuple[int, int]]
                       ) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """(queries, block i) -> their [q, rows] similarities against the block, through its float32
    transpose ([D, rows], or [D, rows * M] for a multi-vector gallery, then the maximum over M);
    a one-block gallery is transposed once, a larger one per use (it may be a memory-mapped file
    that must not be read whole)."""
    vectors = int(gallery.shape[1]) if gallery.dim() == 3 else 0  # 0: a [G, D] gallery

    def transpose(rows: torch.Tensor) -> torch.Tensor:
        return (rows.reshape(-1, rows.shape[-1]) if vectors else rows).float().T.contiguous()

    def scores(queries: torch.Tensor, transposed: torch.Tensor) -> torch.Tensor:
        product = queries @ transposed
        return product.view(len(queries), -1, vectors).amax(dim=2) if vectors else product

    if len(spans) == 1:
        whole = transpose(gallery)
        return lambda queries, i: scores(queries, whole)
    return lambda queries, i: scores(queries, transpose(gallery[spans[i][0] : spans[i][1]]))


def _blocks(queries: torch.Tensor, scorer: Callable[[torch.Tensor, int], torch.Tensor],
            spans: list[tuple[int, int]], rows: _Query) -> Iterator[tuple[int, torch.Tensor]]:
    """(first gallery index, masked similarities [q, rows]) of each gallery block."""
    for i, (g0, g1) in enumerate(spans):
        scores = scorer(queries, i)
        if rows.exclude is not None:
            local = rows.exclude - g0
            inside = ((rows.exclude >= 0) & (local >= 0) & (local < g1 - g0)).nonzero().squeeze(1)
            scores[inside, local[inside]] = float("-inf")
        yield g0, scores


def _score_query_block(queries, scorer, spans, rows: _Query, depth: int):
    """((top [q, depth], their scores), target ranks or None, (target scores, member scores) or None) of one
    block of queries. One gallery block is scored once; several are scored twice (see the module)."""
    cached = next(_blocks(queries, scorer, spans, rows)) if len(spans) == 1 else None

    def blocks() -> Iterator[tuple[int, torch.Tensor]]:
        return iter([cached]) if cached is not None else _blocks(queries, scorer, spans, rows)

    picked = _picked_scores(blocks(), rows) if rows.targets is not None else None
    best: tuple[torch.Tensor, torch.Tensor] | None = None
    ahead = torch.zeros(rows.hi - rows.lo, dtype=torch.long)
    for g0, scores in blocks():
        if picked is not None:
            ahead += _ahead(scores, g0, picked[0], rows)
        if depth:
            values, indices = block_top_k(scores, depth, g0)
            best = (values, indices) if best is None else merge_top_k(best, (values, indices), depth)
    if best is None:
        best = (torch.empty(rows.hi - rows.lo, 0), torch.empty(rows.hi - rows.lo, 0, dtype=torch.long))
    top = (best[1].masked_fill(best[0] == float("-inf"), -1), best[0])
    members = (picked[0], picked[1]) if picked is not None and rows.members is not None else None
    return top, (ahead if picked is not None else None), members


def _picked_scores(blocks: Iterator[tuple[int, torch.Tensor]],
                   rows: _Query) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(each query's target score [q], its set members' scores [q, S] or None), read off the
    masked blocks (padding members get -inf)."""
    targets = rows.targets
    target_scores = torch.full((len(targets),), float("nan"))
    member_scores = None if rows.members is None else torch.full(rows.members.shape, float("-inf"))
    for g0, scores in blocks:
        g1 = g0 + scores.shape[1]
        inside = ((targets >= g0) & (targets < g1)).nonzero().squeeze(1)
        target_scores[inside] = scores[inside, targets[inside] - g0]
        if member_scores is not None:
            r, c = ((rows.members >= g0) & (rows.members < g1)).nonzero(as_tuple=True)
            member_scores[r, c] = scores[r, rows.members[r, c] - g0]
    return target_scores, member_scores


def _ahead(scores: torch.Tensor, g0: int, target_scores: torch.Tensor, rows: _Query) -> torch.Tensor:
    """Candidates of this block ranked before each query's target (higher score, or equal with
    a lower index), the excluded image never counted: harness.evaluation.metrics.target_ranks per block."""
    columns = torch.arange(g0, g0 + scores.shape[1]).unsqueeze(0)
    target = target_scores.unsqueeze(1)
    ahead = (scores > target) | ((scores == target) & (columns < rows.targets.unsqueeze(1)))
    if rows.exclude is not None:
        ahead &= columns != rows.exclude.unsqueeze(1)
    return ahead.sum(dim=1)


def _member_order(member_scores: torch.Tensor, members: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Each row's set members other than its reference, best first (ties by gallery index), -1
    padded at the end: what CIRR's recall_subset submission lists (a member listed twice once)."""
    candidate = first_members(members) & (members != reference.unsqueeze(1))
    values = member_scores.masked_fill(~candidate, float("-inf"))
    keys = members.masked_fill(~candidate, torch.iinfo(torch.long).max)
    order = torch.argsort(keys, dim=1, stable=True)  # index ascending first ...
    values, keys = values.gather(1, order), keys.gather(1, order)
    order = torch.argsort(values, dim=1, descending=True, stable=True)  # ... then score, keeping index order on ties
    ordered = keys.gather(1, order)
    return ordered.masked_fill(ordered == torch.iinfo(torch.long).max, -1)


def ordered_top_k(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (value desc, index asc) of each row of candidate pairs."""
    order = torch.argsort(indices, dim=1, stable=True)  # index ascending first ...
    values, indices = values.gather(1, order), indices.gather(1, order)
    order = torch.argsort(values, dim=1, descending=True, stable=True)  # ... then value, keeping index order on ties
    return values.gather(1, order)[:, :k], indices.gather(1, order)[:, :k]


def merge_top_k(best: tuple[torch.Tensor, torch.Tensor], block: tuple[torch.Tensor, torch.Tensor],
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best (value desc, index asc) of two (values, indices) top lists of the same queries."""
    return ordered_top_k(torch.cat([best[0], block[0]], 1), torch.cat([best[1], block[1]], 1), k)


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
    values, local = ordered_top_k(values, local, k)
    return values, local + offset
