"""CLIP4Cir: late (feature-level) fusion of CLIP image and text features by a learned Combiner.

family: late_fusion (SPRC's and DQU-CIR's usage; the seed's Figure 1 would call it early fusion:
README, "Method families") | paper: Baldrati et al., "Effective conditioned and composed image
retrieval combining CLIP-based features" (CVPR-W 2022) and "Composed image retrieval using
contrastive learning and task-oriented CLIP-based features" (TOMM 2023) | code spec:
ABaldrati/CLIP4Cir@dfed9f7 (docs/sources.md).

Two stages in one run of the shared loop:

1. task-oriented fine-tuning of the encoders with the element-wise sum as the query,
   ``normalize(image + text)`` against ``normalize(target image)``, logit scale 100;
2. the encoders frozen, the Combiner learns to fuse their features.

Assumption: the paper runs the stages with their own budgets and optimisers (stage 1: 100
epochs, AdamW lr 2e-6; stage 2: 300 epochs, Adam lr 2e-5). Here both share the harness's
step budget and optimiser, ``stage1_fraction`` of the steps going to stage 1 (default 0.5, our
choice), so that every method gets the same number of steps.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.backbones.params import BackboneParams
from harness.methods.base import MethodContext, MethodParams, TripletBatch
from harness.methods.dual_encoder_methods import DualEncoderMethod, dual_encoder
from harness.methods.registry import register_method
from harness.pretraining.stage0 import Stage0Params


class Clip4CirParams(MethodParams):
    """CLIP4Cir settings; sizes are ratios of the feature width d, the paper's 2560 and 5120
    for RN50x4's d = 640."""

    temperature: float = Field(0.01, gt=0, description="1 / logit scale; CLIP4Cir fixes the logit scale at 100")
    backbone: BackboneParams = Field(default_factory=BackboneParams,
                                     description="tiny: stage 0's CLIP; pretrained: vision_dir = a whole CLIP/SigLIP "
                                                 "dir")
    stage0: Stage0Params = Field(default_factory=Stage0Params, description="stage 0 that builds the tiny CLIP")
    stage1_fraction: float = Field(0.5, ge=0, le=1, description="share of the steps fine-tuning the encoders with "
                                   "the sum (stage 1); the rest trains the Combiner (assumption, see module doc)")
    encoders: Literal["both", "text", "image"] = Field("both", description="encoders fine-tuned in stage 1 "
                                                       "(CLIP4Cir's --encoder)")
    projection_ratio: int = Field(4, ge=1, description="Combiner projection width / d (paper: 2560 / 640)")
    hidden_ratio: int = Field(8, ge=1, description="Combiner hidden width / d (paper: 5120 / 640)")
    dropout: float = Field(0.5, ge=0, lt=1, description="Combiner dropout (paper: 0.5)")


class Combiner(nn.Module):
    """The CLIP4Cir Combiner: projected text and image features, concatenated, through a
    hidden layer; a learned dynamic scalar lambda mixes the raw text and image features into a
    residual sum. Output normalised."""

    def __init__(self, feature_dim: int, projection_dim: int, hidden_dim: int, dropout: float = 0.5):
        super().__init__()
        self.text_projection = nn.Sequential(nn.Linear(feature_dim, projection_dim), nn.ReLU(), nn.Dropout(dropout))
        self.image_projection = nn.Sequential(nn.Linear(feature_dim, projection_dim), nn.ReLU(), nn.Dropout(dropout))
        self.combiner = nn.Sequential(nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
        self.output = nn.Linear(hidden_dim, feature_dim)
        self.dynamic_scalar = nn.Sequential(nn.Linear(2 * projection_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout),
                                            nn.Linear(hidden_dim, 1), nn.Sigmoid())

    def mixing(self, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(concatenated projections, lambda in (0, 1) per query)."""
        joint = torch.cat([self.text_projection(text), self.image_projection(image)], dim=-1)
        return joint, self.dynamic_scalar(joint)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        joint, weight = self.mixing(image, text)
        fused = self.output(self.combiner(joint)) + weight * text + (1 - weight) * image
        return F.normalize(fused, dim=-1)


@register_method("clip4cir", family="late_fusion", paper="Baldrati et al., CVPR-W 2022 / TOMM 2023",
                 description="CLIP4Cir: sum fine-tuning of CLIP, then a Combiner on frozen features")
class Clip4Cir(DualEncoderMethod):
    Params = Clip4CirParams

    def __init__(self, params: Clip4CirParams, context: MethodContext):
        super().__init__(params, context)
        self.encoder = dual_encoder(params.backbone, params.stage0, context)
        d = self.encoder.feature_dim
        self.combiner = Combiner(d, params.projection_ratio * d, params.hidden_ratio * d, params.dropout)
        # True once stage 2 began: a checkpoint then evaluates with the Combiner.
        self.register_buffer("combiner_trained", torch.tensor(False))
        self._set_stage(1)

    def _set_stage(self, stage: int) -> None:
        self.stage = stage
        tune_image = stage == 1 and self.params.encoders in ("both", "image")
        tune_text = stage == 1 and self.params.encoders in ("both", "text")
        self.encoder.image_tower.requires_grad_(tune_image)
        self.encoder.image_projection.requires_grad_(tune_image)
        self.encoder.text_tower.requires_grad_(tune_text)
        self.encoder.text_projection.requires_grad_(tune_text)
        self.encoder.model.logit_scale.requires_grad_(False)  # fixed at 100 (temperature)
        self.combiner.requires_grad_(stage == 2)
        if stage == 2:
            self.combiner_trained.fill_(True)

    def _trained_modules(self) -> list[nn.Module]:
        """The modules some stage trains: the encoders stage 1 tunes, then the Combiner."""
        tuned: list[nn.Module] = []
        if self.params.stage1_fraction > 0:
            if self.params.encoders in ("both", "image"):
                tuned += [self.encoder.image_tower, self.encoder.image_projection]
            if self.params.encoders in ("both", "text"):
                tuned += [self.encoder.text_tower, self.encoder.text_projection]
        if self.params.stage1_fraction < 1:
            tuned.append(self.combiner)
        return tuned

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """Both stages' parameters: the Combiner is frozen during stage 1 but must be in the
        optimizer for stage 2 (frozen parameters get no gradient, so AdamW leaves them alone)."""
        return [p for module in self._trained_modules() for p in module.parameters()]

    def parameter_counts(self) -> dict[str, int]:
        """Trainable = what either stage trains (the tuned encoders, then the Combiner)."""
        return {"total": sum(p.numel() for p in self.parameters()),
                "trainable": sum(p.numel() for p in self.optimizer_parameters())}

    def begin_step(self, step: int, total_steps: int) -> None:
        stage = 1 if step < round(self.params.stage1_fraction * total_steps) else 2
        if stage != self.stage:
            self._set_stage(stage)

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder.image_features(images), dim=-1)

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        image = self.encoder.image_features(images)
        text = self.encoder.text_features(captions)
        if bool(self.combiner_trained):
            return self.combiner(image, text)
        return F.normalize(image + text, dim=-1)  # element_wise_sum: the raw features, then normalised

    def loss_inputs(self, batch: TripletBatch) -> dict[str, torch.Tensor]:
        if self.stage == 2:  # frozen encoders: features without a graph, as CLIP4Cir's precomputed ones
            with torch.no_grad():
                image = self.encoder.image_features(batch.reference_images)
                text = self.encoder.text_features(batch.captions)
                target = F.normalize(self.encoder.image_features(batch.target_images), dim=-1)
            return {"query": self.combiner(image, text), "target": target}
        return super().loss_inputs(batch)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``encoders`` (what stage 1 tunes) and ``combiner`` (stage 2)."""
        return {"encoders": [p for m in self._trained_modules() if m is not self.combiner for p in m.parameters()],
                "combiner": list(self.combiner.parameters()) if self.params.stage1_fraction < 1 else []}
