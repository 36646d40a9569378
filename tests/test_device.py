"""Precision: what `auto` resolves to, and what the autocast regions compute in."""

from __future__ import annotations

import torch

from harness.device import (
    autocast,
    cpu_has_native_bf16,
    full_precision,
    resolve_precision,
)


def test_precision_settings_resolve():
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")


def test_bf16_region_multiplies_in_bf16_and_full_precision_region_in_float32():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
        with full_precision("cpu"):
            assert (a @ b).dtype == torch.float32
        q = torch.randn(2, 2, 5, 4)
        out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        assert out.dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the region
