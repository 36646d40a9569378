"""SEARLE: zero-shot CIR by a textual-inversion network distilled from optimisation-based inversion.

family: textual_inversion | paper: Baldrati, Agnolucci et al., "Zero-shot composed image
retrieval with textual inversion" (ICCV 2023) | code spec: miccunifi/SEARLE@a9c314b
(docs/sources.md).

1. OTI (optimisation-based textual inversion), once per backbone and cached: for each of
   ``oti_images`` training images a free token embedding ``$`` is optimised so that the text
   feature of a template containing ``$`` matches the image feature (L_cos), regularised by
   L_gpt: a caption-like phrase about one of the image's concepts should keep its text
   feature when the concept is replaced by ``$``. Tokens are the EMA of the optimised ones.
2. phi, the textual-inversion network, is distilled from those tokens in the shared training
   loop (images alone): a contrastive loss between phi(image feature) and the OTI token
   (temperature 0.25) plus the same L_gpt on phi's tokens.

Stand-ins for what cannot be had offline, all assumptions: SEARLE's concepts are Open Images
class names and its phrases come from GPT-Neo-2.7B ("a photo of {concept} that ..."). Here
the concepts are the "{colour} {shape}" names of the embedded benchmark's scene graphs, and a
concept's phrases are the benchmark's scene descriptions that mention it (other datasets:
give ``concepts``, and phrases come from ``templates``). SEARLE's 24 PALAVRA templates are
replaced by ``templates`` written in the tiny tokenizer's vocabulary. OTI runs ``oti_batch_size``
images at a time (the paper: 32); each token has its own loss and Adam is invariant to the
loss scale, so the batch size only changes speed. OTI's budget is cut for a 2-core CPU: 1024
images x 100 steps (the paper: 350 steps). Measured on the stage-0 CLIP with 64 images: the
OTI loss is 0.79 at step 1, 0.123 at 50, 0.100 at 100 and flat at 0.077 from 200 to 350, at
about 1.8 ms per image-step.

A query is "a photo of $ that {caption}" through the frozen text encoder; a target is the
image feature. A two-caption query (FashionIQ) is encoded in both caption orders and the two
normalised features averaged, as SEARLE does.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from harness.backbones.dual_encoder import DualEncoder
from harness.backbones.loading import probing
from harness.backbones.params import BackboneParams
from harness.core.device import to_device
from harness.core.errors import HarnessError
from harness.core.paths import cache_dir, cached_directory
from harness.methods.base import (
    ImageBatch,
    MethodContext,
    MethodParams,
    TripletBatch,
    info_nce,
)
from harness.methods.dual_encoder_methods import TextualInversionMethod
from harness.methods.registry import register_method
from harness.pretraining.stage0 import Stage0Params, scene_descriptions

OTI_VERSION = 1
#: Stand-ins for SEARLE's PALAVRA templates, in the words of the embedded benchmark's tokenizer.
DEFAULT_TEMPLATES = ("a photo of $", "a photo of the $", "the image shows $", "this image shows $",
                     "the photo shows $", "this photo shows $")


class SearleParams(MethodParams):
    """SEARLE settings; defaults from the paper's code unless noted."""

    backbone: BackboneParams = Field(default_factory=BackboneParams,
                                     description="tiny: stage 0's CLIP; pretrained: vision_dir = a whole CLIP/SigLIP "
                                                 "dir")
    stage0: Stage0Params = Field(default_factory=Stage0Params, description="stage 0 that builds the tiny CLIP")
    phi_dropout: float = Field(0.5, ge=0, lt=1, description="phi dropout (paper: 0.5)")
    query_prompt: str = Field("a photo of $ that {caption}", description="query prompt; $ is the pseudo-word")
    templates: tuple[str, ...] = Field(DEFAULT_TEMPLATES, min_length=1,
                                       description="L_cos templates with $ (stand-ins for the 24 PALAVRA templates)")
    concepts: tuple[str, ...] | None = Field(None, description="concept names; default: the benchmark's "
                                             "'{colour} {shape}' names (needs scene_graphs.json)")
    oti_images: int = Field(1024, ge=2, description="training images inverted by OTI and used to distil phi "
                            "(assumption: a CPU-sized subset; SEARLE inverts the ImageNet test split)")
    oti_steps: int = Field(100, ge=1, description="OTI steps per image (paper: 350; here 100, see the module doc)")
    oti_lr: float = Field(2e-2, gt=0, description="OTI AdamW learning rate (paper: 2e-2)")
    oti_weight_decay: float = Field(0.01, ge=0)
    oti_batch_size: int = Field(256, ge=1, description="images inverted at once (paper: 32; speed only)")
    oti_ema: float = Field(0.99, ge=0, lt=1, description="EMA decay of the OTI tokens (paper: 0.99)")
    oti_top_k: int = Field(15, ge=1, description="concepts per image for OTI's L_gpt (paper: 15)")
    oti_gpt_weight: float = Field(0.5, ge=0, description="lambda_gpt of OTI (lambda_cos = 1; paper: 0.5)")
    oti_seed: int = Field(0, description="seed of OTI: one shared token set, like a released one")
    distil_temperature: float = Field(0.25, gt=0, description="phi distillation temperature (paper: 0.25)")
    distil_gpt_weight: float = Field(0.75, ge=0, description="lambda_gpt of phi training (lambda_distil = 1; paper: "
                                                             "0.75)")
    phi_top_k: int = Field(150, ge=1, description="concepts per image for phi's L_gpt (paper: 150; capped by the list)")
    supervised: bool = Field(False, description="train phi on triplets instead (not the paper's setting)")


class Phi(nn.Module):
    """SEARLE's textual-inversion network: image feature -> pseudo-word token embedding."""

    def __init__(self, feature_dim: int, token_width: int, dropout: float):
        super().__init__()
        hidden = 4 * feature_dim
        self.layers = nn.Sequential(nn.Linear(feature_dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, hidden), nn.GELU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, token_width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ConceptPhrases:
    """Concepts, each with caption-like phrases that mention it (the stand-in for GPT phrases)."""

    def __init__(self, concepts: list[str], phrases: dict[str, list[str]]):
        self.concepts = concepts
        self.phrases = phrases

    @classmethod
    def for_split(cls, params: SearleParams, split) -> ConceptPhrases:
        if params.concepts is not None:
            concepts = list(params.concepts)
            return cls(concepts, {c: [t.replace("$", f"a {c}") for t in params.templates] for c in concepts})
        path = split.root / "scene_graphs.json"
        if not path.is_file():
            raise HarnessError("SEARLE's default concepts come from the embedded benchmark's scene graphs", file=path,
                               field="method.params.concepts", fix="list the concept names, e.g. [dress, shirt, shoe]")
        # the training split's images only: no phrase describes an evaluation image
        descriptions = sorted({d for name, d in scene_descriptions(split).items() if name in split.images})
        graphs = json.loads(path.read_text())
        concepts = sorted({f"{o['colour']} {o['shape']}" for name, graph in graphs.items() if name in split.images
                           for o in graph})
        phrases: dict[str, list[str]] = {c: [] for c in concepts}
        for description in descriptions:
            for concept in concepts:
                if concept in description and len(phrases[concept]) < 256:  # the paper samples 256 per concept
                    phrases[concept].append(description)
        return cls(concepts, {c: p or [f"a photo of a {c}"] for c, p in phrases.items()})

    def sample(self, concepts: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
        """(a phrase per concept, the same phrase with the concept replaced by $)."""
        phrases = [rng.choice(self.phrases[c]) for c in concepts]
        return phrases, [p.replace(c, "$", 1) for p, c in zip(phrases, concepts, strict=True)]


def associate(encoder: DualEncoder, features: torch.Tensor, concepts: list[str], k: int) -> torch.Tensor:
    """Top-k concept indices per image by CLIP similarity with "a photo of a {concept}"."""
    with torch.no_grad():
        names = F.normalize(encoder.text_features([f"a photo of a {c}" for c in concepts]), dim=-1)
        return (F.normalize(features, dim=-1) @ names.T).topk(min(k, len(concepts)), dim=-1).indices


def gpt_loss(encoder: DualEncoder, tokens: torch.Tensor, phrases: tuple[list[str], list[str]]) -> torch.Tensor:
    """L_gpt per item: 1 - cos(text feature of the phrase, of the phrase with the concept as $)."""
    with torch.no_grad():
        reference = encoder.text_features(phrases[0])
    inverted = encoder.prompt_features(phrases[1], tokens, placeholder="$")
    return 1 - F.cosine_similarity(inverted, reference, dim=-1)


@register_method("searle", family="textual_inversion", paper="Baldrati et al., ICCV 2023",
                 description="SEARLE: phi distilled from optimisation-based textual inversion of a frozen CLIP, "
                             "trained on images alone")
class Searle(TextualInversionMethod):
    Params = SearleParams
    caption_convention = "both"  # both caption orders, embeddings averaged (SEARLE src/validate.py)
    placeholder = "$"

    def __init__(self, params: SearleParams, context: MethodContext):
        super().__init__(params, context)
        self.phi = Phi(self.encoder.feature_dim, self.encoder.token_width, params.phi_dropout)
        self._rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,))))  # concept sampling, seeded by the run
        self._oti_report: dict = {}
        if not params.supervised:
            if context.train_split is None:
                raise HarnessError("SEARLE's OTI needs the training images", field="method.params.supervised",
                                   fix="run through `harness run`")
            self.concept_phrases = ConceptPhrases.for_split(params, context.train_split)
            self._oti_names, tokens, self._oti_report = ensure_oti(self, context)
            self._oti_row = {name: i for i, name in enumerate(self._oti_names)}
            self.register_buffer("oti_tokens", tokens, persistent=False)

    def training_images(self, split) -> list[str]:
        return list(self._oti_names)

    def training_state(self) -> dict:
        """The concept-sampling generator, so a resumed run draws what an uninterrupted one draws."""
        return {"concept_rng": self._rng.getstate()}

    def load_training_state(self, state: dict) -> None:
        if "concept_rng" in state:
            version, internal, gauss = state["concept_rng"]
            self._rng.setstate((version, tuple(internal), gauss))

    def statistics(self) -> dict:
        return {"oti": self._oti_report} if self._oti_report else {}

    def invert(self, features: torch.Tensor) -> torch.Tensor:
        return self.phi(features)

    def loss_inputs(self, batch: ImageBatch | TripletBatch) -> dict[str, torch.Tensor]:
        if isinstance(batch, TripletBatch):
            return super().loss_inputs(batch)
        features, predicted = self.pseudo_word(batch.images)
        rows = to_device(torch.tensor([self._oti_row[name] for name in batch.names]), predicted.device)
        inputs = {"predicted": F.normalize(predicted, dim=-1), "oti": F.normalize(self.oti_tokens[rows], dim=-1)}
        if self.params.distil_gpt_weight > 0:
            top = associate(self.encoder, features, self.concept_phrases.concepts, self.params.phi_top_k)
            concepts = [self.concept_phrases.concepts[int(row[self._rng.randrange(top.shape[1])])] for row in top]
            inputs["regulariser"] = gpt_loss(self.encoder, predicted, self.concept_phrases.sample(concepts, self._rng))
        return inputs

    def loss_from(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "query" in inputs:  # supervised: triplets
            return super().loss_from(inputs)
        distil = info_nce(inputs["predicted"], inputs["oti"], self.params.distil_temperature, symmetric=True)
        if "regulariser" not in inputs:
            return distil
        return distil + self.params.distil_gpt_weight * inputs["regulariser"].mean()


# ---------------------------------------------------------------------- OTI


def _oti_key(method: Searle, context: MethodContext) -> str:
    params = method.params
    backbone = (params.backbone.vision_dir if params.backbone.source == "pretrained"
                else {"tiny": params.backbone.tiny_key(), "stage0": params.stage0.model_dump()})
    images = hashlib.sha256("\n".join(sorted(context.train_split.images.paths)).encode()).hexdigest()[:16]
    blob = json.dumps({"version": OTI_VERSION, "dataset": context.dataset_key, "backbone": backbone, "images": images,
                       "concepts": method.concept_phrases.concepts, "templates": list(params.templates),
                       "oti": params.model_dump(include={"oti_images", "oti_steps", "oti_lr", "oti_weight_decay",
                                                         "oti_ema", "oti_top_k", "oti_gpt_weight", "oti_seed"})},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def ensure_oti(method: Searle, context: MethodContext) -> tuple[list[str], torch.Tensor, dict]:
    """(image names, their OTI tokens [N, w], the OTI report), cached under
    ``<cache>/searle/oti-<key>/`` and built (atomically) when absent; zeros, never cached, when
    the method is built for its structure only (harness.backbones.loading.structure_probe)."""
    if probing():  # built for its structure (harness plan): random weights, nothing to invert or cache
        names = sorted(context.train_split.images.paths)[: method.params.oti_images]
        return names, torch.zeros(len(names), method.encoder.token_width), {}
    def build(staging: Path) -> None:
        with torch.random.fork_rng():
            names, tokens, report = _invert(method, context)
        save_file({"tokens": tokens.contiguous()}, str(staging / "tokens.safetensors"))
        (staging / "names.json").write_text(json.dumps(names))
        (staging / "oti.json").write_text(json.dumps(report, indent=2))

    directory = cached_directory(cache_dir() / "searle" / f"oti-{_oti_key(method, context)}", "oti.json", build)
    names = json.loads((directory / "names.json").read_text())
    tokens = load_file(str(directory / "tokens.safetensors"))["tokens"]
    return names, tokens, json.loads((directory / "oti.json").read_text())


def _invert(method: Searle, context: MethodContext) -> tuple[list[str], torch.Tensor, dict]:
    """Optimisation-based textual inversion of a seeded sample of the training images."""
    params, encoder, split = method.params, method.encoder, context.train_split
    torch.manual_seed(params.oti_seed)
    rng = random.Random(params.oti_seed)
    names = sorted(split.images.paths)
    names = sorted(rng.sample(names, min(params.oti_images, len(names))))
    weight_cos, weight_gpt = 1.0, params.oti_gpt_weight
    concepts = method.concept_phrases.concepts
    tokens, losses = [], []
    start = time.perf_counter()
    batches = range(0, len(names), params.oti_batch_size)
    bar = tqdm(total=len(batches) * params.oti_steps, desc="searle: OTI", unit="step", disable=not context.progress,
               leave=False)
    for first in batches:
        chunk = names[first : first + params.oti_batch_size]
        with torch.no_grad():
            features = encoder.image_features(split.images.load(chunk))
        top = associate(encoder, features, concepts, params.oti_top_k)
        token = nn.Parameter(torch.randn(len(chunk), encoder.token_width) * 0.02)  # assumption: N(0, 0.02) init
        ema = token.detach().clone()
        optimizer = torch.optim.AdamW([token], lr=params.oti_lr, weight_decay=params.oti_weight_decay)
        target = F.normalize(features, dim=-1)
        for _ in range(params.oti_steps):
            templates = [rng.choice(params.templates) for _ in chunk]
            text = encoder.prompt_features(templates, token, placeholder="$")
            loss_cos = (1 - F.cosine_similarity(text, target, dim=-1)).mean()
            loss = weight_cos * loss_cos
            if weight_gpt > 0:
                picked = [concepts[int(row[rng.randrange(top.shape[1])])] for row in top]
                loss = loss + weight_gpt * gpt_loss(encoder, token, method.concept_phrases.sample(picked, rng)).mean()
            loss = loss / (weight_cos + weight_gpt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                ema.mul_(params.oti_ema).add_(token.detach(), alpha=1 - params.oti_ema)
            losses.append(float(loss.detach()))
            bar.update()
        tokens.append(ema)
    bar.close()
    per_step = torch.tensor(losses).view(len(batches), params.oti_steps).mean(0)  # mean over the batches
    marks = sorted({0, *range(49, params.oti_steps, 50), params.oti_steps - 1})
    report = {"images": len(names), "steps": params.oti_steps, "seconds": time.perf_counter() - start,
              "concepts": len(concepts), "loss_by_step": {str(i + 1): round(float(per_step[i]), 4) for i in marks}}
    return names, torch.cat(tokens), report
