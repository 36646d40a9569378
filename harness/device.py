"""Which device runs a model, and its mixed precision."""

from __future__ import annotations

import torch

from harness.errors import HarnessError


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HarnessError("'cuda' was asked for but torch sees no GPU", field="eval.device",
                           fix="set eval.device to auto or cpu")
    return torch.device(name)


def autocast(device: torch.device | str):
    """bf16 autocast on CUDA; a no-op on CPU (runs there stay float32 and deterministic)."""
    device = torch.device(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
