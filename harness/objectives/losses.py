"""The score every method ranks by and the contrastive loss that trains it, shared by stage 0,
the methods and the evaluation (a leaf: it imports no harness model or loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.device import full_precision
from harness.core.distributed import gather_across_ranks


def similarity(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """[q, g] scores of ``queries`` [q, D] against ``gallery`` [g, D] (inner product) or [g, M, D]
    (the maximum over each image's M vectors)."""
    if gallery.dim() == 2:
        return queries @ gallery.T
    rows, vectors, dim = gallery.shape
    return (queries @ gallery.reshape(rows * vectors, dim).T).view(len(queries), rows, vectors).amax(dim=2)


def info_nce(query: torch.Tensor, target: torch.Tensor, temperature: float | torch.Tensor,
             symmetric: bool = False) -> torch.Tensor:
    """In-batch InfoNCE: row i of ``query`` should match row i of ``target`` (both normalised);
    a [B, M, D] ``target`` scores each query by its best vector (max-similarity).

    Under torchrun the negatives are every rank's rows (``train.gather_negatives``), so the
    loss averaged over ranks is the single-process loss of the global batch. The similarities
    are float32 even under bf16 autocast: at temperature 0.05 a logit of 20 carries a bf16
    rounding error of about 0.06, as large as the differences the loss has to learn from."""
    query, target = query.float(), target.float()
    with full_precision(query.device):
        targets, offset = gather_across_ranks(target)
        labels = torch.arange(query.shape[0], device=query.device) + offset
        multi = target.dim() == 3
        loss = F.cross_entropy((similarity(query, targets) if multi else query @ targets.T) / temperature, labels)
        if symmetric:
            queries, _ = gather_across_ranks(query)
            backward = similarity(queries, target).T if multi else target @ queries.T
            loss = (loss + F.cross_entropy(backward / temperature, labels)) / 2
    return loss
