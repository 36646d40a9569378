"""What a training checkpoint's ``model.safetensors`` holds: what the run trains, not the base model.

    save_trained_weights(method, path)   # trained parameters + persistent buffers + the frozen weights' identity
    load_trained_weights(method, path)   # into a freshly built method; refuses other frozen weights

A run from a 7B LVLM with LoRA trains a few million parameters next to 16 GB of frozen ones;
a checkpoint of everything costs that 16 GB at every save. The frozen weights are rebuilt from
the base checkpoint when the run is rebuilt, so the file keeps only their identity: a digest of
their names, shapes, dtypes and a strided sample of their values, checked on load. Checkpoints
written before this (every tensor) still load.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from harness.core.errors import HarnessError
from harness.core.files import read_safetensors
from harness.methods.base import CIRMethod

#: values of each frozen tensor that enter its digest (a strided sample: a full hash of 7B
#: parameters would cost seconds at every save and load)
SAMPLED_VALUES = 4096


def split_state(method: CIRMethod) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(trained, frozen) state of ``method``, by state-dict name. Trained: every parameter the
    optimizer updates and every persistent buffer (running statistics, counters, flags); frozen:
    the other parameters. Each shared (tied) tensor appears once, under its first name."""
    trained_ids = {id(tensor) for tensor in method.optimizer_parameters()}
    parameter_ids = {id(tensor) for tensor in method.parameters()}
    trained: dict[str, torch.Tensor] = {}
    frozen: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in method.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        part = frozen if id(tensor) in parameter_ids and id(tensor) not in trained_ids else trained
        part[name] = tensor.detach()
    return trained, frozen


def fingerprint(frozen: dict[str, torch.Tensor]) -> str:
    """A digest of frozen tensors: names, shapes, dtypes and a strided value sample."""
    digest = hashlib.sha256()
    for name in sorted(frozen):
        tensor = frozen[name]
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        flat = tensor.reshape(-1)
        stride = max(1, flat.numel() // SAMPLED_VALUES)
        digest.update(flat[::stride][:SAMPLED_VALUES].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def save_trained_weights(method: CIRMethod, path: Path) -> None:
    """Write what ``method`` trains to ``path`` (safetensors), with the frozen weights' digest."""
    trained, frozen = split_state(method)
    tensors = {name: tensor.contiguous().cpu() for name, tensor in trained.items()}
    save_file(tensors, str(path),
              metadata={"format": "pt", "content": "trained", "frozen_fingerprint": fingerprint(frozen)})


def load_trained_weights(method: CIRMethod, path: Path) -> None:
    """Load a checkpoint written by ``save_trained_weights`` (or an older whole-model one) into
    ``method``; a checkpoint trained on other frozen weights is refused, naming the file."""
    tensors = read_safetensors(path, fix=f"move it aside (mv {path.parent} {path.parent}.broken) to train the run "
                               "from its start, or run with --overwrite always")
    with safe_open(str(path), framework="pt") as handle:  # read above, so it opens
        metadata = handle.metadata() or {}
    missing, unexpected = method.load_state_dict(tensors, strict=False)
    fix = "rebuild the run from the base checkpoint it was trained on, or re-train it (--overwrite always)"
    if unexpected:
        raise HarnessError(f"the checkpoint holds tensors this method does not have ({unexpected[0]}, ...)",
                           file=path, field="model.safetensors", fix=fix)
    trained, frozen = split_state(method)
    whole = metadata.get("content") != "trained"  # written before checkpoints kept only what is trained
    lacking = sorted(name for name in missing if name in trained or (whole and name in frozen))
    if lacking:
        raise HarnessError(f"the checkpoint lacks {len(lacking)} tensors ({lacking[0]}, ...)", file=path,
                           field="model.safetensors", fix=fix)
    if not whole and metadata.get("frozen_fingerprint") != fingerprint(frozen):
        raise HarnessError("the frozen base weights differ from those the checkpoint was trained on", file=path,
                           field="frozen_fingerprint", fix=fix)


