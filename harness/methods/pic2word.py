"""Pic2Word: zero-shot CIR by mapping an image to a pseudo-word of a frozen CLIP text encoder.

family: textual_inversion | paper: Saito et al., "Pic2Word: Mapping pictures to words for
zero-shot composed image retrieval" (CVPR 2023) | code spec:
google-research/composed_image_retrieval@8c05329 (docs/sources.md).

Training sees images alone (``training_data = "images"``): the mapping network turns the
frozen image feature into a token embedding ``*``; the text feature of "a photo of *" is
pulled to the image feature by a symmetric InfoNCE with CLIP's logit scale. Only the mapping
network learns. A query is "a photo of * , {caption}" through the frozen text encoder; a
target is the image feature. ``supervised: true`` instead trains the mapping network on
triplets (query prompt against target image), as many follow-up papers do.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.backbones.params import BackboneParams
from harness.methods.base import (
    ImageBatch,
    MethodContext,
    MethodParams,
    TripletBatch,
    info_nce,
)
from harness.methods.dual_encoder_methods import TextualInversionMethod
from harness.methods.registry import register_method
from harness.pretraining.stage0 import Stage0Params


class Pic2WordParams(MethodParams):
    """Pic2Word settings (defaults: the paper's code: middle_dim 512, 2 layers, dropout 0.1)."""

    backbone: BackboneParams = Field(default_factory=BackboneParams,
                                     description="tiny: stage 0's CLIP; pretrained: vision_dir = a whole CLIP/SigLIP "
                                                 "dir")
    stage0: Stage0Params = Field(default_factory=Stage0Params, description="stage 0 that builds the tiny CLIP")
    middle_dim: int = Field(512, ge=8, description="mapping network hidden width (--middle_dim)")
    layers: int = Field(2, ge=1, description="[Linear, Dropout, ReLU] blocks before the output layer (n_layer)")
    dropout: float = Field(0.1, ge=0, lt=1, description="mapping network dropout (--droprate)")
    train_prompt: str = Field("a photo of *", description="prompt whose text feature should match the image (training)")
    query_prompt: str = Field("a photo of * , {caption}", description="query prompt; * is the pseudo-word")
    supervised: bool = Field(False, description="train on triplets instead of images alone (not the paper's setting)")


class MappingNetwork(nn.Module):
    """IM2TEXT: image feature -> pseudo-word token embedding."""

    def __init__(self, feature_dim: int, token_width: int, middle_dim: int, layers: int, dropout: float):
        super().__init__()
        blocks: list[nn.Module] = []
        width = feature_dim
        for _ in range(layers):
            blocks += [nn.Linear(width, middle_dim), nn.Dropout(dropout), nn.ReLU()]
            width = middle_dim
        self.layers = nn.Sequential(*blocks)
        self.fc_out = nn.Linear(width, token_width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.layers(features))


@register_method("pic2word", family="textual_inversion", paper="Saito et al., CVPR 2023",
                 description="Pic2Word: image -> pseudo-word of a frozen CLIP, trained on images alone")
class Pic2Word(TextualInversionMethod):
    Params = Pic2WordParams
    caption_convention = "reversed"  # "a photo of * , {cap2} and {cap1}" (src/data.py L228)
    placeholder = "*"

    def __init__(self, params: Pic2WordParams, context: MethodContext):
        super().__init__(params, context)
        self.mapping = MappingNetwork(self.encoder.feature_dim, self.encoder.token_width, params.middle_dim,
                                      params.layers, params.dropout)

    def invert(self, features: torch.Tensor) -> torch.Tensor:
        return self.mapping(features)

    def loss_inputs(self, batch: ImageBatch | TripletBatch) -> dict[str, torch.Tensor]:
        if isinstance(batch, TripletBatch):
            return super().loss_inputs(batch)
        features, token = self.pseudo_word(batch.images)
        text = F.normalize(self.encoder.prompt_features([self.params.train_prompt] * len(batch.names), token), dim=-1)
        return {"text": text, "image": F.normalize(features, dim=-1)}

    def loss_from(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "query" in inputs:  # supervised: triplets
            return super().loss_from(inputs)
        temperature = float(1.0 / self.encoder.logit_scale())
        return info_nce(inputs["text"], inputs["image"], temperature, symmetric=True)
