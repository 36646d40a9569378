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
from safetensors.torch import load_file, save_file
from torch import nn

from harness.errors import HarnessError

#: values of each frozen tensor that enter its digest (a strided sample: a full hash of 7B
#: parameters would cost seconds at every save and load)
SAMPLED_VALUES = 4096


def trained_tensors(method: nn.Module) -> dict[str, torch.Tensor]:
    """The state a checkpoint keeps: every parameter the optimizer updates and every persistent
    buffer (running statistics, counters, flags), each shared tensor once."""
    trained = {id(tensor) for tensor in method.optimizer_parameters()}  # type: ignore[operator]
    parameters = {id(tensor) for tensor in method.parameters()}
    kept: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in method.state_dict(keep_vars=True).items():
        key = id(tensor)
        if key in seen or (key in parameters and key not in trained):
            continue
        seen.add(key)
        kept[name] = tensor.detach().contiguous()
    return kept


def frozen_names(method: nn.Module) -> set[str]:
    """State-dict names of the parameters no optimizer step changes."""
    kept = trained_tensors(method)
    return {name for name in method.state_dict() if name not in kept}


def frozen_fingerprint(method: nn.Module) -> str:
    """A digest of the frozen parameters: names, shapes, dtypes and a strided value sample."""
    digest = hashlib.sha256()
    state = method.state_dict()
    for name in sorted(frozen_names(method)):
        tensor = state[name].detach()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        flat = tensor.reshape(-1)
        stride = max(1, flat.numel() // SAMPLED_VALUES)
        digest.update(flat[::stride][:SAMPLED_VALUES].float().cpu().numpy().tobytes())
    return digest.hexdigest()


def save_trained_weights(method: nn.Module, path: Path) -> None:
    """Write what ``method`` trains to ``path`` (safetensors), with the frozen weights' digest."""
    tensors = {name: tensor.cpu() for name, tensor in trained_tensors(method).items()}
    save_file(tensors, str(path), metadata={"format": "pt", "content": "trained",
                                            "frozen_fingerprint": frozen_fingerprint(method)})


def load_trained_weights(method: nn.Module, path: Path) -> None:
    """Load a checkpoint written by ``save_trained_weights`` (or an older whole-model one) into
    ``method``; a checkpoint trained on other frozen weights is refused, naming the file."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    state = load_file(str(path))
    missing, unexpected = method.load_state_dict(state, strict=False)
    fix = "rebuild the run from the base checkpoint it was trained on, or re-train it (--overwrite always)"
    if unexpected:
        raise HarnessError(f"the checkpoint holds tensors this method does not have ({unexpected[0]}, ...)",
                           file=path, field="model.safetensors", fix=fix)
    if metadata.get("content") != "trained":
        missing = [name for name in missing if name not in _aliases(method)]
        if missing:
            raise HarnessError(f"the checkpoint lacks {len(missing)} tensors ({missing[0]}, ...)", file=path,
                               field="model.safetensors", fix=fix)
        return
    if set(missing) - frozen_names(method):
        raise HarnessError(f"the checkpoint lacks trained tensors ({sorted(set(missing) - frozen_names(method))[0]}, ...)",
                           file=path, field="model.safetensors", fix=fix)
    if metadata.get("frozen_fingerprint") != frozen_fingerprint(method):
        raise HarnessError("the frozen base weights differ from those the checkpoint was trained on", file=path,
                           field="frozen_fingerprint", fix=fix)


def _aliases(method: nn.Module) -> set[str]:
    """State-dict names that share their tensor with an earlier name (tied weights)."""
    seen: set[int] = set()
    aliases: set[str] = set()
    for name, tensor in method.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            aliases.add(name)
        seen.add(id(tensor))
    return aliases
