"""Connectors: vision features -> visual prompt tokens in the language model's embedding space.

- ``queries`` (the paper's): learnable query embeddings cross-attend to the vision features
  (Q-Former / resampler style) and become ``num_queries`` "sentence-level prompt" tokens.
- ``mlp``: one projected token per vision feature, LLaVA-1.5 style (Linear-GELU-Linear).
- ``checkpoint``: the LVLM's own vision-language alignment, as it was trained: LLaVA's
  ``multi_modal_projector`` (trained further) on every patch feature, Qwen2-VL's merger (already
  inside its vision tower) as is; one visual token per (merged) patch, Qwen's at their M-RoPE
  grid positions. Needs ``backbone.lvlm_dir``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn


class ConnectorParams(BaseModel):
    """Connector settings. ``num_queries`` is NOT FOUND in the paper: default 16 (assumption:
    one query per 16-pixel patch of a 64-pixel image; BLIP-2/SPRC use 32 at full scale)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["queries", "mlp", "checkpoint"] = Field(
        "queries", description="queries: learnable-query cross-attention (paper); mlp: a new LLaVA-style projector; "
        "checkpoint: the LVLM's own projector / merger, one token per patch (lvlm_dir only)")
    num_queries: int = Field(16, ge=1, description="learnable queries (type=queries)")
    heads: int = Field(4, ge=1, description="cross-attention heads (type=queries)")


class QueryConnector(nn.Module):
    """Learnable queries -> cross-attention over LayerNorm'd vision features -> MLP -> LM width."""

    def __init__(self, vision_dim: int, language_dim: int, num_queries: int, heads: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, vision_dim) * 0.02)
        self.norm = nn.LayerNorm(vision_dim)
        self.attention = nn.MultiheadAttention(vision_dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(vision_dim), nn.Linear(vision_dim, 4 * vision_dim), nn.GELU(),
                                 nn.Linear(4 * vision_dim, vision_dim))
        self.projection = nn.Linear(vision_dim, language_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        keys = self.norm(features)
        queries = self.queries.unsqueeze(0).expand(features.shape[0], -1, -1)
        tokens = queries + self.attention(queries, keys, keys, need_weights=False)[0]
        tokens = tokens + self.mlp(tokens)
        return self.projection(tokens)


class MLPConnector(nn.Module):
    """Every vision feature -> Linear -> GELU -> Linear (LLaVA-1.5 projector)."""

    def __init__(self, vision_dim: int, language_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(vision_dim, language_dim), nn.GELU(), nn.Linear(language_dim, language_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


def build_connector(params: ConnectorParams, vision_dim: int, language_dim: int) -> nn.Module:
    if params.type == "queries":
        return QueryConnector(vision_dim, language_dim, params.num_queries, params.heads)
    return MLPConnector(vision_dim, language_dim)
