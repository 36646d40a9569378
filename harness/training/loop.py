"""The shared training loop: AdamW, warm-up + cosine schedule, in-batch contrastive loss.

    summary = train(method, train_split, TrainConfig(epochs=3), seed=0, checkpoint_dir=run_dir / "checkpoints")

Every method trains through this loop, so a comparison differs only in the method. The data
order comes from a generator seeded by (seed, epoch), so a run is deterministic on CPU for a
given seed. A checkpoint (model as safetensors; optimizer, scheduler, RNG and position with
``torch.save``, read back with ``weights_only=True``) is written atomically after each epoch
and, with ``checkpoint_every``, every N steps. Memory: ``micro_batch_size`` (GradCache, exact
in-batch negatives) and ``gradient_checkpointing``; ``group_lr`` gives parameter groups their
own learning rates.
"""

from __future__ import annotations

import functools
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tqdm import tqdm

from harness.core import distributed
from harness.core.device import autocast, resolve_precision, to_device
from harness.core.errors import HarnessError
from harness.core.files import read_torch, staged_directory, staged_file
from harness.core.settings import Precision
from harness.data.triplet import CIRSplit
from harness.methods.base import CIRMethod, ImageBatch, TripletBatch
from harness.objectives.schedule import cosine_with_warmup
from harness.training.activation_memory import enable_gradient_checkpointing
from harness.training.checkpoint import load_trained_weights, save_trained_weights
from harness.training.grad_cache import cached_backward, check_splittable
from harness.training.step_log import StepLog


class TrainConfig(BaseModel):
    """Optimisation settings of the shared loop (defaults: docs/assumptions.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(4, ge=0, description="passes over the training queries (0: evaluate untrained)")
    max_steps: int | None = Field(
        None, ge=1, description="the step budget: exactly this many steps, passes repeating as needed (overrides "
        "epochs), so methods trained on data of different sizes (triplets, images) get the same budget")
    batch_size: int = Field(64, ge=2, description="queries per step; the other targets are the in-batch negatives")
    lr: float = Field(5e-4, gt=0, description="AdamW peak learning rate")
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="share of steps with linear warm-up before the cosine")
    grad_clip: float | None = Field(1.0, gt=0, description="max gradient norm; null to disable")
    max_train_queries: int | None = Field(None, ge=2, description="train on the first N queries only (quick runs)")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; null keeps torch's default")
    frozen_features: Literal["auto", "off"] = Field(
        "auto", description="auto: a frozen vision tower's outputs for the training images and the gallery are "
        "computed once per checkpoint and precision and read back by every run (harness.backbones.feature_table), "
        "where that gives the same bits as computing them; off: computed in every step. Never changes a result; not "
        "part of the run id")
    precision: Precision = Field(
        "auto", description="auto: bf16 autocast where the hardware multiplies bf16 natively (CUDA GPUs with bf16, "
        "CPUs with AVX512-BF16 or AMX; 1.5x per tiny CIR-LVLM step on a Zen 4 CPU), else fp32; fp32 / bf16 force one. "
        "On CPU the last bits of a run depend on the thread count, in fp32 too (a tiny CLIP's gradients differed by "
        "2e-8 between 1 and 2 threads on an AVX2 EPYC): compare runs made with the same threads")
    checkpoint: bool = Field(True, description="write a checkpoint after every epoch (what the run trains, not the "
                             "frozen base model: harness.training.checkpoint)")
    keep_checkpoint: bool = Field(
        True, description="keep checkpoints/last once the run's result is written (what `harness score` and a later "
        "evaluation read); false removes it, e.g. in sweeps. Not part of the run id")
    micro_batch_size: int | None = Field(
        None, ge=1, description="compute each step in micro-batches of this many items per process, GradCache-style "
        "(harness.training.grad_cache): the loss still contrasts the whole batch, so the step equals the plain one up "
        "to float rounding, for a second forward pass; per-item random draws (dropout) differ. null: the whole batch "
        "at once. Not part of the run id")
    gradient_checkpointing: bool = Field(
        False, description="recompute the transformer layers' activations in the backward pass instead of keeping "
        "them (transformers' gradient checkpointing, non-reentrant) in every trained model of the method. Not part of "
        "the run id")
    group_lr: dict[str, float] = Field(
        default_factory=dict, description="learning rate per parameter group of the method (CIR-LVLM: new, "
        "language_model, vision; clip4cir: encoders, combiner; any other method: all); groups not named use lr")
    checkpoint_every: int | None = Field(
        None, ge=1, description="also write the checkpoint every this many steps (null: after each epoch only). Not "
        "part of the run id")
    gather_negatives: bool = Field(
        True, description="under torchrun: every rank's items are negatives of the contrastive loss, so the step "
        "equals the single-process step of the global batch; false: each rank contrasts its own share only (cheaper)")

    @field_validator("frozen_features", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        """YAML reads an unquoted ``off`` as false."""
        return "off" if value is False else value


@dataclass
class TrainSummary:
    """What a training run did."""

    steps: int = 0
    epochs: int = 0
    seconds: float = 0.0
    loss_per_epoch: list[float] = field(default_factory=list)
    final_loss: float | None = None
    resumed_from_step: int = 0
    precision: str = "fp32"
    threads: int = 1
    step_log_seconds: float = 0.0  # spent writing the per-step metrics (harness.training.step_log)
    #: training seconds the checkpoint resumed from had spent (``seconds`` includes them), so a run
    #: resumed after its training finished does not report a training time of 0
    seconds_before_resume: float = 0.0

    @property
    def steps_per_second(self) -> float:
        """Steps this process trained (after any resume) per second."""
        seconds = self.seconds - self.seconds_before_resume
        return (self.steps - self.resumed_from_step) / seconds if seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "epochs": self.epochs,
            "seconds": self.seconds,
            "steps_per_second": self.steps_per_second,
            "loss_per_epoch": self.loss_per_epoch,
            "final_loss": self.final_loss,
            "resumed_from_step": self.resumed_from_step,
            "seconds_before_resume": self.seconds_before_resume,
            "precision": self.precision,
            "threads": self.threads,
            "step_log_seconds": self.step_log_seconds,
        }


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def plan_steps(num_queries: int, config: TrainConfig) -> tuple[int, int]:
    """(steps per epoch, total steps)."""
    per_epoch = num_queries // config.batch_size
    total = per_epoch * config.epochs
    if config.max_steps is not None and config.epochs > 0:  # epochs 0 still means "evaluate untrained"
        total = config.max_steps
    return per_epoch, total


def pass_batches(num_items: int, batch_size: int, order_rng: torch.Generator) -> list[torch.Tensor]:
    """The rows of each full batch of one pass over ``num_items``: one permutation drawn from
    ``order_rng`` (the shared loop's data order; a short last batch is dropped)."""
    order = torch.randperm(num_items, generator=order_rng)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(num_items // batch_size)]


def batch_rows(num_items: int, config: TrainConfig, seed: int, steps: int) -> list[torch.Tensor]:
    """The rows of the first ``steps`` batches a fresh (not resumed) single-process run of
    ``train`` draws, in order. `harness bench` steps the bare model over exactly these batches."""
    if num_items // config.batch_size == 0:
        return []
    order_rng = torch.Generator().manual_seed(seed)
    rows: list[torch.Tensor] = []
    while len(rows) < steps:
        rows += pass_batches(num_items, config.batch_size, order_rng)
    return rows[:steps]


@dataclass(frozen=True)
class Position:
    """Where a run stands: steps done, passes finished, batches done in the current pass and
    their losses (a checkpoint inside a pass resumes there)."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    pass_losses: tuple[float, ...] = ()

    @classmethod
    def of(cls, state: dict[str, Any]) -> Position:
        return cls(int(state["step"]), int(state["epoch"]), int(state.get("batch_in_pass", 0)),
                   tuple(float(v) for v in state.get("pass_losses", [])))

    def advanced(self) -> Position:
        return Position(self.step + 1, self.epoch, self.batch + 1)

    def next_pass(self) -> Position:
        return Position(self.step, self.epoch + 1, 0)


def build_optimizer(method: CIRMethod, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``method.optimizer_parameters()``: one group at ``lr``, or with ``group_lr`` the
    method's parameter groups, each at its own learning rate (unnamed groups at ``lr``)."""
    if not config.group_lr:
        return torch.optim.AdamW(method.optimizer_parameters(), lr=config.lr, weight_decay=config.weight_decay)
    groups = method.parameter_groups()
    unknown = sorted(set(config.group_lr) - set(groups))
    if unknown:
        raise HarnessError(f"train.group_lr names {', '.join(unknown)}, which {method.method_name} does not have",
                           field="train.group_lr", fix=f"name one of its groups: {', '.join(sorted(groups))}")
    grouped = {id(p) for group in groups.values() for p in group}
    if grouped != {id(p) for p in method.optimizer_parameters()}:
        raise ValueError(f"{type(method).__name__}.parameter_groups() does not cover optimizer_parameters() exactly")
    return torch.optim.AdamW([{"params": params, "lr": config.group_lr.get(name, config.lr), "group": name}
                              for name, params in groups.items() if params],
                             lr=config.lr, weight_decay=config.weight_decay)


def train(
    method: CIRMethod,
    split: CIRSplit,
    config: TrainConfig,
    seed: int,
    checkpoint_dir: Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    resume: bool = True,
    on_epoch: Callable[[int, CIRMethod], None] | None = None,
    step_log: Path | None = None,
) -> TrainSummary:
    """Train ``method`` on ``split`` in place; return what was done.

    With ``resume`` and a checkpoint in ``checkpoint_dir``, training continues from it (model,
    optimizer, scheduler, RNG states and data order) and, on CPU, ends where an uninterrupted
    run ends. ``on_epoch(epoch, method)`` is called after each epoch's checkpoint (a sweep
    reports a validation metric there, and may stop the trial by raising). ``step_log``: the
    file where rank 0 writes each step's loss and learning rate (harness.training.step_log).

    Under torchrun each rank trains on its contiguous share of every global batch and the
    gradients are averaged (harness.core.distributed), so the steps are the single-process steps;
    rank 0 alone writes checkpoints."""
    world = distributed.current()
    progress = progress and world.is_main
    if world.distributed and config.batch_size % world.size:
        raise HarnessError(f"train.batch_size {config.batch_size} does not split over {world.size} ranks",
                           field="train.batch_size", fix=f"use a multiple of {world.size}")
    source = training_source(method, split, config)
    summary = TrainSummary(precision=resolve_precision(config.precision, device), threads=torch.get_num_threads())
    per_epoch, total_steps = plan_steps(len(source), config)
    if total_steps == 0:
        return summary
    if per_epoch == 0:
        raise ValueError(f"{len(source)} training {source.unit} are fewer than one batch of {config.batch_size}")
    loop = _Loop.start(method, config, seed, torch.device(device), summary, total_steps, checkpoint_dir, resume)
    if step_log is not None and world.is_main:
        loop.step_log = StepLog.open(step_log, keep_through=loop.position.step)
    bar = tqdm(total=total_steps, initial=loop.position.step, desc=f"train {method.method_name}", unit="step",
               disable=not progress, leave=False)
    start = loop.started = time.perf_counter()
    finished = False
    with distributed.training_scope(config.gather_negatives):
        while loop.position.step < total_steps:
            loop.run_pass(source, bar)
            finished = False
            if on_epoch is not None:
                finish_training(method, source, config.batch_size, loop.device, summary.precision)
                finished = True
                on_epoch(loop.position.epoch, method)
                method.train()
    if not finished:  # also on a resumed run whose steps were all done
        finish_training(method, source, config.batch_size, loop.device, summary.precision)
    loop.save_final_weights()
    bar.close()
    if loop.step_log is not None:
        loop.step_log.close()
        summary.step_log_seconds = loop.step_log.seconds
    summary.seconds = summary.seconds_before_resume + time.perf_counter() - start
    summary.steps = loop.position.step
    summary.epochs = loop.position.epoch
    method.eval()
    return summary


def finish_training(method: CIRMethod, source: TripletSource | ImageSource, batch_size: int, device: torch.device,
                    precision: Literal["fp32", "bf16"]) -> None:
    """``method.finish_training`` over the training data in its stored order, in evaluation
    mode without gradients, at the precision evaluation runs at; batches are built as the
    method reads them."""
    method.eval()
    batches = (source.batch(torch.arange(start, min(start + batch_size, len(source))), device)
               for start in range(0, len(source), batch_size))
    with torch.no_grad(), autocast(device, precision):
        method.finish_training(batches)


@dataclass
class _Loop:
    """The moving parts of one training run: its optimizer, schedule, data order and position."""

    method: CIRMethod
    config: TrainConfig
    device: torch.device
    summary: TrainSummary
    total_steps: int
    checkpoint_dir: Path | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    order_rng: torch.Generator
    position: Position
    world: distributed.World
    step_log: StepLog | None = None
    started: float = 0.0  # perf_counter when this process began training (for the checkpoint's seconds)

    @classmethod
    def start(cls, method: CIRMethod, config: TrainConfig, seed: int, device: torch.device, summary: TrainSummary,
              total_steps: int, checkpoint_dir: Path | None, resume: bool) -> _Loop:
        """Set the method up for training, and resume from ``checkpoint_dir`` when asked and there."""
        method.to(device).train()
        optimizer = build_optimizer(method, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total_steps, config.warmup_ratio))
        if config.micro_batch_size is not None:
            check_splittable(method)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(method)
        loop = cls(method, config, device, summary, total_steps, checkpoint_dir, optimizer, scheduler,
                   torch.Generator().manual_seed(seed), Position(), distributed.current())
        loop._resume(resume)
        if loop.world.rank > 0:  # dropout and other draws differ between ranks, as between items of one batch
            torch.manual_seed(seed + 7919 * loop.world.rank + loop.position.step)
        return loop

    def _resume(self, resume: bool) -> None:
        """Rank 0 reads the last checkpoint (the ranks need no shared filesystem) and every rank
        takes its weights, optimizer, schedule, RNG states and position."""
        directory = self.checkpoint_dir
        found = resume and directory is not None and (directory / "last" / "state.pt").is_file()
        state = load_checkpoint(directory,
                                self.method) if found and self.world.is_main else None  # type: ignore[arg-type]
        state = distributed.broadcast_object(state)
        distributed.broadcast_parameters(self.method)  # rank 0's weights (fresh or resumed) on every rank
        if state is None:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.order_rng.set_state(state["order_rng"])
        _restore_rng(state)
        self.method.load_training_state(state.get("method", {}))
        self.position = Position.of(state)
        self.summary.loss_per_epoch = [float(v) for v in state.get("loss_per_epoch", [])]
        self.summary.resumed_from_step = self.position.step
        self.summary.seconds_before_resume = float(state.get("seconds", 0.0))

    def run_pass(self, source: TripletSource | ImageSource, bar: tqdm) -> None:
        """One pass over the training data (or its rest, after a mid-pass resume), then the
        epoch's checkpoint."""
        pass_start = self.order_rng.get_state()  # what a checkpoint inside this pass restores
        batches = pass_batches(len(source), self.config.batch_size, self.order_rng)
        pass_losses = [torch.tensor(v) for v in self.position.pass_losses]  # on the device: one sync per epoch on a GPU
        live_loss = self.device.type == "cpu"  # on a CPU reading the loss costs nothing; on a GPU it waits for the step
        every = self.config.checkpoint_every
        for rows in batches[self.position.batch:]:
            if self.position.step >= self.total_steps:
                break
            pass_losses.append(_global_mean(self.step(source.batch(distributed.shard_rows(rows, self.world),
                                                                   self.device)), self.world))
            if self.step_log is not None:
                self.step_log.step(self.position.step, pass_losses[-1], self.scheduler.get_last_lr()[0],
                                   self.position.epoch + 1)
            if live_loss:
                bar.set_postfix(loss=f"{float(pass_losses[-1]):.3f}", epoch=self.position.epoch + 1, refresh=False)
            bar.update()
            step = self.position.step
            if every and step % every == 0 and step < self.total_steps and self.position.batch < len(batches):
                self.save(pass_start, pass_losses)
        self.position = self.position.next_pass()
        losses = [float(value) for value in torch.stack(pass_losses).cpu()]  # one sync per epoch
        self.summary.loss_per_epoch.append(float(np.mean(losses)))
        self.summary.final_loss = losses[-1]
        bar.set_postfix(loss=f"{self.summary.loss_per_epoch[-1]:.3f} (epoch mean)", epoch=self.position.epoch,
                        refresh=False)
        self.save(self.order_rng.get_state(), [])

    def step(self, batch) -> torch.Tensor:
        """One optimizer step on ``batch`` (in micro-batches when set); the detached loss."""
        method, config = self.method, self.config
        precision = self.summary.precision
        method.begin_step(self.position.step, self.total_steps)
        self.optimizer.zero_grad(set_to_none=True)
        micro_batch = config.micro_batch_size
        if micro_batch is not None and micro_batch < len(batch):
            loss = cached_backward(method, batch, micro_batch, lambda: autocast(self.device, precision))
        else:
            with autocast(self.device, precision):
                loss = method.loss(batch)
            loss.backward()
        distributed.average_gradients(self._optimized)
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self._clipped, config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.position = self.position.advanced()
        return loss.detach()

    @functools.cached_property
    def _optimized(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    @functools.cached_property
    def _clipped(self) -> list[torch.nn.Parameter]:
        return list(self.method.parameters())  # listed once: walking the module tree every step costs ~1%

    def save_final_weights(self) -> None:
        """Rewrite the last checkpoint's weights once training has finished: what ``finish_training``
        re-estimated (CIR-LVLM's selection moments) is what the run evaluates with, so `harness eval`
        must load it too. The training state (position, optimizer, RNGs) is left as it was."""
        last = self.checkpoint_dir / "last" if self.checkpoint_dir is not None else None
        if last is None or not self.config.checkpoint or not (last / "model.safetensors").is_file():
            return
        if self.world.is_main:
            with staged_file(last / "model.safetensors") as staging:
                save_trained_weights(self.method, staging)
        distributed.barrier()

    def save(self, pass_start: torch.Tensor, pass_losses: list[torch.Tensor]) -> None:
        """Checkpoint at the current position: the pass's data order is redrawn from ``pass_start`` on resume."""
        if self.checkpoint_dir is not None and self.config.checkpoint:
            if self.world.is_main:
                save_checkpoint(self.checkpoint_dir, self.method, self.optimizer, self.scheduler, pass_start,
                                self.position, self.summary.loss_per_epoch, [float(v) for v in pass_losses],
                                self.summary.seconds_before_resume + time.perf_counter() - self.started)
            distributed.barrier()


def _global_mean(loss: torch.Tensor, world: distributed.World) -> torch.Tensor:
    """The step's loss over the global batch: the mean of the ranks' losses (equal shares)."""
    if world.distributed:
        loss = loss.clone()
        torch.distributed.all_reduce(loss)
        loss /= world.size
    return loss


class TripletSource:
    """Training triplets with a target: reference images, captions, target images."""

    unit = "queries"

    def __init__(self, split: CIRSplit, config: TrainConfig, method: CIRMethod):
        triplets = [t for t in split.triplets if t.target is not None]
        if config.max_train_queries is not None:
            triplets = triplets[: config.max_train_queries]
        self.references = split.images.load([t.reference for t in triplets])
        self.targets = split.images.load([t.target for t in triplets])  # type: ignore[misc]
        self.captions = [method.query_text(t) for t in triplets]

    def __len__(self) -> int:
        return len(self.captions)

    def batch(self, rows: torch.Tensor, device: torch.device | str) -> TripletBatch:
        return TripletBatch(reference_images=to_device(self.references[rows], device),
                            captions=[self.captions[int(i)] for i in rows],
                            target_images=to_device(self.targets[rows], device))


#: decoded training images an ImageSource loads up front (through the decoded-image cache) when
#: they fit; more are decoded batch by batch. CIR_HARNESS_PRELOAD_MB changes it.
PRELOAD_MB = 2048


class ImageSource:
    """Images of the training split's image store, alone: what a zero-shot method (trained on
    unlabelled images) may see. Triplets, captions and targets are not read. When the decoded
    images fit in ``PRELOAD_MB`` they are loaded once (a later run reads them back from the
    decoded-image cache); a larger store, which may hold many more images than a run visits,
    is decoded batch by batch (pic2word's training loop efficiency in `harness bench` was 0.62
    decoding per batch)."""

    unit = "images"

    def __init__(self, split: CIRSplit, config: TrainConfig, names: list[str]):
        self.store = split.images
        self.names = names[: config.max_train_queries] if config.max_train_queries is not None else names
        budget = float(os.environ.get("CIR_HARNESS_PRELOAD_MB", PRELOAD_MB)) * 2**20
        self.images = (self.store.load(self.names) if len(self.names) * 3 * self.store.image_size ** 2 <= budget
                       else None)

    def __len__(self) -> int:
        return len(self.names)

    def batch(self, rows: torch.Tensor, device: torch.device | str) -> ImageBatch:
        names = [self.names[int(i)] for i in rows]
        images = self.images[rows] if self.images is not None else self.store.load(names)
        return ImageBatch(images=to_device(images, device), names=names)


def training_source(method: CIRMethod, split: CIRSplit, config: TrainConfig) -> TripletSource | ImageSource:
    """What the shared loop feeds ``method``: triplets, or images alone (``training_data``)."""
    if method.training_data == "images":
        return ImageSource(split, config, method.training_images(split))
    return TripletSource(split, config, method)


def save_checkpoint(
    directory: Path,
    method: CIRMethod,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    order_rng_state: torch.Tensor,
    position: Position,
    loss_per_epoch: list[float] | None = None,
    pass_losses: list[float] | None = None,
    seconds: float = 0.0,
) -> Path:
    """Write ``directory/last`` atomically: model.safetensors (what the run trains, with the frozen
    base weights' digest: harness.training.checkpoint) + state.pt (optimizer, scheduler, the data-order
    generator's state at the start of the current pass, torch / numpy / python RNG states,
    position, losses so far, training seconds so far)."""
    with staged_directory(directory / "last") as staging:
        save_trained_weights(method, staging / "model.safetensors")
        state = _training_state(method, optimizer, scheduler, order_rng_state, position, loss_per_epoch, pass_losses)
        torch.save({**state, "seconds": float(seconds)}, staging / "state.pt")
    return directory / "last"


def _training_state(method: CIRMethod, optimizer, scheduler, order_rng_state: torch.Tensor, position: Position,
                    loss_per_epoch: list[float] | None, pass_losses: list[float] | None) -> dict[str, Any]:
    """What state.pt holds besides the weights."""
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "order_rng": order_rng_state,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": torch.from_numpy(np.random.get_state(legacy=False)["state"]["key"].astype(np.int64)),
        "numpy_rng_pos": int(np.random.get_state(legacy=False)["state"]["pos"]),
        "python_rng": random.getstate(),
        "epoch": position.epoch,
        "step": position.step,
        "batch_in_pass": position.batch,
        "pass_losses": list(pass_losses or []),
        "loss_per_epoch": list(loss_per_epoch or []),
        "method": method.training_state(),
    }


def _restore_rng(state: dict[str, Any]) -> None:
    """Put the process RNGs back where the checkpoint left them (older checkpoints: torch only)."""
    torch.set_rng_state(state["torch_rng"])
    if "numpy_rng" in state:
        np.random.set_state({"bit_generator": "MT19937", "state": {"key": state["numpy_rng"].numpy().astype(np.uint32),
                                                                    "pos": int(state["numpy_rng_pos"])},
                             "has_gauss": 0, "gauss": 0.0})
    if "python_rng" in state:
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))


def load_checkpoint(directory: Path, method: CIRMethod) -> dict[str, Any]:
    """Load model weights from ``directory/last`` into ``method``; return the training state
    (read with ``weights_only=True``, so a checkpoint cannot run code)."""
    final = directory / "last"
    load_trained_weights(method, final / "model.safetensors")
    state = read_torch(final / "state.pt", fix=broken_checkpoint_fix(final))
    if not isinstance(state, dict) or "step" not in state:
        raise HarnessError("not a training state written by the harness", file=final / "state.pt",
                           fix=broken_checkpoint_fix(final))
    return state


def broken_checkpoint_fix(final: Path) -> str:
    """How to get past a broken last checkpoint without losing anything: move it aside."""
    return f"move it aside (mv {final} {final}.broken) to train the run from its start, or run with --overwrite always"
