"""The instance-specific soft prompt: a learnable prompt pool with keys (L2P-style).

    pool = PromptPool(pool_size=10, length=4, dim=128, top_k=1)
    prompts, key_loss, selected = pool(query_feature)   # [B, k*L, dim], [B], [B, k]

The query feature picks the ``top_k`` prompts whose keys are closest by cosine; the key loss
1 - cos(query, selected key) (per item, averaged over its k prompts) pulls selected keys
towards the queries that chose them.
Selection details are NOT FOUND in the paper; this follows Learning-to-Prompt (Wang et al.,
CVPR 2022), as docs/assumptions.md records. ``RunningStandardiser`` is this harness's
addition for the query features (see the method's ``standardise_selection`` and
``selection_calibration``). Usage counts are kept for reports.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.device import full_precision
from harness.core.distributed import batch_moments


class RunningStandardiser(nn.Module):
    """Per-dimension standardisation: batch statistics while training, an exponential
    moving average of them (started from the first batch, not from 0/1) at evaluation, so
    an embedding never depends on the rest of its batch."""

    def __init__(self, dim: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, features: torch.Tensor, moments: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Standardised ``features``; ``moments`` (from ``observe`` of the whole batch) stand in
        for the batch's own when ``features`` are one micro-batch of it."""
        if moments is not None:
            mean, var = moments
        elif self.training and features.shape[0] > 1:
            mean, var = self.observe(features)
        else:
            mean, var = self.mean, self.var
        return (features - mean) / (var + self.eps).sqrt()

    def observe(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch moments of ``features`` (over the global batch under torchrun), folded into
        the running ones."""
        mean, var = batch_moments(features)
        with torch.no_grad():
            weight = 1.0 if int(self.batches) == 0 else self.momentum
            self.mean.lerp_(mean.detach(), weight)
            self.var.lerp_(var.detach(), weight)
            self.batches += 1
        return mean, var

    def calibrate(self, features: torch.Tensor) -> None:
        """Set the evaluation moments to those of ``features`` (computed with the final
        weights): the moving average lags when the features still drift at the last steps."""
        with torch.no_grad():
            self.mean.copy_(features.mean(0))
            self.var.copy_(features.var(0, unbiased=False))
            self.batches.clamp_(min=1)


class PromptPool(nn.Module):
    """N prompts of length L with N keys; top-k selection by cosine similarity."""

    def __init__(self, pool_size: int, length: int, dim: int, top_k: int = 1, key_dim: int | None = None):
        super().__init__()
        if top_k > pool_size:
            raise ValueError(f"top_k {top_k} > pool_size {pool_size}")
        self.top_k = top_k
        self.length = length
        self.prompts = nn.Parameter(torch.randn(pool_size, length, dim) * 0.02)
        self.keys = nn.Parameter(torch.empty(pool_size,
                                             key_dim or dim).uniform_(-1, 1))  # L2P initialises keys uniformly
        self.register_buffer("usage", torch.zeros(pool_size), persistent=False)

    @property
    def pool_size(self) -> int:
        return int(self.prompts.shape[0])

    def forward(self, query_feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with full_precision(query_feature.device):  # bf16 would tie close keys
            similarity = F.normalize(query_feature.float(), dim=-1) @ F.normalize(self.keys.float(), dim=-1).T
        selected = similarity.topk(self.top_k, dim=-1).indices
        prompts = self.prompts[selected].flatten(1, 2)
        key_loss = (1.0 - similarity.gather(1, selected)).mean(1)
        if not self.training:
            self.usage += torch.bincount(selected.flatten(), minlength=self.pool_size).to(self.usage)
        return prompts, key_loss, selected

    def usage_statistics(self) -> dict[str, object]:
        """Selections per prompt since the last reset, and the effective number of prompts
        used: exp(entropy of the usage distribution)."""
        counts = self.usage.detach().cpu()
        total = float(counts.sum())
        effective = 0.0
        if total > 0:
            share = counts[counts > 0] / total
            effective = math.exp(float(-(share * share.log()).sum()))
        return {"prompt_usage": [int(c) for c in counts], "prompts_used_effective": effective}

    def reset_usage(self) -> None:
        self.usage.zero_()
