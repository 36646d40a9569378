"""Bases of the methods built on the shared dual encoder (CLIP4Cir, Pic2Word, SEARLE, references),
and where their dual encoder comes from: stage 0's tiny CLIP, or a pretrained directory.

    encoder = dual_encoder(params.backbone, params.stage0, context)
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from harness.backbones.dual_encoder import DualEncoder
from harness.backbones.params import BackboneParams
from harness.core.errors import HarnessError
from harness.data.caption_join import ORDER_SEPARATOR
from harness.methods.base import CIRMethod, MethodContext
from harness.pretraining.stage0 import Stage0Params, clip_request, ensure_stage0_clip


def dual_encoder(backbone: BackboneParams, stage0: Stage0Params, context: MethodContext) -> DualEncoder:
    """The backbone a method asked for: stage 0's tiny CLIP (built or read from its cache), or a
    pretrained CLIP / SigLIP directory."""
    if backbone.source == "pretrained":
        if not backbone.vision_dir:
            raise HarnessError("source 'pretrained' needs vision_dir: a whole CLIP or SigLIP directory",
                               field="method.params.backbone.vision_dir", fix="set it to your local checkpoint")
        return DualEncoder.from_directory(backbone.vision_dir)
    if context.train_split is None:
        raise HarnessError("the tiny dual encoder comes from stage 0, which needs the training split",
                           field="method.params.backbone.source",
                           fix="run through `harness run`, or use source: pretrained")
    directory = ensure_stage0_clip(clip_request(context.dataset_key, backbone, stage0), context.train_split,
                                   progress=context.progress)
    return DualEncoder.from_stage0(directory)


class DualEncoderMethod(CIRMethod):
    """A method whose ``self.encoder`` is a ``DualEncoder`` from ``params.backbone`` /
    ``params.stage0``: it starts from stage 0's CLIP when the backbone is tiny."""

    @classmethod
    def warm_starts(cls, params: Any, dataset_key: str) -> list[Any]:
        from harness.pretraining.warm_start import Stage0WarmStart

        if getattr(params, "start", "stage0") != "stage0" or params.backbone.source != "tiny":
            return []
        return [Stage0WarmStart(clip_request(dataset_key, params.backbone, params.stage0), full=False)]

    @property
    def tokenizer(self):  # saved with the run by the runner
        return self.encoder.tokenizer


class TextualInversionMethod(DualEncoderMethod):
    """A frozen dual encoder and a network (``invert``) that turns an image feature into a
    pseudo-word token. A query is ``params.query_prompt`` with the pseudo-word at
    ``placeholder`` and the caption at ``{caption}``; a target is the image feature. A caption
    holding both orders of a two-caption query (the ``both`` convention) gives the normalised
    mean of the two orders' features. Trained on images alone unless ``params.supervised``."""

    placeholder: ClassVar[str] = "*"

    def __init__(self, params: Any, context: MethodContext):
        super().__init__(params, context)
        self.training_data = "triplets" if params.supervised else "images"
        self.encoder = dual_encoder(params.backbone, params.stage0, context).requires_grad_(False)

    def invert(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pseudo_word(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(frozen image features, their pseudo-word token embeddings)."""
        with torch.no_grad():
            features = self.encoder.image_features(images)
        return features, self.invert(features)

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder.image_features(images), dim=-1)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "query_prompt": self.params.query_prompt,
                "pseudo_word": self.placeholder}

    def frozen_target_state(self) -> dict[str, torch.Tensor] | None:
        """The frozen dual encoder (weights and preprocessing buffers) when nothing of it trains."""
        state = dict(self.encoder.state_dict(keep_vars=True))
        if any(isinstance(t, torch.nn.Parameter) and t.requires_grad for t in state.values()):
            return None
        return {name: t.detach() for name, t in state.items()}

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        _, token = self.pseudo_word(images)
        orders = [caption.split(ORDER_SEPARATOR) for caption in captions]
        features = []
        for index in range(max(len(o) for o in orders)):
            prompts = [self.params.query_prompt.replace("{caption}", o[min(index, len(o) - 1)]) for o in orders]
            features.append(F.normalize(self.encoder.prompt_features(prompts, token, self.placeholder), dim=-1))
        return F.normalize(torch.stack(features).mean(0), dim=-1)
