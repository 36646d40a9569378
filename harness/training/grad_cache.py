"""One training step in micro-batches with exact in-batch negatives (GradCache).

    loss = cached_backward(method, batch, micro_batch_size=16, autocast_scope=lambda: autocast(device, precision))

Plain gradient accumulation is wrong for a contrastive loss: each micro-batch would see only
its own negatives. GradCache (Gao et al., "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup", RepL4NLP 2021; github.com/luyug/GradCache) keeps them exact:

1. every micro-batch's loss inputs (``method.loss_inputs``: the embeddings) are computed
   without a graph, and the random state before each is remembered;
2. the loss (``method.loss_from``) of the whole batch is computed from them and
   backpropagated to them (and to any parameter the loss itself uses, e.g. a learned
   temperature);
3. each micro-batch is computed again with its remembered random state, now with a graph,
   and backpropagated with the cached gradient of its rows.

The parameter gradients are the whole batch's up to float rounding; the price is a second
forward pass. Random draws (dropout, SEARLE's concept sampling) are drawn per micro-batch, so
a method that draws them sees other draws than in one batch; the deterministic methods
(CIR-LVLM, the dual-encoder references) get the plain run's losses and metrics.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

import torch

from harness.core.errors import HarnessError
from harness.methods.base import CIRMethod, ImageBatch, TripletBatch

Batch = TripletBatch | ImageBatch


def micro_batches(batch: Batch, size: int) -> list[tuple[int, int, Batch]]:
    """(start, stop, micro-batch) of ``batch`` in parts of ``size`` items (the last may be smaller)."""
    return [(start, min(start + size, len(batch)), batch.part(start, min(start + size, len(batch))))
            for start in range(0, len(batch), size)]


def check_splittable(method: CIRMethod) -> None:
    """Refuse a method whose loss cannot be split (it overrides ``loss`` itself)."""
    if type(method).loss is not CIRMethod.loss:
        raise HarnessError(f"method {method.method_name!r} overrides loss(), so its step cannot be micro-batched",
                           field="train.micro_batch_size",
                           fix="remove it, or split the method's loss into loss_inputs and loss_from "
                               "(docs/adding_a_method.md)")


def cached_backward(method: CIRMethod, batch: Batch, micro_batch_size: int,
                    autocast_scope: Callable[[], contextlib.AbstractContextManager]) -> torch.Tensor:
    """Backpropagate ``method``'s loss of ``batch`` through micro-batches of ``micro_batch_size``;
    return the loss (detached). Gradients accumulate into ``.grad`` as ``loss.backward()`` would."""
    parts = micro_batches(batch, micro_batch_size)
    with autocast_scope(), method.whole_batch(batch, [part for _, _, part in parts]):
        states, cached = [], []
        with torch.no_grad():
            for _, _, part in parts:
                states.append(_random_state(method))
                cached.append(_checked(method.loss_inputs(part), len(part)))
        after = _random_state(method)
        inputs = {name: torch.cat([c[name] for c in cached]).detach().requires_grad_(True) for name in cached[0]}
        loss = method.loss_from(inputs)
        loss.backward()
        for (start, stop, part), state in zip(parts, states, strict=True):
            _restore_random_state(method, state)
            surrogate = _surrogate(method.loss_inputs(part), inputs, start, stop)
            if surrogate is not None:
                surrogate.backward()
        _restore_random_state(method, after)
    return loss.detach()


def _checked(inputs: dict[str, torch.Tensor], items: int) -> dict[str, torch.Tensor]:
    for name, tensor in inputs.items():
        if tensor.dim() == 0 or tensor.shape[0] != items or not tensor.is_floating_point():
            raise ValueError(f"loss_inputs()[{name!r}] must be a float tensor with one row per item "
                             f"({items}), got shape {tuple(tensor.shape)} {tensor.dtype}")
    return inputs


def _surrogate(recomputed: dict[str, torch.Tensor], cached: dict[str, torch.Tensor], start: int, stop: int):
    """sum(recomputed * cached gradient) over the tensors with a graph: its backward pass gives
    the parameters this micro-batch's share of the whole-batch gradient."""
    terms = [(tensor * cached[name].grad[start:stop].to(tensor.dtype)).sum()
             for name, tensor in recomputed.items() if tensor.requires_grad and cached[name].grad is not None]
    return torch.stack(terms).sum() if terms else None


def _random_state(method: CIRMethod) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "method": method.training_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_random_state(method: CIRMethod, state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    method.load_training_state(state["method"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
