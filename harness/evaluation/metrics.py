"""Retrieval metrics of CIR: Recall@K, Recall_subset@K, the CIRR Avg, mAP@K, and the metrics of
an evaluation from its ranks under a protocol (``metrics_from_ranks``).

Ranking is by descending score with ties broken by gallery index (lower index first), so a
ranking never depends on sort stability. The rank of the target is computed directly:

    rank = #{candidates scoring higher} + #{candidates scoring equal with a lower index}

with the reference removed from the candidates when the protocol says so (CIRR). Ranks are
0-based; Recall@K is the percentage of queries whose target rank is < K.

    ranks = target_ranks(scores, target_index, exclude_index=reference_index)
    recall_at_k(ranks, [1, 5, 10, 50])   # {1: 53.2, 5: ...}
    metrics, by_category = metrics_from_ranks(config, triplets, ranks, subset, top_names, categories=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from harness.core.errors import HarnessError
from harness.data.triplet import Triplet
from harness.evaluation.protocol import EvalConfig


def target_ranks(
    scores: torch.Tensor,
    target_index: torch.Tensor,
    exclude_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """0-based rank of each query's target among the gallery columns of ``scores`` [Q, G].

    ``exclude_index`` (e.g. the reference) is removed from the candidates; -1 means none."""
    queries, gallery = scores.shape
    rows = torch.arange(queries)
    target_score = scores[rows, target_index].unsqueeze(1)
    columns = torch.arange(gallery).unsqueeze(0)
    ahead = (scores > target_score) | ((scores == target_score) & (columns < target_index.unsqueeze(1)))
    if exclude_index is not None:
        valid = exclude_index >= 0
        excluded = torch.zeros_like(ahead)
        excluded[rows[valid], exclude_index[valid]] = True
        ahead &= ~excluded
    return ahead.sum(dim=1)


def ranking(scores: torch.Tensor, exclude_index: torch.Tensor | None = None, top: int | None = None) -> torch.Tensor:
    """Gallery indices of each row in ranked order (ties by index), excluded column removed.

    Returns [Q, top] (or [Q, G - 1] / [Q, G] when ``top`` is None)."""
    queries, gallery = scores.shape
    masked = scores.clone().float()
    width = gallery
    if exclude_index is not None:
        valid = exclude_index >= 0
        masked[torch.arange(queries)[valid], exclude_index[valid]] = float("-inf")
        width = gallery - 1 if bool(valid.all()) else gallery
    order = torch.sort(-masked, dim=1, stable=True).indices
    keep = width if top is None else min(top, width)
    return order[:, :keep]


def recall_at_k(ranks: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K in percent for each K."""
    if ranks.numel() == 0:
        raise ValueError("no queries to score")
    return {k: float((ranks < k).float().mean().item() * 100.0) for k in ks}


def subset_ranks(
    scores: torch.Tensor,
    subset_index: torch.Tensor,
    target_index: torch.Tensor,
    reference_index: torch.Tensor,
) -> torch.Tensor:
    """Rank of the target within each query's image set minus its reference (CIRR Rsubset).

    ``subset_index`` [Q, S] holds gallery indices of the set members (reference included,
    -1 for padding). The reference is always removed, as in CLIP4Cir's
    ``compute_cirr_val_metrics``; CIRR sets leave 5 candidates."""
    member_scores = scores.gather(1, subset_index.clamp(min=0))
    target_score = scores[torch.arange(scores.shape[0]), target_index]
    return subset_ranks_of_members(member_scores, subset_index, target_score, target_index, reference_index)


#: the rank of a target that is not among a query's candidates: a miss at every K
ABSENT = 2**31 - 1


def first_members(subset_index: torch.Tensor) -> torch.Tensor:
    """[Q, S] bool: True at each member's first listing in its row (padding -1 excluded), so a
    set member listed twice counts once, as CLIP4Cir's ``compute_cirr_val_metrics`` masks the
    ranked gallery by membership."""
    same = subset_index.unsqueeze(2) == subset_index.unsqueeze(1)  # [Q, S, S]
    earlier = torch.ones(same.shape[1:], dtype=torch.bool).tril(diagonal=-1)
    return (subset_index >= 0) & ~(same & earlier).any(dim=2)


def subset_ranks_of_members(
    member_scores: torch.Tensor,
    subset_index: torch.Tensor,
    target_score: torch.Tensor,
    target_index: torch.Tensor,
    reference_index: torch.Tensor,
) -> torch.Tensor:
    """``subset_ranks`` from the members' scores [Q, S] and the targets' [Q] alone (what blockwise
    scoring keeps of a gallery it never holds whole). A target that is not a candidate of its own
    set (custom data; real CIRR never has one) gets ``ABSENT``, a miss, as in CLIP4Cir's scorer."""
    target_score = target_score.unsqueeze(1)
    candidate = first_members(subset_index) & (subset_index != reference_index.unsqueeze(1))
    earlier = subset_index < target_index.unsqueeze(1)
    ahead = (member_scores > target_score) | ((member_scores == target_score) & earlier)
    inside = (candidate & (subset_index == target_index.unsqueeze(1))).any(dim=1)
    return (ahead & candidate).sum(dim=1).masked_fill(~inside, ABSENT)


def cirr_metrics(
    ranks: torch.Tensor, ks: Sequence[int], subset: torch.Tensor | None, subset_ks: Sequence[int]
) -> dict[str, float]:
    """Named metrics: recall_at_K, recall_subset_at_K and avg = (R@5 + Rsubset@1) / 2."""
    metrics = {f"recall_at_{k}": value for k, value in recall_at_k(ranks, ks).items()}
    if subset is not None:
        metrics |= {f"recall_subset_at_{k}": value for k, value in recall_at_k(subset, subset_ks).items()}
        if "recall_at_5" in metrics and "recall_subset_at_1" in metrics:
            metrics["avg"] = (metrics["recall_at_5"] + metrics["recall_subset_at_1"]) / 2
    return metrics


def map_at_k(top: torch.Tensor, relevant: list[set[int]], ks: Sequence[int]) -> dict[str, float]:
    """mAP@K in percent with several ground truths per query, as CIRCO's evaluation
    (miccunifi/CIRCO src/evaluation.py): precision at each relevant position of the ranking
    ``top`` [Q, >= max K], summed over the first K positions and divided by min(#ground truths, K)."""
    if top.shape[1] < max(ks):
        raise ValueError(f"mAP@{max(ks)} needs the top {max(ks)} of each ranking, got {top.shape[1]}")
    labels = torch.tensor([[int(i) in truth for i in row] for row, truth in zip(top.tolist(), relevant, strict=True)],
                          dtype=torch.float32)
    positions = torch.arange(1, labels.shape[1] + 1, dtype=torch.float32)
    precisions = labels.cumsum(dim=1) * labels / positions
    counts = torch.tensor([len(truth) for truth in relevant], dtype=torch.float32)
    return {f"map_at_{k}": float((precisions[:, :k].sum(1) / counts.clamp(max=k)).mean() * 100.0) for k in ks}


def soft_recall_at_k(top_names: list[list[str]], soft_targets: list[dict[str, float]],
                     ks: Sequence[int]) -> dict[int, float]:
    """CIRPLANT's soft Recall@K on CIRR val, in percent: per query the best ``target_soft`` score
    among its top K (scores 1.0 / 0.5 / 0.2; negative ones count 0), averaged over queries
    (Cuberick-Orion/CIRPLANT model/OSCAR/OSCAR_CIRPLANT.py)."""
    result = {}
    for k in ks:
        best = [max([0.0, *(soft.get(name, 0.0) for name in names[:k])]) for names,
                soft in zip(top_names, soft_targets, strict=True)]
        result[k] = 100.0 * sum(best) / len(best)
    return result


def with_soft_recall(metrics: dict[str, float], top_names: list[list[str]], soft_targets: list[dict[str, float]],
                     ks: Sequence[int]) -> dict[str, float]:
    """``metrics`` with Recall@K replaced by its soft version (and Avg recomputed from it)."""
    metrics = metrics | {f"recall_at_{k}": v for k, v in soft_recall_at_k(top_names, soft_targets, ks).items()}
    if "recall_at_5" in metrics and "recall_subset_at_1" in metrics:
        metrics["avg"] = (metrics["recall_at_5"] + metrics["recall_subset_at_1"]) / 2
    return metrics


def metrics_by_category(ranks: torch.Tensor, categories: Sequence[str | None], ks: Sequence[int],
                        subset_ks: Sequence[int]) -> dict[str, dict[str, float]]:
    """Recall@K per query category (in order of first appearance), with each one's query count."""
    rows: dict[str, list[int]] = {}
    for row, category in enumerate(categories):
        rows.setdefault(str(category), []).append(row)
    result = {}
    for category, selected in rows.items():
        result[category] = cirr_metrics(ranks[torch.tensor(selected)], ks, None, subset_ks)
        result[category]["num_queries"] = float(len(selected))
    return result


def category_mean(by_category: dict[str, dict[str, float]], keys: Iterable[str]) -> dict[str, float]:
    """FashionIQ's averaging: each metric the mean of its per-category values."""
    return {key: sum(m[key] for m in by_category.values()) / len(by_category) for key in keys}


def fashioniq_avg(metrics: dict[str, float]) -> dict[str, float]:
    """FashionIQ's "Avg" column, (R@10 + R@50) / 2 (every paper's table; with the category mean of
    each recall it is also the mean of the categories' Avg), when both recalls are there."""
    if "recall_at_10" in metrics and "recall_at_50" in metrics:
        return {"avg_r10_r50": (metrics["recall_at_10"] + metrics["recall_at_50"]) / 2}
    return {}


def metrics_from_ranks(config: EvalConfig, triplets: Sequence[Triplet], ranks: torch.Tensor | None,
                       subset: torch.Tensor | None, top_names: list[list[str]] | None,
                       categories: bool) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(metrics, metrics per category) of the queries ``triplets`` from the targets' 0-based
    ``ranks`` [Q], their ranks within the image sets ``subset`` [Q] and the ranked gallery names
    ``top_names`` (soft recall, mAP); ``categories``: category galleries (FashionIQ)."""
    if ranks is None:
        if subset is None:
            return {}, {}
        return {f"recall_subset_at_{k}": v for k, v in recall_at_k(subset, config.subset_ks).items()}, {}
    metrics = cirr_metrics(ranks, config.ks, subset, config.subset_ks)
    if config.target_field == "soft":
        if not all(t.soft_targets for t in triplets):
            raise HarnessError("eval.target_field soft needs target_soft labels (CIRR val)", field="eval.target_field",
                               fix="use target_field: hard for this dataset")
        metrics = with_soft_recall(metrics, top_names or [], [dict(t.soft_targets) for t in triplets], config.ks)
    if config.map_ks and any(t.ground_truths for t in triplets):
        metrics |= _map(config.map_ks, triplets, top_names or [])
    by_category: dict[str, dict[str, float]] = {}
    if categories:
        by_category = metrics_by_category(ranks, [t.category for t in triplets], config.ks, config.subset_ks)
        if config.category_mean:  # the FashionIQ protocol: each metric averaged over the categories
            metrics = category_mean(by_category, metrics)
        for values in (metrics, *by_category.values()):
            values |= fashioniq_avg(values)
    return metrics, by_category


def _map(ks: list[int], triplets: Sequence[Triplet], top_names: list[list[str]]) -> dict[str, float]:
    """mAP@K over every ground truth (CIRCO), with names numbered as they come (-1 pads a short list)."""
    names: dict[str, int] = {}
    depth = max(ks)
    top = torch.tensor([[names.setdefault(n, len(names)) for n in row[:depth]] + [-1] * (depth - len(row[:depth]))
                        for row in top_names])
    relevant = [{names.setdefault(g, len(names)) for g in (t.ground_truths or (t.target,))} for t in triplets]
    return map_at_k(top, relevant, ks)
