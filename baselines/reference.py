"""Reference points: image-only, text-only and image+text sum on a small dual encoder.

family: reference | paper: none (standard CIR lower bounds, e.g. CIRR's "Image-only" and
"Text-only" rows, Liu et al. ICCV 2021) | assumes: nothing beyond the shared train loop.

They show what a benchmark rewards: image-only ranks by looking like the reference,
text-only by matching the caption's words, sum by both without interaction. Every other
method is compared with this floor. The dual encoder is a tiny transformers
``CLIPVisionModel`` (CLS pooled) and a tiny ``BertModel`` (mean pooled) over a
word-level tokenizer trained on the training captions, each followed by a linear
projection; the target side is always the image embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from transformers import BertConfig, BertModel, CLIPVisionModel

from harness.backbones.vision import tiny_vision_config
from harness.data.synthetic.captions import template_corpus
from harness.methods.base import CIRMethod, MethodContext, MethodParams
from harness.registry import register_method
from harness.text import train_word_tokenizer

#: Pixel normalisation (x / 255 - mean) / std, as in the prototype runs (prototype.md §2).
PIXEL_MEAN, PIXEL_STD = 0.5, 0.25


class DualEncoderParams(MethodParams):
    """Sizes of the tiny dual encoder (defaults: prototype.md §2, 'Baselines')."""

    embed_dim: int = Field(256, ge=8, description="joint embedding width")
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
        tokens = self.tokenizer(captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        mask = tokens["attention_mask"].to(device)
        hidden = self.encoder(input_ids=tokens["input_ids"].to(device), attention_mask=mask).last_hidden_state
        pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.projection(pooled)


class _DualEncoder(CIRMethod):
    Params = DualEncoderParams
    uses_image = True
    uses_text = True

    def __init__(self, params: DualEncoderParams, context: MethodContext):
        super().__init__(params, context)
        self.image_tower = ImageTower(params, context.image_size)
        self.text_tower = TextTower(params, context.corpus) if self.uses_text else None

    @property
    def tokenizer(self):  # saved with the run by the runner
        return None if self.text_tower is None else self.text_tower.tokenizer

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_tower(images), dim=-1)

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        parts = []
        if self.uses_image:
            parts.append(F.normalize(self.image_tower(images), dim=-1))
        if self.uses_text:
            assert self.text_tower is not None
            parts.append(F.normalize(self.text_tower(captions), dim=-1))
        return F.normalize(torch.stack(parts).sum(0), dim=-1)


@register_method("image_only", family="reference", description="reference image embedding alone (ignores the caption)")
class ImageOnly(_DualEncoder):
    uses_text = False


@register_method("text_only", family="reference", description="relative caption embedding alone (ignores the reference)")
class TextOnly(_DualEncoder):
    uses_image = False


@register_method("sum", family="reference",
                 description="late fusion: normalised image + normalised text embedding, no interaction")
class ImageTextSum(_DualEncoder):
    pass
