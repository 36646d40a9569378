"""Which device runs a model, and its mixed precision."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Literal

import torch

from harness.core.errors import HarnessError
from harness.core.settings import Precision


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HarnessError("'cuda' was asked for but torch sees no GPU", field="eval.device",
                           fix="set eval.device to auto or cpu")
    return torch.device(name)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16) and torch
    and oneDNN may use them: there oneDNN multiplies bf16 at 4-5x the fp32 rate (measured on a
    Zen 4 EPYC: 400 against 80-180 GFLOP/s); elsewhere bf16 is emulated and slower than fp32. A
    machine told to behave as an AVX2 one (ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2:
    docs/scaling.md) answers False, as the AVX2 CPU it stands in for would."""
    try:
        capabilities = torch.cpu.get_capabilities()  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):
        return False
    if not str(torch.backends.cpu.get_cpu_capability()).upper().startswith("AVX512"):
        return False
    limit = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    if limit not in ("ALL", "DEFAULT") and "BF16" not in limit and "AMX" not in limit:
        return False
    return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))


def resolve_precision(setting: Precision, device: torch.device | str) -> Literal["fp32", "bf16"]:
    """The precision ``setting`` means on ``device`` (``auto`` decided by the hardware)."""
    device = torch.device(device)
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def full_precision(device: torch.device | str) -> torch.autocast:
    """A float32 region inside bf16 autocast, for the few places where bf16 rounding changes the
    outcome (contrastive similarities, prompt selection, embedding heads); pass float tensors in."""
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: Literal["fp32", "bf16"]) -> Iterator[None]:
    """bf16 autocast (weights and optimizer stay fp32) or nothing. On CPU under bf16 attention
    runs through SDPA's math kernel: the CPU flash-attention backward in bf16 took 13 ms per call
    at these sequence lengths, 36% of a tiny CIR-LVLM step (0.211 s; 0.142 s with the math kernel)."""
    device = torch.device(device)
    if precision != "bf16":
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
        if device.type == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        yield


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` (on the CPU) on ``device`` without making the host wait for the GPU: a copy
    from pageable memory first synchronises the stream (CUDA's documented behaviour), so on a
    GPU the batch is staged in pinned memory and copied asynchronously. Elsewhere ``.to``."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def to_host(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` copied to the CPU; from a GPU asynchronously into pinned memory, so it may be
    read only after the device is synchronised (the caller's one sync at the end of a loop)."""
    if tensor.device.type != "cuda":
        return tensor.cpu()
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


HALF_DTYPES = (torch.float16, torch.bfloat16)


def weights_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of a module's first floating-point parameter (float32 when it has none)."""
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


@contextlib.contextmanager
def in_weights_dtype(module: torch.nn.Module) -> Iterator[torch.dtype]:
    """Run a block in ``module``'s own weight dtype and yield it, so callers cast their inputs to it.

    A checkpoint kept in half precision (frozen bf16 / fp16 weights, as LVLMs ship) computes as it
    was released: outside autocast, whose CPU kernels refuse fp16 next to bf16 and which would
    round fp16 weights to bf16. Float32 modules (the tiny backbones, anything trained) stay under
    the run's autocast, unchanged."""
    dtype = weights_dtype(module)
    if dtype not in HALF_DTYPES:
        yield dtype
        return
    device = next(module.parameters()).device
    with torch.autocast(device_type=device.type, enabled=False):
        yield dtype


def upcast_trained(parameters: list[torch.nn.Parameter]) -> int:
    """Put every trained parameter held in half precision into float32 (master weights: AdamW
    updates below bf16's resolution would be lost); frozen ones keep the checkpoint's dtype.
    Returns how many tensors were cast."""
    cast = 0
    for tensor in parameters:
        if tensor.dtype in HALF_DTYPES:
            tensor.data = tensor.data.float()
            cast += 1
    return cast
