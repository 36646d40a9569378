"""Activation memory: what a training step keeps for its backward pass, and gradient checkpointing.

    enable_gradient_checkpointing(method)          # transformers' own, on every trained model
    with SavedTensors() as saved:                  # bytes autograd keeps, counted as they are saved
        loss = method.loss(batch)
    saved.bytes

The count is device-independent (a tensor's size does not depend on where it lives), which is
why `harness plan`'s estimate can be checked on CPU (harness.measure.memory_estimate).
"""

from __future__ import annotations

import sys

import torch
from torch import nn


def enable_gradient_checkpointing(method: nn.Module) -> int:
    """Turn on transformers' gradient checkpointing (non-reentrant, so frozen inputs and LoRA need
    no input gradients) in every transformers model inside ``method`` that has a trained
    parameter; return how many. A method with none (the references' own small towers) is told
    so on stderr and trains as before."""
    from transformers import PreTrainedModel

    enabled = 0
    for module in method.modules():
        if (isinstance(module, PreTrainedModel) and getattr(module, "supports_gradient_checkpointing", False)
                and any(p.requires_grad for p in module.parameters())):
            if hasattr(module, "activation_checkpointing_enable"):  # its name from transformers 5.2x on
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            enabled += 1
    if not enabled:
        print(f"note: train.gradient_checkpointing has nothing to checkpoint in {type(method).__name__} "
              "(no trained transformers model); it trains as before", file=sys.stderr)
    return enabled


class SavedTensors:
    """Counts the bytes autograd saves for backward inside the block, each storage once (a
    tensor saved by several operations, or views of one tensor, count once): the activation
    memory a step holds at the end of its forward pass, parameters excluded."""

    def __init__(self, exclude: nn.Module | None = None):
        self.bytes = 0
        self._seen: set[int] = set()
        excluded = exclude.parameters() if exclude is not None else ()
        self._excluded = {p.untyped_storage().data_ptr() for p in excluded}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda packed: packed)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in self._seen and key not in self._excluded:
            self._seen.add(key)
            self.bytes += storage.nbytes()
        return tensor

    def __enter__(self) -> SavedTensors:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)
