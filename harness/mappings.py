"""Nested mappings as dotted keys: {"a": {"b": 1}} -> {"a.b": 1} (configs, mlflow params, reports)."""

from __future__ import annotations

from typing import Any


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value; an empty mapping is kept as a leaf."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
