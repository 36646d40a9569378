"""Where a result came from: git commit, package versions, hardware."""

from __future__ import annotations

import functools
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from harness.core.source import git_commit

PACKAGES = ("cir-harness", "torch", "transformers", "tokenizers", "numpy", "pillow", "pydantic", "mlflow",
            "safetensors", "peft", "scipy", "statsmodels")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


@functools.cache
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device | str = "cpu") -> dict[str, Any]:
    device = torch.device(device)
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
        "world_size": int(torch.distributed.get_world_size()) if torch.distributed.is_available()
        and torch.distributed.is_initialized() else 1,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    return {"git_commit": git_commit(), "packages": package_versions(), "hardware": hardware(device)}
