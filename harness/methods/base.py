"""The one interface every CIR method implements.

A method is a ``torch.nn.Module`` with

- ``encode_query(images, captions) -> Tensor[B, D]``: reference images (uint8 [B, 3, H, W],
  as the image store holds them; the method does its own preprocessing) and relative
  captions, L2-normalised;
- ``encode_target(images) -> Tensor[B, D]``: candidate images, L2-normalised; a method that
  sets ``scoring = "max_similarity"`` returns several vectors per image, ``Tensor[B, M, D]``,
  and an image scores the best of them (SPRC's query-token outputs; harness.evaluation.ranking);
- ``loss_inputs(batch) -> dict[str, Tensor]`` and ``loss_from(inputs) -> Tensor``: the loss
  in two halves, per-item tensors (row i belongs to item i: the query and target embeddings
  by default) and the batch loss computed from them (in-batch InfoNCE by default). A method
  adds its own terms by overriding both; ``loss(batch)`` is their composition. The split is
  what lets the shared loop micro-batch a step with exact in-batch negatives
  (harness.training.grad_cache).

A method trains on triplets by default; one that learns from images alone (zero-shot
textual inversion) sets ``training_data = "images"`` and gets ``ImageBatch``es of the
training split's images, never a caption or a target. ``begin_step(step, total)`` is called
before every step, for methods whose training has phases.

Each method declares a typed pydantic parameter model ``Params`` (subclass of
``MethodParams``) and is built as ``Method(params, context)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from harness.data.caption_join import DEFAULT_CONVENTION, join_captions
from harness.objectives.losses import info_nce  # noqa: F401  (re-exported: methods import it from here)


class MethodParams(BaseModel):
    """Parameters every method has: the contrastive loss settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: settings (paths under method.params) the method never reads, left out of its run ids:
    #: stage 0's instruction tuning trains only the LVLM's language model, which dual encoders lack
    unread_settings: ClassVar[tuple[str, ...]] = ("stage0.instruct_steps", "stage0.instructions")

    temperature: float = Field(0.05, gt=0, description="InfoNCE temperature tau (fixed), as in the prototype runs")
    symmetric_loss: bool = Field(
        False, description="add the target->query direction to InfoNCE (CLIP4Cir uses query->target only)"
    )
    caption_join: Literal["clip4cir", "plain", "reversed", "both"] | None = Field(
        None, description="joining of a multi-caption query (FashionIQ); null: the method's own convention")


@dataclass
class MethodContext:
    """What a method may know about the data when it is built: image side, the training
    captions (e.g. to train a tokenizer locally), the training split and a key naming the
    dataset (for stage-0 warm starts cached per dataset)."""

    image_size: int
    corpus: list[str] = field(default_factory=list)
    train_split: Any = None
    dataset_key: str = ""
    progress: bool = False


@dataclass
class TripletBatch:
    """A training batch: uint8 reference and target images and the relative captions."""

    reference_images: torch.Tensor
    captions: list[str]
    target_images: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def part(self, start: int, stop: int) -> TripletBatch:
        """Items ``start``..``stop - 1`` (a micro-batch)."""
        return TripletBatch(self.reference_images[start:stop], self.captions[start:stop],
                            self.target_images[start:stop])


@dataclass
class ImageBatch:
    """A training batch of images alone (uint8) and their names in the image store."""

    images: torch.Tensor
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def part(self, start: int, stop: int) -> ImageBatch:
        """Items ``start``..``stop - 1`` (a micro-batch)."""
        return ImageBatch(self.images[start:stop], self.names[start:stop])


class CIRMethod(nn.Module):
    """Base class of every method; subclasses set ``Params`` and implement the encoders."""

    Params: ClassVar[type[MethodParams]] = MethodParams
    method_name: ClassVar[str] = ""
    #: what the shared loop feeds ``loss``: TripletBatch ("triplets") or ImageBatch ("images")
    training_data: ClassVar[Literal["triplets", "images"]] = "triplets"
    #: the method's own joining of multi-caption queries (harness.data.caption_join)
    caption_convention: ClassVar[str] = DEFAULT_CONVENTION
    #: how a query meets a gallery image: one target vector and the inner product, or M target
    #: vectors ([B, M, D] from ``encode_target``) and the maximum of the M inner products
    scoring: ClassVar[Literal["inner_product", "max_similarity"]] = "inner_product"

    def __init__(self, params: MethodParams, context: MethodContext):
        super().__init__()
        self.params = params
        self.context = context

    def query_text(self, triplet: Any) -> str:
        """The caption text this method reads for ``triplet``: its multiple captions joined by
        ``params.caption_join`` or the method's convention, else its one caption."""
        if not triplet.captions:
            return triplet.caption
        return join_captions(triplet.captions, self.params.caption_join or self.caption_convention)

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def warm_starts(cls, params: MethodParams, dataset_key: str) -> list[Any]:
        """The stage-0 checkpoints a method with ``params`` starts from (harness.pretraining.warm_start's
        ``WarmStart``s); `harness pretrain` and the runner build them."""
        return []

    def training_images(self, split: Any) -> list[str]:
        """Names of the images an image-trained method learns from: every image of the split's
        image store by default (never its triplets)."""
        return sorted(split.images.paths)

    def optimizer_parameters(self) -> list[nn.Parameter]:
        """What the shared loop's optimizer updates: by default the parameters that require
        gradients when training starts. A method whose phases train different parts lists
        every part any phase trains."""
        return [p for p in self.parameters() if p.requires_grad]

    def begin_step(self, step: int, total_steps: int) -> None:
        """Called by the shared loop before step ``step`` (0-based) of ``total_steps``."""

    def finish_training(self, batches: Iterable[TripletBatch | ImageBatch]) -> None:
        """Called in evaluation mode, without gradients, after the last step (and before each
        per-epoch evaluation) with the training data in a fixed order: a method whose
        evaluation uses statistics of training features re-estimates them with the final
        weights. Nothing by default."""

    def loss(self, batch: TripletBatch | ImageBatch) -> torch.Tensor:
        """The training loss of ``batch``: ``loss_from(loss_inputs(batch))``. Override the two
        halves, not this, or micro-batching (``train.micro_batch_size``) is refused."""
        return self.loss_from(self.loss_inputs(batch))

    def loss_inputs(self, batch: TripletBatch | ImageBatch) -> dict[str, torch.Tensor]:
        """Per-item tensors the loss is computed from (row i is item i's): by default the
        query and target embeddings. Every random draw of a step happens here, so a
        micro-batch recomputed with the same random state gives the same tensors."""
        return {"query": self.encode_query(batch.reference_images, batch.captions),
                "target": self.encode_target(batch.target_images)}

    def loss_from(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The batch loss from ``loss_inputs``' tensors (in-batch InfoNCE by default): the only
        place items meet, so it sees the whole batch even when the inputs came in micro-batches."""
        return info_nce(inputs["query"], inputs["target"], self.params.temperature, self.params.symmetric_loss)

    def whole_batch(self, batch: TripletBatch | ImageBatch, parts: list[TripletBatch | ImageBatch]):
        """A context in which ``loss_inputs`` of each micro-batch in ``parts`` computes what it
        would compute inside the whole ``batch``: for a method whose items depend on batch
        statistics (CIR-LVLM's standardised prompt selection). Nothing by default."""
        return contextlib.nullcontext()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``optimizer_parameters`` split into named groups that ``train.group_lr`` can give a
        learning rate of their own (e.g. new modules vs adapters); one group by default."""
        return {"all": self.optimizer_parameters()}

    def statistics(self) -> dict[str, Any]:
        """Method-specific figures gathered during evaluation (e.g. prompt-pool usage)."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """Where the embeddings are taken (layer, token, before or after the final norm), the
        prompt texts and how an image is prepared: result.json keeps it and `harness score` warns
        where two results differ (published reproductions moved one model's CIRR R@1 from 56.6 to
        74.7 by such details). By default a dual encoder's (``self.encoder``); {} otherwise."""
        encoder = getattr(self, "encoder", None)
        return encoder.provenance() if callable(getattr(encoder, "provenance", None)) else {}

    def reset_statistics(self) -> None:
        """Forget what ``statistics`` gathered (called before each evaluation)."""

    def training_state(self) -> dict[str, Any]:
        """What a checkpoint keeps besides weights and the process RNGs (a method's own random
        generator, say), so a resumed run ends where an uninterrupted one does."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Put back what ``training_state`` returned."""

    def frozen_target_state(self) -> dict[str, torch.Tensor] | None:
        """The tensors ``encode_target`` depends on when they never train (then the gallery's
        embeddings are cached across runs, harness.evaluation.embedding_cache); None, the default, when
        the target side trains."""
        return None

    def perception_features(self, images: torch.Tensor) -> torch.Tensor | None:
        """What the method's fusion reads of an image, [B, D] or [B, T, D], for the evaluation's
        perception probe (harness.pretraining.perception). None (the default): the target
        embeddings the evaluation already computed (the pooled image embedding of a dual encoder,
        SPRC's query outputs); CIR-LVLM returns its connector's visual prompt tokens."""
        return None

    def diagnostics(self, reference_images: torch.Tensor, captions: list[str]) -> dict[str, Any]:
        """A method's own figures on a few evaluation queries (CIR-LVLM: where its prompts
        attend), kept in the result's method statistics. Nothing by default."""
        return {}

    def statistics_counters(self) -> list[torch.Tensor]:
        """The counters ``statistics`` reads; under torchrun the evaluation sums them over ranks."""
        return []

    def parameter_counts(self) -> dict[str, int]:
        """Total and trainable parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "trainable": trainable}
