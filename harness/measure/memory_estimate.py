"""What a run needs per GPU: weights, gradients, AdamW state and the activations a step keeps.

    estimate = estimate_run(spec, train_split, world_size=8)
    print(table_row(estimate))

The activation figure is measured, not modelled: the method is built from its checkpoints'
config.json at one and two transformer layers per role (harness.backbones.loading.
structure_probe: random weights in the checkpoint's dtype, no weight file read), one training
forward of ``PROBE_ITEMS`` items runs under the run's precision and memory settings, and the
bytes autograd saves for backward are counted (harness.training.activation_memory.SavedTensors). The
per-layer difference is extrapolated to the real depth, the per-item figure to the items a GPU
holds at once. Captions are made as long as the method reads them (a batch pads to its
longest), so the sequence length, and the figure, are upper bounds. Peak memory adds the
backward pass's transient buffers and the allocator's slack on top (not estimated).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from harness.backbones.loading import structure_probe
from harness.core.device import autocast
from harness.core.errors import HarnessError
from harness.data.triplet import CIRSplit
from harness.experiments.config import RunSpec
from harness.methods.base import CIRMethod, ImageBatch, TripletBatch
from harness.methods.registry import build_run_method
from harness.training.activation_memory import SavedTensors, enable_gradient_checkpointing

#: items of the probe's forward pass (two: batch statistics need more than one)
PROBE_ITEMS = 2
#: AdamW keeps two float32 moments per trained parameter
ADAMW_BYTES_PER_PARAMETER = 8


@dataclass(frozen=True)
class Measurement:
    """One built method's sizes: parameters, bytes of frozen weights (in their dtype, buffers
    included) and activation bytes saved per item of a training step."""

    parameters: float
    trainable: float
    frozen_bytes: float
    activation_bytes_per_item: float

    def plus(self, other: Measurement, times: float = 1.0) -> Measurement:
        return Measurement(*(getattr(self, f.name) + times * getattr(other, f.name) for f in fields(self)))

    def minus(self, other: Measurement) -> Measurement:
        return self.plus(other, -1.0)


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU memory of one run (bytes) and what it assumed."""

    label: str
    world_size: int
    items_per_gpu: int
    precision: str
    depths: dict[str, int]
    measured: Measurement

    @property
    def weight_bytes(self) -> float:
        return self.measured.frozen_bytes + 4 * self.measured.trainable  # trained parameters are float32

    @property
    def gradient_bytes(self) -> float:
        return 4 * self.measured.trainable

    @property
    def optimizer_bytes(self) -> float:
        return ADAMW_BYTES_PER_PARAMETER * self.measured.trainable

    @property
    def activation_bytes(self) -> float:
        return self.measured.activation_bytes_per_item * self.items_per_gpu

    @property
    def total_bytes(self) -> float:
        return self.weight_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "world_size": self.world_size, "items_per_gpu": self.items_per_gpu,
                "precision": self.precision, "depths": self.depths,
                "parameters": int(self.measured.parameters), "trainable_parameters": int(self.measured.trainable),
                "weight_bytes": self.weight_bytes, "gradient_bytes": self.gradient_bytes,
                "optimizer_bytes": self.optimizer_bytes, "activation_bytes": self.activation_bytes,
                "activation_bytes_per_item": self.measured.activation_bytes_per_item,
                "total_bytes": self.total_bytes}


def items_per_gpu(spec: RunSpec, world_size: int) -> int:
    """Items one GPU holds the graph of at once: its share of the batch, or the micro-batch."""
    share = max(1, spec.config.train.batch_size // world_size)
    micro = spec.config.train.micro_batch_size
    return min(share, micro) if micro is not None else share


def estimate_run(spec: RunSpec, train_split: CIRSplit, world_size: int = 1, precision: str = "bf16") -> MemoryEstimate:
    """Measure ``spec``'s method at one and two layers per role and extrapolate (module docstring)."""
    base, depths = measure(spec, train_split, {"language": 1, "vision": 1}, precision)
    total = base
    for role, depth in sorted(depths.items()):
        if depth > 1:
            deeper, _ = measure(spec, train_split, {"language": 1, "vision": 1, role: 2}, precision)
            total = total.plus(deeper.minus(base), depth - 1)
    return MemoryEstimate(spec.label, world_size, items_per_gpu(spec, world_size), precision, depths, total)


def measure(spec: RunSpec, train_split: CIRSplit, layers: dict[str, int], precision: str,
            items: int = PROBE_ITEMS) -> tuple[Measurement, dict[str, int]]:
    """(sizes of ``spec``'s method built with ``layers`` per role, the roles' real depths)."""
    with structure_probe(**layers) as probe:
        method = build_run_method(spec.config, train_split)
    method.train()
    method.begin_step(0, 1)  # the first step's set-up (clip4cir: stage 1, which trains the encoders)
    if spec.config.train.gradient_checkpointing:
        enable_gradient_checkpointing(method)
    batch = probe_batch(method, train_split, spec.config.dataset.image_size, items)
    with autocast("cpu", precision), SavedTensors(method) as saved:
        method.loss(batch)
    return sizes(method, saved.bytes / items), dict(probe.depths)


def probe_batch(method: CIRMethod, split: CIRSplit, image_size: int, items: int) -> TripletBatch | ImageBatch:
    """``items`` random images (and captions as long as any the method reads: a training caption
    repeated past every truncation length), of the kind the method trains on."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (items, 3, image_size, image_size), dtype=torch.uint8, generator=generator)
    if method.training_data == "images":
        return ImageBatch(images, method.training_images(split)[:items])
    caption = ", ".join([split.triplets[0].caption] * 64)
    return TripletBatch(images, [caption] * items, images.clone())


def sizes(method: CIRMethod, activation_bytes_per_item: float) -> Measurement:
    trained = {id(p) for p in method.optimizer_parameters()}
    parameters = list(method.parameters())
    frozen = sum(p.numel() * p.element_size() for p in parameters if id(p) not in trained)
    frozen += sum(b.numel() * b.element_size() for b in method.buffers())
    return Measurement(sum(p.numel() for p in parameters), sum(p.numel() for p in parameters if id(p) in trained),
                       frozen, activation_bytes_per_item)


def estimate_specs(specs: list[RunSpec], world_size: int, precision: str,
                   echo: Callable[[str], None] = lambda _: None
                   ) -> tuple[list[MemoryEstimate], list[tuple[str, bool]]]:
    """(one estimate per distinct run of ``specs``, seeds aside since they do not change memory;
    (one line, whether it is a user error) per run that could not be planned). A run that
    cannot be built (a checkpoint folder missing, say) is listed and the others are still
    planned, as `harness run` carries on; ``echo`` hears each run start and how long it took
    (a 7B run takes minutes)."""
    from harness.experiments.executor import SplitCache
    splits = SplitCache(progress=False)
    distinct = list({spec.config.model_copy(update={"seed": 0}).model_dump_json(): spec
                     for spec in specs}.values())
    estimates, failures = [], []
    for number, spec in enumerate(distinct, 1):
        echo(f"[{number}/{len(distinct)}] planning {spec.label}")
        started = time.perf_counter()
        try:
            train_split = splits.get(spec.config.dataset, spec.config.dataset.train_split)
            estimates.append(estimate_run(spec, train_split, world_size, precision))
        except Exception as error:  # noqa: BLE001 - listed, and the command's exit code says so
            failures.append((f"{spec.label}: {_failure_line(error)}", isinstance(error, HarnessError)))
            echo(f"[{number}/{len(distinct)}] NOT PLANNED {failures[-1][0]}")
            continue
        echo(f"[{number}/{len(distinct)}] {spec.label}: {time.perf_counter() - started:.0f} s")
    return estimates, failures


def _failure_line(error: Exception) -> str:
    """A user error's own line; another error's type and message (`harness --debug` shows it)."""
    return str(error) if isinstance(error, HarnessError) else f"{type(error).__name__}: {str(error)[:300]}"


HEADER = ("run", "parameters", "trained", "weights", "gradients", "AdamW", "items/GPU", "activations", "total")


def table_row(estimate: MemoryEstimate) -> tuple[str, ...]:
    return (estimate.label, f"{estimate.measured.parameters / 1e6:,.2f}M", f"{estimate.measured.trainable / 1e6:,.2f}M",
            size(estimate.weight_bytes), size(estimate.gradient_bytes), size(estimate.optimizer_bytes),
            str(estimate.items_per_gpu), size(estimate.activation_bytes), size(estimate.total_bytes))


def size(value: float) -> str:
    """Bytes in GiB (MiB below one GiB)."""
    return f"{value / 2**30:,.2f} GiB" if value >= 2**30 else f"{value / 2**20:,.1f} MiB"
