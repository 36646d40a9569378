"""torch.distributed for `harness run` under torchrun: one process per rank, same command.

    torchrun --nproc-per-node 2 -m harness run ablations/pool_size.yaml

Every rank loads the data and builds the method from the same seed; a global batch of
``train.batch_size`` is cut into equal contiguous shards, one per rank, and gradients are
averaged, so a step is the single-process step. In-batch negatives are gathered from every
rank (``train.gather_negatives``). Evaluation hands whole encoder batches to ranks in turn
(batch b to rank b mod world size) and gathers the embeddings back in order, so each
embedding is computed exactly as a single process computes it. Rank 0 alone writes files and
talks to mlflow. Outside torchrun every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from harness.core.errors import HarnessError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of a torchrun job (rank 0 of 1 outside one)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def current() -> World:
    """The world of this process: the initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def init_from_environment(device: str = "auto") -> World:
    """Join the process group torchrun describes in the environment (WORLD_SIZE, RANK, ...):
    gloo on CPU, nccl when the runs use a GPU. Without WORLD_SIZE > 1, stay a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    if not dist.is_available():
        raise HarnessError("WORLD_SIZE > 1 but this torch build has no torch.distributed",
                           fix="run without torchrun, or install a torch with distributed support")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return current()


def shutdown() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if current().distributed:
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (building a cache: a dataset, a stage-0 backbone); the
    other ranks wait for it and then run the block themselves, finding the cache filled."""
    world = current()
    if world.distributed and not world.is_main:
        dist.barrier()
    yield
    if world.distributed and world.is_main:
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (decisions that must agree: skip, resume, delete)."""
    if not current().distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Make every rank hold rank 0's weights and buffers (they are built from one seed; this
    makes it so whatever a backbone's initialisation did)."""
    if not current().distributed:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over ranks (one flat all-reduce)."""
    world = current()
    if not world.distributed:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_across_ranks(tensor: torch.Tensor) -> None:
    """Sum ``tensor`` over ranks in place (evaluation counters such as prompt usage)."""
    if current().distributed:
        dist.all_reduce(tensor)


def shard_rows(rows: torch.Tensor, world: World | None = None) -> torch.Tensor:
    """This rank's contiguous share of a global batch (sizes must divide evenly, so every rank
    computes the same number of losses and gathered negatives line up)."""
    world = world or current()
    if not world.distributed:
        return rows
    if len(rows) % world.size:
        raise HarnessError(f"a batch of {len(rows)} does not split evenly over {world.size} ranks",
                           field="train.batch_size", fix=f"use a multiple of {world.size}")
    share = len(rows) // world.size
    return rows[world.rank * share : (world.rank + 1) * share]


#: Inside the shared training loop under torchrun: batch statistics are over the global batch,
#: and (``_gather_negatives``) the contrastive loss sees every rank's items. Off elsewhere: a
#: stage-0 build runs on rank 0 alone and must not wait for the others.
_in_training = False
_gather_negatives = False


@contextmanager
def training_scope(gather_negatives: bool) -> Iterator[None]:
    """The block is the shared loop's steps: ranks step together (see ``_in_training``)."""
    global _in_training, _gather_negatives
    previous = _in_training, _gather_negatives
    _in_training, _gather_negatives = current().distributed, gather_negatives
    try:
        yield
    finally:
        _in_training, _gather_negatives = previous


def batch_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and (biased) variance of a training batch of detached features: over
    the global batch when the ranks step together (as SyncBatchNorm), else over ``features``."""
    if not _in_training:
        return features.mean(0), features.var(0, unbiased=False)
    count = torch.tensor([float(features.shape[0])], device=features.device)
    total = features.sum(0)
    dist.all_reduce(count)
    dist.all_reduce(total)
    mean = total / count
    spread = ((features - mean) ** 2).sum(0)
    dist.all_reduce(spread)
    return mean, spread / count


def gather_across_ranks(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's rows in rank order, the offset of this rank's rows). Gradients flow back to
    each rank's own rows (torch.distributed.nn's autograd all_gather). Single process or
    gathering switched off: (``tensor``, 0)."""
    world = current()
    if not _in_training or not _gather_negatives:
        return tensor, 0
    return _GatherRows.apply(tensor), world.rank * tensor.shape[0]


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0; backward sums every rank's gradient of this rank's rows (each
    rank's loss saw them as negatives)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        shards = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(shards, tensor.contiguous())
        ctx.rows = tensor.shape[0]
        return torch.cat(shards)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def batch_starts(count: int, batch_size: int, world: World | None = None) -> list[int]:
    """Starts of the encoder batches this rank computes: batch b goes to rank b mod size, so
    together the ranks cover ``range(count)`` once, in the same batches as a single process."""
    world = world or current()
    return list(range(0, count, batch_size))[world.rank :: world.size]


def gather_batches(local: list[torch.Tensor], count: int, batch_size: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Reassemble [count, *shape] from every rank's batches (as ``batch_starts`` dealt them)."""
    world = current()
    if not world.distributed:
        return torch.cat(local) if local else torch.empty(0, *shape)
    starts = list(range(0, count, batch_size))
    most = -(-len(starts) // world.size) * batch_size
    mine = torch.cat(local) if local else torch.empty(0, *shape)
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros(most, *shape, dtype=mine.dtype, device=on)
    padded[: len(mine)] = mine.to(on)
    shards = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(shards, padded)
    shards = [shard.cpu() for shard in shards]
    rows = []
    for number, start in enumerate(starts):
        rank, slot = number % world.size, number // world.size
        size = min(batch_size, count - start)
        rows.append(shards[rank][slot * batch_size : slot * batch_size + size])
    result = torch.cat(rows) if rows else torch.empty(0, *shape)
    if len(result) != count:
        raise RuntimeError(f"gathered {len(result)} embeddings for {count} items")
    return result
