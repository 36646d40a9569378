"""SPRC: encoder-level early fusion in BLIP-2's Q-Former, with multi-vector targets.

family: early_fusion | paper: Bai et al., "Sentence-level Prompts Benefit Composed Image
Retrieval" (ICLR 2024) | code spec: chunmeifeng/SPRC@2935a53,
src/lavis/models/blip2_models/blip2_qformer_cir_align_prompt.py (docs/sources.md).

- Query: a fusion pass of the Q-Former, its learned queries self-attending with the caption
  tokens while cross-attending the reference image, gives M "sentence-level prompts"; a
  second, image-free pass over [prompts ; caption] gives the query at the caption's [CLS].
- Target: the query outputs over the target image, M vectors (``scoring = max_similarity``:
  an image scores its best vector).
- Loss: itc (query -> target, in-batch, one direction) + ``rtc_weight`` x rtc (learned
  prompt tokens in place of the fused ones, [CLS] + prompts + caption, must also retrieve the
  target) + ``align_weight`` x align (MSE between the mean fused prompt and the mean learned
  prompt, the latter detached); learnable temperature. Weights 0.4 / 0.4 are SPRC's CIRR
  recipe (its FashionIQ script sums the three unweighted: set both to 1).

``tiny``: the vision tower is stage 0's CLIP (the one every method starts from), frozen as
SPRC freezes ViT-g, and the Q-Former is pre-trained on the benchmark's image descriptions
with BLIP-2's contrastive objective (harness.pretraining.blip2_stage1). ``pretrained``: a local BLIP-2
retrieval checkpoint (``Blip2ForImageTextRetrieval``, blip2-itm-vit-g's layout). Assumption:
the optimiser, schedule and step budget are the shared loop's, as for every method (SPRC:
AdamW lr 1e-5 / 2e-5, OneCycle; docs/sources.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from harness.backbones.params import BackboneParams
from harness.backbones.qformer import QFormerBackbone, QFormerParams
from harness.core.errors import HarnessError
from harness.methods.base import CIRMethod, MethodContext, MethodParams, TripletBatch, info_nce
from harness.methods.registry import register_method
from harness.pretraining.blip2_stage1 import QFormerPretraining, QFormerWarmStart
from harness.pretraining.stage0 import Stage0Params, clip_request

SPRC_INITIAL_TEMPERATURE = 0.07  # blip2_qformer_cir_align_prompt.py L85, before the checkpoint is loaded


class SprcBackboneParams(BackboneParams):
    """The shared backbone settings (tiny: the stage-0 CLIP's sizes) and a BLIP-2 directory."""

    blip2_dir: str | None = Field(None, description="pretrained: a BLIP-2 retrieval checkpoint directory "
                                  "(Blip2ForImageTextRetrieval, e.g. blip2-itm-vit-g) with its tokenizer")


class SprcParams(MethodParams):
    """SPRC settings (defaults: SPRC's CIRR recipe where it has one)."""

    temperature: float | None = Field(
        None, gt=0, description="initial value of the learnable temperature, clamped to [0.001, 0.5] as BLIP-2 clamps "
        "it; null: the warm start's learned one (tiny: stage 0's ITC temperature), as SPRC's model starts at 0.07 "
        "(L85) and then loads BLIP-2's checkpoint, learned temp included; 0.07 where the checkpoint keeps none "
        "(transformers' Blip2ForImageTextRetrieval has no temperature)")
    learn_temperature: bool = Field(True, description="learn the temperature (SPRC) or keep it fixed")
    backbone: SprcBackboneParams = Field(default_factory=SprcBackboneParams,
                                         description="tiny: stage 0's CLIP tower + a pre-trained tiny Q-Former; "
                                         "pretrained: blip2_dir")
    stage0: Stage0Params = Field(default_factory=Stage0Params, description="stage 0 that builds the tiny CLIP")
    qformer: QFormerParams = Field(default_factory=QFormerParams, description="tiny Q-Former sizes and text length "
                                   "(pretrained: only max_text_length applies)")
    qformer_pretraining: QFormerPretraining = Field(default_factory=QFormerPretraining,
                                                    description="tiny: BLIP-2 stage-1 ITC pre-training of the Q-Former")
    rtc_weight: float = Field(0.4, ge=0, description="weight of the prompt-token retrieval loss (CIRR: 0.4)")
    align_weight: float = Field(0.4, ge=0, description="weight of the prompt alignment loss (CIRR: 0.4)")


@register_method("sprc", family="early_fusion", paper="Bai et al., ICLR 2024",
                 description="SPRC: Q-Former fuses reference + caption into prompts; max-similarity over the "
                 "target's query outputs")
class Sprc(CIRMethod):
    Params = SprcParams
    params: SprcParams
    scoring = "max_similarity"

    @classmethod
    def warm_starts(cls, params: SprcParams, dataset_key: str) -> list[QFormerWarmStart]:
        if params.backbone.source != "tiny" or not params.stage0.enabled:
            return []
        return [_warm_start(params, dataset_key)]

    def __init__(self, params: SprcParams, context: MethodContext):
        super().__init__(params, context)
        self.backbone = _backbone(params, context)
        self.backbone.tower.requires_grad_(not params.backbone.vision_frozen(warm_started=True))
        qformer = self.backbone.qformer
        hidden = qformer.query_tokens.shape[-1]
        self.prompt_tokens = nn.Parameter(torch.randn(1, qformer.num_query_tokens, hidden) * 0.02)  # SPRC L89-91
        initial = params.temperature or self.backbone.temperature or SPRC_INITIAL_TEMPERATURE
        self.temperature = nn.Parameter(torch.tensor(float(initial)), requires_grad=params.learn_temperature)

    @property
    def tokenizer(self):  # saved with the run by the runner
        return self.backbone.tokenizer

    def _temperature(self) -> torch.Tensor:
        return self.temperature.clamp(0.001, 0.5)

    def provenance(self) -> dict:
        """The embeddings are the Q-Former's query outputs through its projection; the tower's
        features (after post_layernorm where the checkpoint applies it) are what the queries read."""
        return {"query_embedding": "the Q-Former's query outputs over the reference's features with the caption "
                                   "tokens, through its text projection",
                "target_embedding": f"the {self.backbone.qformer.query_tokens.shape[-2]} query outputs over the "
                                    "target's features, through the vision projection (scored by their maximum)",
                "vision": {**self.backbone.tower.provenance(), "post_layernorm": self.backbone.post_layernorm}}

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        qformer = self.backbone.qformer
        return qformer.image_vectors(qformer.image_queries(self.backbone.image_features(images)))

    def fuse(self, images: torch.Tensor, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(the fusion pass's M prompts [B, M, H], caption ids, mask)."""
        ids, mask = self.backbone.tokenize(captions)
        return self.backbone.qformer.fuse(ids, mask, self.backbone.image_features(images)), ids, mask

    def compose(self, prompts: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, E]: the image-free second pass over [prompts ; caption], read at the caption's [CLS]."""
        qformer = self.backbone.qformer
        return qformer.text_vector(qformer.text(ids, mask, prefix=prompts))

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return self.compose(*self.fuse(images, captions))

    def loss_inputs(self, batch: TripletBatch) -> dict[str, torch.Tensor]:
        prompts, ids, mask = self.fuse(batch.reference_images, batch.captions)
        inputs = {"query": self.compose(prompts, ids, mask), "target": self.encode_target(batch.target_images)}
        if self.params.rtc_weight:
            qformer = self.backbone.qformer
            inputs["prompted"] = qformer.text_vector(qformer.prompted_text(ids, mask, self.prompt_tokens))
        if self.params.align_weight:
            inputs["fused_mean"] = prompts.mean(dim=1)
        return inputs

    def loss_terms(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The three losses, unweighted: itc, rtc, align (those whose weight is not 0)."""
        temperature = self._temperature()
        terms = {"itc": info_nce(inputs["query"], inputs["target"], temperature, self.params.symmetric_loss)}
        if "prompted" in inputs:
            terms["rtc"] = info_nce(inputs["prompted"], inputs["target"], temperature)
        if "fused_mean" in inputs:
            learned = self.prompt_tokens.mean(dim=1).detach().expand_as(inputs["fused_mean"])
            terms["align"] = F.mse_loss(inputs["fused_mean"].float(), learned.float())
        return terms

    def loss_from(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        terms = self.loss_terms(inputs)
        return (terms["itc"] + self.params.rtc_weight * terms.get("rtc", 0.0)
                + self.params.align_weight * terms.get("align", 0.0))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``qformer`` (the pretrained part) and ``new`` (prompt tokens, temperature)."""
        fresh = {id(self.prompt_tokens), id(self.temperature)}
        return {"qformer": [p for p in self.optimizer_parameters() if id(p) not in fresh],
                "new": [p for p in (self.prompt_tokens, self.temperature) if p.requires_grad]}


def _warm_start(params: SprcParams, dataset_key: str) -> QFormerWarmStart:
    return QFormerWarmStart(clip_request(dataset_key, params.backbone, params.stage0), params.qformer,
                            params.qformer_pretraining)


def _backbone(params: SprcParams, context: MethodContext) -> QFormerBackbone:
    """The tiny backbone from stage 0 (built when absent), or a pretrained BLIP-2 directory."""
    if params.backbone.source == "pretrained":
        if not params.backbone.blip2_dir:
            raise HarnessError("source 'pretrained' needs blip2_dir: a BLIP-2 retrieval checkpoint directory",
                               field="method.params.backbone.blip2_dir", fix="set it to your local checkpoint")
        return QFormerBackbone.from_directory(params.backbone.blip2_dir, params.qformer.max_text_length)
    if not params.stage0.enabled:
        raise HarnessError("the tiny SPRC backbone is stage 0's CLIP and Q-Former",
                           field="method.params.stage0.enabled",
                           fix="keep stage 0 on, or use backbone.source: pretrained")
    if context.train_split is None:
        raise HarnessError("the tiny SPRC backbone comes from stage 0, which needs the training split",
                           field="method.params.backbone.source",
                           fix="run through `harness run`, or use source: pretrained")
    directory = _warm_start(params, context.dataset_key).ensure(context.train_split, progress=context.progress)
    return QFormerBackbone.tiny(directory, params.qformer.max_text_length)
