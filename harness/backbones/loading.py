"""Loading a pretrained backbone from a local directory, or only its structure at a chosen depth.

    model = pretrained_model(AutoModel, directory)        # the checkpoint, local files only
    with structure_probe(language=2, vision=1) as probe:  # harness plan: random weights, 2 LM layers
        method = build_method(...)
    probe.depths                                          # {"language": 28, "vision": 32}: the real depths

Inside ``structure_probe`` every pretrained loader builds the checkpoint's architecture from its
config.json alone, with the given number of transformer layers per role and random weights in
the checkpoint's dtype: nothing but the config is read, so a 7B model's layer costs can be
measured on a CPU in seconds (harness.measure.memory_estimate extrapolates them to the full depth).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import AutoConfig

#: config attributes that count transformer layers (CLIP, LLaMA, Qwen2: num_hidden_layers; Qwen2-VL's vision: depth)
DEPTH_KEYS = ("num_hidden_layers", "depth")


@dataclass
class StructureProbe:
    """The layers per role ("language", "vision") a probe builds, and the real depths it met."""

    layers: dict[str, int]
    depths: dict[str, int] = field(default_factory=dict)


_probe: ContextVar[StructureProbe | None] = ContextVar("structure_probe", default=None)


@contextlib.contextmanager
def structure_probe(language: int = 1, vision: int = 1) -> Iterator[StructureProbe]:
    """Within: pretrained loaders build ``language`` / ``vision`` layers with random weights."""
    probe = StructureProbe({"language": language, "vision": vision})
    token = _probe.set(probe)
    try:
        yield probe
    finally:
        _probe.reset(token)


def probing() -> bool:
    """Whether models are being built for their structure only (so nothing derived from their
    random weights may be cached)."""
    return _probe.get() is not None


def pretrained_model(auto_class: Any, directory: str | Path, role: str = "language") -> Any:
    """``auto_class.from_pretrained(directory)`` from local files; inside ``structure_probe`` the
    architecture alone at the probe's depth. ``role`` is the depth a top-level config counts
    (sub-configs named ``vision_config`` count as vision, ``text_config`` as language)."""
    probe = _probe.get()
    if probe is None:
        return auto_class.from_pretrained(directory, local_files_only=True)
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    _set_depth(config, role, probe)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return auto_class.from_config(config, dtype=dtype) if dtype is not None else auto_class.from_config(config)


def _set_depth(config: Any, role: str, probe: StructureProbe) -> None:
    for key in DEPTH_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            probe.depths[role] = max(probe.depths.get(role, 0), value)
            setattr(config, key, probe.layers[role])
            types = getattr(config, "layer_types", None)
            if isinstance(types, list) and len(types) == value:
                config.layer_types = types[: probe.layers[role]]
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "to_dict"):
            _set_depth(sub, "vision" if "vision" in name else "language" if "text" in name else role, probe)
