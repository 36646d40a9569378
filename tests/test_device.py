"""Precision: what `auto` resolves to, and what the autocast regions compute in; how batches
reach the device."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from harness.core.device import (
    autocast,
    cpu_has_native_bf16,
    full_precision,
    resolve_precision,
    to_device,
    to_host,
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


def test_to_device_and_to_host_keep_values_on_cpu():
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(to_device(images, "cpu"), images) and to_device(images, "cpu").device.type == "cpu"
    assert torch.equal(to_host(images.float()), images.float())


def test_every_batch_reaches_the_device_through_to_device(tiny_benchmark: Path, monkeypatch):
    """The training loop and the evaluation copy each batch with to_device, which on a GPU
    stages it in pinned memory and copies it without a stream sync (a plain .to(device) from
    pageable memory would make the host wait for the GPU at every step)."""
    import harness.evaluation.evaluate as evaluate_module
    import harness.training.loop as train_module
    from harness.data.cirr import load_cirr_split
    from harness.evaluation.evaluate import evaluate
    from harness.evaluation.protocol import EvalConfig
    from harness.methods.base import MethodContext
    from harness.methods.registry import build_method
    from harness.training.loop import TrainConfig, train

    shapes: list[tuple[int, ...]] = []

    def recording(tensor: torch.Tensor, device) -> torch.Tensor:
        shapes.append(tuple(tensor.shape))
        return tensor.to(device)

    monkeypatch.setattr(train_module, "to_device", recording)
    monkeypatch.setattr(evaluate_module, "to_device", recording)
    split, val = load_cirr_split(tiny_benchmark, "train"), load_cirr_split(tiny_benchmark, "val")
    torch.manual_seed(0)
    context = MethodContext(64, [t.caption for t in split.triplets], train_split=split, dataset_key="device-test")
    method = build_method("image_only", {"start": "scratch", "vision_hidden": 32, "vision_heads": 2}, context)
    train(method, split, TrainConfig(max_steps=2, batch_size=16, checkpoint=False, precision="fp32"), seed=0,
          progress=False)
    assert shapes == [(16, 3, 64, 64)] * 4  # reference and target images of each of the 2 steps
    shapes.clear()
    evaluate(method, val, EvalConfig(batch_size=32, warmup_batches=0, latency_queries=0, diagnostic_queries=0,
                                     examples=0, embedding_cache=False, precision="fp32"), progress=False)
    batches = math.ceil(len(val.gallery) / 32) + math.ceil(len(val.triplets) / 32)
    assert len(shapes) == batches and all(shape[1:] == (3, 64, 64) for shape in shapes)


def test_an_emulated_avx2_machine_resolves_auto_to_fp32_as_a_real_one(monkeypatch):
    """Under ATEN_CPU_CAPABILITY=avx2 / ONEDNN_MAX_CPU_ISA=AVX2 (docs/scaling.md: timing the main job as on an AVX2
    CPU) precision auto picks fp32, as it does on the AVX2 CPU the machine stands in for."""
    import torch

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True}, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    cpu_has_native_bf16.cache_clear()
    try:
        assert cpu_has_native_bf16()  # the AVX512-BF16 machine itself
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
        cpu_has_native_bf16.cache_clear()
        assert not cpu_has_native_bf16() and resolve_precision("auto", "cpu") == "fp32"
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
        cpu_has_native_bf16.cache_clear()
        assert not cpu_has_native_bf16()
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16()
    finally:
        monkeypatch.undo()
        cpu_has_native_bf16.cache_clear()
