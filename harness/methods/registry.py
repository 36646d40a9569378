"""The method registry: register by decorator, look up by name with "did you mean".

    from harness.methods.registry import register_method
    from harness.methods.base import CIRMethod, MethodParams

    @register_method("image_only", family="reference", description="the reference image alone")
    class ImageOnly(CIRMethod):
        class Params(MethodParams): ...

    info = get_method("image_only")      # MethodInfo: name, family, description, params, cls
    model = build_method("image_only", {"embed_dim": 256}, context)
    list_methods()                       # every registered method, sorted by family and name

The modules of ``METHOD_MODULES`` (every method of harness.methods) register when
``load_methods()`` imports them; a second registration under one name is refused.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from harness.core.device import upcast_trained
from harness.core.errors import HarnessError, did_you_mean
from harness.methods.base import CIRMethod, MethodContext, MethodParams

#: Modules whose import registers methods.
METHOD_MODULES: tuple[str, ...] = ("harness.methods.clip4cir", "harness.methods.lower_bounds",
                                   "harness.methods.pic2word",
                                   "harness.methods.searle", "harness.methods.sprc", "harness.methods.cir_lvlm")


@dataclass(frozen=True)
class MethodInfo:
    """Metadata of a registered method."""

    name: str
    family: str
    description: str
    cls: type[CIRMethod]
    paper: str | None = None

    @property
    def params(self) -> type[MethodParams]:
        return self.cls.Params

    def defaults(self) -> dict[str, Any]:
        return self.params().model_dump(mode="json")


_METHODS: dict[str, MethodInfo] = {}


def register_method(
    name: str, *, family: str, description: str, paper: str | None = None
) -> Callable[[type[CIRMethod]], type[CIRMethod]]:
    """Class decorator that registers a ``CIRMethod`` under ``name``."""

    def decorator(cls: type[CIRMethod]) -> type[CIRMethod]:
        if name in _METHODS:
            raise ValueError(f"method '{name}' is already registered by {_METHODS[name].cls.__module__}")
        if not (isinstance(cls, type) and issubclass(cls, CIRMethod)):
            raise TypeError(f"@register_method('{name}') must decorate a CIRMethod subclass")
        cls.method_name = name
        _METHODS[name] = MethodInfo(name, family, description, cls, paper)
        return cls

    return decorator


def load_methods() -> None:
    """Import every module that registers methods (idempotent)."""
    for module in METHOD_MODULES:
        importlib.import_module(module)


def get_method(name: str) -> MethodInfo:
    """The registered method ``name``; a HarnessError with a close-name suggestion otherwise."""
    load_methods()
    if name not in _METHODS:
        raise HarnessError(f"unknown method '{name}'{did_you_mean(name, _METHODS)}",
                           fix="run `harness list` to see every method")
    return _METHODS[name]


def list_methods() -> list[MethodInfo]:
    load_methods()
    return sorted(_METHODS.values(), key=lambda info: (info.family, info.name))


def method_names() -> list[str]:
    load_methods()
    return sorted(_METHODS)


def build_method(name: str, params: MethodParams | dict[str, Any], context: MethodContext) -> CIRMethod:
    """Instantiate a registered method with validated parameters; what it trains is float32
    (harness.core.device.upcast_trained), what it keeps frozen stays in the checkpoint's dtype."""
    info = get_method(name)
    if not isinstance(params, BaseModel):
        params = info.params.model_validate(params)
    method = info.cls(params, context)
    upcast_trained(method.optimizer_parameters())
    backbone = getattr(params, "backbone", None)
    if getattr(backbone, "attn_implementation", None):
        set_attention(method, backbone.attn_implementation)
    return method


def set_attention(method: CIRMethod, implementation: str) -> None:
    """Every transformers model inside ``method`` computes attention with ``implementation``."""
    from transformers import PreTrainedModel

    for module in method.modules():
        if isinstance(module, PreTrainedModel):
            try:
                module.set_attn_implementation(implementation)
            except (ImportError, ValueError) as error:
                raise HarnessError(f"{type(module).__name__} cannot use {implementation}: {str(error).splitlines()[0]}",
                                   field="method.params.backbone.attn_implementation",
                                   fix="use sdpa or eager, or install what it names") from None


def build_run_method(config: Any, train_split: Any, progress: bool = False) -> CIRMethod:
    """The method of a run (a ``RunConfig``) as `harness run` builds it: seeded by the run's seed,
    told the image size, the training captions and the dataset's key (its warm starts' cache)."""
    import torch

    from harness.data.datasets import dataset_key
    from harness.data.synthetic.captions import template_corpus

    torch.manual_seed(config.seed)
    context = MethodContext(image_size=config.dataset.image_size,
                            corpus=[t.caption for t in train_split.triplets] + template_corpus(),
                            train_split=train_split, dataset_key=dataset_key(config.dataset), progress=progress)
    return build_method(config.method.name, config.method.params, context)
