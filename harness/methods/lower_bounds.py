"""Reference points: image-only, text-only and image+text sum on a small dual encoder.

family: reference (image-only, text-only), late_fusion (sum) | paper: none (standard CIR lower bounds,
e.g. CIRR's "Image-only" and "Text-only" rows, Liu et al. ICCV 2021) | assumes: nothing beyond the shared train loop.

They show what a benchmark rewards: image-only ranks by looking like the reference,
text-only by matching the caption's words, sum by both without interaction. Every other
method is compared with this floor. The target side is always the image embedding.

``start: stage0`` (the default) fine-tunes the same dual encoder the other methods start
from (stage 0's tiny CLIP, or a pretrained CLIP / SigLIP directory), so a comparison
differs only in the method. ``start: scratch`` builds a tiny transformers
``CLIPVisionModel`` (CLS pooled) and a tiny ``BertModel`` (mean pooled, over a word-level
tokenizer trained on the training captions), each with a linear projection, from random
weights (the prototype's references, docs/assumptions.md).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from transformers import BertConfig, BertModel, CLIPVisionModel

from harness.backbones.dual_encoder import DualEncoder
from harness.backbones.params import BackboneParams
from harness.backbones.tokenization import train_word_tokenizer
from harness.backbones.vision import preprocessing_record, tiny_vision_config
from harness.core.device import to_device
from harness.data.synthetic.captions import template_corpus
from harness.methods.base import MethodContext, MethodParams
from harness.methods.dual_encoder_methods import DualEncoderMethod, dual_encoder
from harness.methods.registry import register_method
from harness.pretraining.stage0 import Stage0Params

#: Pixel normalisation (x / 255 - mean) / std, as in the prototype runs (docs/assumptions.md).
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


class DualEncoderParams(MethodParams):
    """Where the dual encoder starts, and the sizes of the from-scratch one (defaults:
    docs/assumptions.md, 'Baselines')."""

    start: Literal["stage0", "scratch"] = Field(
        "stage0", description="stage0: fine-tune the shared dual encoder (stage-0 CLIP or backbone.vision_dir); "
        "scratch: the random-init towers sized below")
    backbone: BackboneParams = Field(default_factory=BackboneParams,
                                     description="start stage0: tiny = stage 0's CLIP; pretrained: vision_dir = a "
                                                 "CLIP/SigLIP dir")
    stage0: Stage0Params = Field(default_factory=Stage0Params, description="stage 0 that builds the tiny CLIP")
    embed_dim: int = Field(256, ge=8, description="scratch: joint embedding width")
    vision_hidden: int = Field(128, ge=16, description="vision transformer width")
    vision_layers: int = Field(2, ge=1, description="vision transformer layers")
    vision_heads: int = Field(4, ge=1, description="vision attention heads")
    patch_size: int = Field(16, ge=2, description="ViT patch side in pixels")
    text_hidden: int = Field(128, ge=16, description="text transformer width")
    text_layers: int = Field(2, ge=1, description="text transformer layers")
    text_heads: int = Field(4, ge=1, description="text attention heads")
    max_caption_tokens: int = Field(32, ge=4, description="captions are truncated to this many tokens")


class ImageTower(nn.Module):
    """Tiny ViT (transformers CLIPVisionModel) -> CLS -> linear projection."""

    def __init__(self, params: DualEncoderParams, image_size: int):
        super().__init__()
        config = tiny_vision_config(params.vision_hidden, params.vision_layers, params.vision_heads, image_size,
                                    params.patch_size)
        self.encoder = CLIPVisionModel(config)
        self.projection = nn.Linear(params.vision_hidden, params.embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD
        return self.projection(self.encoder(pixel_values=pixels).pooler_output)


class TextTower(nn.Module):
    """Tiny BERT over a locally trained word tokenizer -> mean pooling -> linear projection."""

    def __init__(self, params: DualEncoderParams, corpus: list[str]):
        super().__init__()
        self.tokenizer = train_word_tokenizer([*corpus, *template_corpus()], max_length=params.max_caption_tokens)
        config = BertConfig(
            vocab_size=len(self.tokenizer),
            hidden_size=params.text_hidden,
            num_hidden_layers=params.text_layers,
            num_attention_heads=params.text_heads,
            intermediate_size=4 * params.text_hidden,
            max_position_embeddings=max(64, params.max_caption_tokens),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.projection = nn.Linear(params.text_hidden, params.embed_dim)
        self.max_length = params.max_caption_tokens

    def forward(self, captions: list[str]) -> torch.Tensor:
        device = self.projection.weight.device
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        mask = to_device(tokens["attention_mask"], device)
        hidden = self.encoder(input_ids=to_device(tokens["input_ids"], device), attention_mask=mask).last_hidden_state
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.projection(pooled)


class _DualEncoder(DualEncoderMethod):
    Params = DualEncoderParams
    uses_image = True
    uses_text = True

    def __init__(self, params: DualEncoderParams, context: MethodContext):
        super().__init__(params, context)
        self.encoder: DualEncoder | None = None
        if params.start == "stage0":
            self.encoder = dual_encoder(params.backbone, params.stage0, context)
            self._used = [module for module, used in ((self.encoder.image_tower, True),
                                                      (self.encoder.image_projection, True),
                                                      (self.encoder.text_tower, self.uses_text),
                                                      (self.encoder.text_projection, self.uses_text)) if used]
            self.encoder.model.logit_scale.requires_grad_(False)  # the loss has its own temperature
            if not self.uses_text:
                self.encoder.text_tower.requires_grad_(False)
                self.encoder.text_projection.requires_grad_(False)
        else:
            self.image_tower = ImageTower(params, context.image_size)
            self.text_tower = TextTower(params, context.corpus) if self.uses_text else None

    @property
    def tokenizer(self):  # saved with the run by the runner
        if self.encoder is not None:
            return self.encoder.tokenizer
        return None if self.text_tower is None else self.text_tower.tokenizer

    def parameter_counts(self) -> dict[str, int]:
        """Counts of the towers this method uses (image-only never runs the text tower)."""
        if self.encoder is None:
            return super().parameter_counts()
        parameters = [p for module in self._used for p in module.parameters()]
        return {"total": sum(p.numel() for p in parameters),
                "trainable": sum(p.numel() for p in parameters if p.requires_grad)}

    def provenance(self) -> dict[str, Any]:
        """The stage-0 (or pretrained) dual encoder's, or for towers from random weights what they pool."""
        if self.encoder is not None:
            return self.encoder.provenance()
        return {"image_embedding": "projection of a random-weight CLIP vision tower's CLS after post_layernorm",
                "text_embedding": "projection of the masked mean of a random-weight BERT's last hidden state",
                "image": preprocessing_record(self.context.image_size, "none (images at the dataset's size)",
                                              [PIXEL_MEAN] * 3, [PIXEL_STD] * 3)}

    def _image(self, images: torch.Tensor) -> torch.Tensor:
        features = self.encoder.image_features(images) if self.encoder is not None else self.image_tower(images)
        return F.normalize(features, dim=-1)

    def _text(self, captions: list[str]) -> torch.Tensor:
        if self.encoder is not None:
            return F.normalize(self.encoder.text_features(captions), dim=-1)
        assert self.text_tower is not None
        return F.normalize(self.text_tower(captions), dim=-1)

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return self._image(images)

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        parts = []
        if self.uses_image:
            parts.append(self._image(images))
        if self.uses_text:
            parts.append(self._text(captions))
        return F.normalize(torch.stack(parts).sum(0), dim=-1)


@register_method("image_only", family="reference", description="reference image embedding alone (ignores the caption)")
class ImageOnly(_DualEncoder):
    uses_text = False


@register_method("text_only", family="reference",
                 description="relative caption embedding alone (ignores the reference)")
class TextOnly(_DualEncoder):
    uses_image = False


@register_method("sum", family="late_fusion",
                 description="late fusion: normalised image + normalised text embedding, no interaction")
class ImageTextSum(_DualEncoder):
    pass
