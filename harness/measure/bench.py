"""`harness bench`: what each method costs on this machine, measured as timm measures it, and
how retrieval scales.

    report = run_bench(BenchConfig(methods=["cir_lvlm", "sum"]), progress=True)
    write_bench(report, Path("reports/bench"))   # reports/bench/<hardware>-<precision>.json and .md

Per method: ms/query p50 / p95 at batch 1 and at the eval batch size after warm-up (with
``torch.cuda.synchronize()`` on a GPU), queries/s, parameters, FLOPs per query
(torch.utils.flop_counter), peak memory, model FLOP utilisation against this machine's dense
matmul peak measured in the same run, and two loop efficiencies: the full evaluation loop
(image files read and decoded, encoded, scored) against the bare encoders on preloaded
tensors, and the shared training loop (data loading included) against bare steps on the
loop's own batches, preloaded (the same batches, so the ratio compares the loop and not the
caption lengths of two batch draws). Weights do not change speed, so methods are built
without their stage-0 warm start (CIR-LVLM) or from an untrained stage-0 CLIP (dual-encoder
methods; SPRC with an untrained Q-Former too).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from harness.core.device import autocast, resolve_device, resolve_precision
from harness.core.environment import cpu_model
from harness.core.files import atomic_write_text
from harness.evaluation.evaluate import evaluate, peak_memory_mb, reset_peak_memory
from harness.evaluation.protocol import EvalConfig

ALL_METHODS = ("image_only", "text_only", "sum", "clip4cir", "pic2word", "searle", "sprc", "cir_lvlm")
UNTRAINED_CLIP = {"stage0": {"vision_steps": 0, "caption_steps": 0}}
#: Build parameters: speed only (see the module docstring).
BENCH_PARAMS: dict[str, dict[str, Any]] = {
    "cir_lvlm": {"stage0": {"enabled": False}, "backbone": {"freeze_vision": True}},
    "image_only": UNTRAINED_CLIP, "text_only": UNTRAINED_CLIP, "sum": UNTRAINED_CLIP, "clip4cir": UNTRAINED_CLIP,
    "pic2word": UNTRAINED_CLIP, "searle": {**UNTRAINED_CLIP, "oti_images": 64, "oti_steps": 1},
    "sprc": {**UNTRAINED_CLIP, "qformer_pretraining": {"steps": 0}},
}


@dataclass
class BenchConfig:
    methods: list[str] = field(default_factory=lambda: list(ALL_METHODS))
    eval_batch_size: int = 256
    train_batch_size: int = 64
    batch1_repeats: int = 50
    batch_repeats: int = 5
    train_steps: int = 20
    loop_repeats: int = 3  # loop and bare timed alternately this many times; the fastest of each counts
    num_val: int = 300  # evaluation queries of the generated benchmark (gallery: 9 per query)
    num_train: int = 1000
    retrieval: bool = False
    retrieval_sizes: list[int] = field(default_factory=lambda: [1_000, 10_000, 100_000, 1_000_000])
    retrieval_queries: int = 1000
    retrieval_dim: int = 256
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"  # as train.precision / eval.precision

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """Seconds, not minutes: two small methods, few repeats, a tiny benchmark, small galleries."""
        values: dict[str, Any] = {"methods": ["image_only", "sum"], "eval_batch_size": 32, "train_batch_size": 16,
                                  "batch1_repeats": 5, "batch_repeats": 2, "train_steps": 3, "loop_repeats": 1,
                                  "num_val": 32,
                                  "num_train": 64, "retrieval_sizes": [1_000, 5_000], "retrieval_queries": 100}
        return cls(**(values | overrides))


def hardware_name(device: torch.device) -> str:
    """A file-name-safe name of the hardware: the GPU, or the CPU model, core count and the
    instruction set torch's kernels use (an AVX2-only EPYC and an AVX-512 one share a model name,
    and differ 2-3x in speed)."""
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"{cpu_model()}-{os.cpu_count()}core-{torch.backends.cpu.get_cpu_capability()}")
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-").lower()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[], Any], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls after ``warmup`` untimed ones (device synchronised)."""
    for _ in range(warmup):
        call()
    _sync(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def percentile(values: list[float], q: float) -> float:
    return float(torch.tensor(values, dtype=torch.float64).quantile(q))


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """Dense matmul FLOP/s of this machine (best of 10 timed [size x size] products)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = time_calls(lambda: a @ b, device, warmup=3, repeats=10)
    return 2 * size**3 / min(seconds)


def count_flops(call: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def full_evaluation(method, root: Path, image_size: int, batch_size: int, precision: str,
                    device: torch.device) -> float:
    """Seconds of one full evaluation loop on a freshly loaded split: files read (from the
    decoded-image cache an earlier load wrote) and decoded, encoded, scored, ranked."""
    from harness.data.datasets import DatasetConfig, load_dataset

    fresh = load_dataset(DatasetConfig(name="cirr", root=str(root), image_size=image_size), "val", False)
    start = time.perf_counter()
    evaluate(method, fresh, EvalConfig(batch_size=batch_size, warmup_batches=0, latency_queries=0,
                                       diagnostic_queries=0, examples=0, embedding_cache=False,
                                       precision=precision), device, progress=False)  # type: ignore[arg-type]
    _sync(device)
    return time.perf_counter() - start


def bench_method(name: str, config: BenchConfig, split, eval_split, root: Path, device: torch.device,
                 peak_flops: dict[str, float]) -> dict[str, Any]:
    """Every figure of one method (see the module docstring)."""
    from harness.methods.base import MethodContext
    from harness.methods.registry import build_method

    torch.manual_seed(0)
    context = MethodContext(split.images.image_size, [t.caption for t in split.triplets], train_split=split,
                            dataset_key="bench")
    method = build_method(name, BENCH_PARAMS.get(name, {}), context).to(device)
    precision = resolve_precision(config.precision, device)  # type: ignore[arg-type]
    latency = _latency(method, config, eval_split, device, precision)
    evaluation = _evaluation_loop(method, config, split, eval_split, root, device, precision)
    training = _training_loop(method, config, split, root, device, precision)
    queries_per_s = 1000 / latency["ms_per_query_eval_batch_p50"]
    return {"parameters": method.parameter_counts(), **latency, "queries_per_s": queries_per_s,
            "model_flop_utilisation": latency["flops_per_query"] * queries_per_s / peak_flops[precision],
            **evaluation, **training}


def _latency(method, config: BenchConfig, eval_split, device: torch.device, precision: str) -> dict[str, Any]:
    """Query latency at batch 1 and at the evaluation batch, peak memory, and FLOPs per query."""
    n = config.eval_batch_size
    triplets = eval_split.triplets[:n]
    references = eval_split.images.load([t.reference for t in triplets]).to(device)
    captions = [method.query_text(t) for t in triplets]
    method.begin_step(1, 2)  # CLIP4Cir: stage 2, queries through the Combiner
    method.eval()
    with torch.inference_mode(), autocast(device, precision):
        window = reset_peak_memory(device)
        single = time_calls(lambda: method.encode_query(references[:1], captions[:1]), device, 5, config.batch1_repeats)
        batched = time_calls(lambda: method.encode_query(references[:n], captions[:n]), device, 2, config.batch_repeats)
        peak, peak_kind = peak_memory_mb(device, window)
    # FLOPs outside inference mode: the counter's module hooks need autograd-visible tensors
    with autocast(device, precision):
        flops = count_flops(lambda: method.encode_query(references[:1], captions[:1]))
    return {"ms_per_query_batch1_p50": 1000 * percentile(single, 0.5),
            "ms_per_query_batch1_p95": 1000 * percentile(single, 0.95),
            "ms_per_query_eval_batch_p50": 1000 * percentile(batched, 0.5) / n,
            "ms_per_query_eval_batch_p95": 1000 * percentile(batched, 0.95) / n,
            "flops_per_query": flops, "peak_memory_mb": peak, "peak_memory": peak_kind}


def _evaluation_loop(method, config: BenchConfig, split, eval_split, root: Path, device: torch.device,
                     precision: str) -> dict[str, float]:
    """The bare encoders on preloaded tensors (one evaluation's gallery and queries) against the
    whole evaluation loop, interleaved so that a slow moment of the machine hits both sides."""
    n = config.eval_batch_size
    with torch.inference_mode(), autocast(device, precision):
        gallery = eval_split.images.load(eval_split.gallery).to(device)
        references = eval_split.images.load([t.reference for t in eval_split.triplets]).to(device)
        captions = [method.query_text(t) for t in eval_split.triplets]

        def bare_evaluation() -> None:
            for lo in range(0, len(gallery), n):
                method.encode_target(gallery[lo : lo + n])
            for lo in range(0, len(references), n):
                method.encode_query(references[lo : lo + n], captions[lo : lo + n])

        bare_evaluation()  # warm-up
    bare_s = full_s = math.inf
    for _ in range(config.loop_repeats):
        with torch.inference_mode(), autocast(device, precision):
            bare_s = min(bare_s, time_calls(bare_evaluation, device, 0, 1)[0])
        full_s = min(full_s, full_evaluation(method, root, split.images.image_size, n, precision, device))
    return {"eval_loop_efficiency": bare_s / full_s, "eval_loop_s": full_s, "eval_bare_s": bare_s}


def _training_loop(method, config: BenchConfig, split, root: Path, device: torch.device,
                   precision: str) -> dict[str, float]:
    """Bare optimizer steps on the loop's own batches, preloaded, against the shared loop over the
    same batches (interleaved); the loop's one-off set-up is reported on its own."""
    from harness.data.datasets import DatasetConfig, load_dataset
    from harness.training.loop import TrainConfig, batch_rows, train, training_source

    train_config = TrainConfig(max_steps=config.train_steps, batch_size=config.train_batch_size, checkpoint=False,
                               precision=precision)

    def fresh_train():
        return load_dataset(DatasetConfig(name="cirr", root=str(root), image_size=split.images.image_size), "train",
                            False)

    source = training_source(method, fresh_train(), train_config)
    batches = [source.batch(rows, device) for rows in batch_rows(len(source), train_config, 0, config.train_steps)]
    optimizer = torch.optim.AdamW(method.optimizer_parameters(), lr=1e-5)
    method.train()
    method.begin_step(0, 2)

    def step(batch: Any) -> None:
        with autocast(device, precision):
            loss = method.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):  # warm-up, for the loop below too
        step(batches[0])
    loop_s = bare_s = math.inf
    for _ in range(config.loop_repeats):
        start = time.perf_counter()
        summary = train(method, fresh_train(), train_config, seed=0, device=device, progress=False)
        # the loop's steps (batches gathered, clipped, scheduled, logged) apart from its one-off set-up
        # (the training images loaded once per run, the optimizer built), which is reported on its own
        loop_s = min(loop_s, summary.seconds / max(1, summary.steps))
        setup_s = time.perf_counter() - start - summary.seconds
        method.train()
        _sync(device)
        start = time.perf_counter()
        for index, batch in enumerate(batches):
            method.begin_step(index, len(batches))  # as the loop (CLIP4Cir's stage 2 starts halfway)
            step(batch)
        _sync(device)
        bare_s = min(bare_s, (time.perf_counter() - start) / len(batches))
    return {"train_loop_efficiency": bare_s / loop_s, "train_loop_s_per_step": loop_s, "train_setup_s": setup_s,
            "train_bare_s_per_step": bare_s}


def bench_embedding_cache(split, root: Path, config: BenchConfig, device: torch.device,
                          method_name: str = "pic2word") -> dict[str, Any]:
    """Two evaluations of a frozen-target-encoder method with the same cache key, each on a
    freshly loaded split (images decoded again): seconds of the gallery phase and of the whole
    evaluation, first (encoded, written) and second (read from the cache)."""
    from harness.data.datasets import DatasetConfig, load_dataset
    from harness.methods.base import MethodContext
    from harness.methods.registry import build_method

    torch.manual_seed(0)
    context = MethodContext(split.images.image_size, [t.caption for t in split.triplets], train_split=split,
                            dataset_key="bench")
    method = build_method(method_name, BENCH_PARAMS.get(method_name, {}), context).to(device)
    eval_config = EvalConfig(batch_size=config.eval_batch_size, warmup_batches=1, latency_queries=0,
                             diagnostic_queries=0, examples=0, precision=config.precision)  # type: ignore[arg-type]
    row: dict[str, Any] = {"method": method_name}
    for attempt in ("first", "second"):
        fresh = load_dataset(DatasetConfig(name="cirr", root=str(root), image_size=split.images.image_size), "val",
                             False)
        start = time.perf_counter()
        evaluation = evaluate(method, fresh, eval_config, device, progress=False)
        row[f"{attempt}_s"] = time.perf_counter() - start
        row[f"{attempt}_gallery_s"] = evaluation.timings["gallery_encode_s"]
        row[f"{attempt}_from_cache"] = bool(evaluation.timings["gallery_from_cache"])
        row["gallery"] = evaluation.num_gallery
    row["second_over_first"] = row["second_s"] / row["first_s"]
    row["gallery_second_over_first"] = row["second_gallery_s"] / row["first_gallery_s"]
    return row


def bench_retrieval(config: BenchConfig, progress: bool) -> list[dict[str, Any]]:
    """Exact top-50 of ``retrieval_queries`` random unit queries over galleries of each size:
    seconds and peak memory of the blockwise torch path and of faiss, and their ratio."""
    from harness.evaluation.retrieval import faiss_available, top_k_faiss, top_k_torch

    rows = []
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(config.retrieval_queries, config.retrieval_dim,
                                                        generator=generator), dim=1)
    for size in tqdm(config.retrieval_sizes, desc="retrieval", disable=not progress, leave=False):
        gallery = torch.nn.functional.normalize(torch.randn(size, config.retrieval_dim, generator=generator), dim=1)
        row: dict[str, Any] = {"gallery": size, "queries": config.retrieval_queries, "dim": config.retrieval_dim}
        cpu = torch.device("cpu")
        window = reset_peak_memory(cpu)
        base = peak_memory_mb(cpu, window)[0]
        seconds = time_calls(lambda: top_k_torch(queries, gallery, 50), cpu, 1, 3)
        row["torch_s"] = min(seconds)
        row["torch_peak_extra_mb"] = peak_memory_mb(cpu, window)[0] - base
        if faiss_available():
            window = reset_peak_memory(cpu)
            base = peak_memory_mb(cpu, window)[0]
            row["faiss_s"] = min(time_calls(lambda: top_k_faiss(queries, gallery, 50), cpu, 1, 3))
            row["faiss_peak_extra_mb"] = peak_memory_mb(cpu, window)[0] - base
            row["torch_speed_vs_faiss"] = row["faiss_s"] / row["torch_s"]
            _, a = top_k_torch(queries[:50], gallery, 50)
            _, b = top_k_faiss(queries[:50], gallery, 50)
            row["same_top50"] = bool(torch.equal(a, b))
        rows.append(row)
    return rows


def run_bench(config: BenchConfig, progress: bool = True, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every method of ``config`` (and retrieval, when asked); return the report."""
    from harness.data.cirr import load_cirr_split
    from harness.data.synthetic.generate import SyntheticConfig, write_benchmark
    from harness.methods.registry import get_method

    for name in config.methods:
        get_method(name)  # an unknown name fails before anything is measured
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)  # type: ignore[arg-type]
    report: dict[str, Any] = {
        "hardware": hardware_name(device),
        "cpu": cpu_model(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "python": platform.python_version(), "precision": precision,
        "dtype": "bfloat16 autocast" if precision == "bf16" else "float32", "config": config.__dict__, "methods": {},
    }
    peaks = {"fp32": matmul_peak(device)}
    if precision == "bf16":
        peaks["bf16"] = matmul_peak(device, torch.bfloat16)
    report["matmul_peak_flops"] = peaks[precision]  # MFU is against the peak of the precision the models run in
    report["matmul_peak_flops_by_dtype"] = peaks
    echo(f"{report['hardware']}: dense matmul peak {report['matmul_peak_flops'] / 1e9:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as folder:
        previous = os.environ.get("CIR_HARNESS_CACHE")
        os.environ["CIR_HARNESS_CACHE"] = str(Path(folder) / "cache")  # stand-in backbones stay out of the user's cache
        try:
            root = write_benchmark(SyntheticConfig(num_train=config.num_train, num_val=config.num_val, num_test=8),
                                   Path(folder) / "bench", progress=False)
            split, eval_split = load_cirr_split(root, "train"), load_cirr_split(root, "val")
            report["embedding_cache"] = bench_embedding_cache(split, root, config, device)
            cache = report["embedding_cache"]
            echo(f"embedding cache ({cache['method']}): evaluation {cache['first_s']:.2f} s -> {cache['second_s']:.2f} "
                 f"s, gallery phase {cache['first_gallery_s']:.2f} s -> {cache['second_gallery_s']:.3f} s")
            for name in tqdm(config.methods, desc="methods", disable=not progress, leave=False):
                row = bench_method(name, config, split, eval_split, root, device, peaks)
                report["methods"][name] = row
                echo(f"{name:10s} b1 {row['ms_per_query_batch1_p50']:.2f} ms  batch "
                     f"{row['ms_per_query_eval_batch_p50']:.3f} ms/q  MFU {100 * row['model_flop_utilisation']:.1f}%  "
                     f"loop eff. eval {row['eval_loop_efficiency']:.2f} train {row['train_loop_efficiency']:.2f}")
        finally:
            if previous is None:
                os.environ.pop("CIR_HARNESS_CACHE", None)
            else:
                os.environ["CIR_HARNESS_CACHE"] = previous
    if config.retrieval:
        report["retrieval"] = bench_retrieval(config, progress)
    return report


def markdown(report: dict[str, Any]) -> str:
    machine = report["gpu"] or f"{report['cpu']}, {report['cpu_cores']} cores, {report['torch_threads']} torch threads"
    lines = [f"# harness bench: {report['hardware']}", "",
             f"{machine}; torch {report['torch']}, {report['dtype']}; dense matmul peak "
             f"{report['matmul_peak_flops'] / 1e9:.1f} GFLOP/s (measured in this run). Eval batch "
             f"{report['config']['eval_batch_size']}, train batch {report['config']['train_batch_size']}.", "",
             "| method | params | trainable | ms/q b1 p50 | p95 | ms/q batch p50 | p95 | queries/s | MFLOP/query | MFU "
             "| peak MiB | eval loop eff. | train loop eff. | train set-up s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in report["methods"].items():
        lines.append(
            f"| {name} | {row['parameters']['total'] / 1e6:.2f}M | {row['parameters']['trainable'] / 1e6:.2f}M | "
            f"{row['ms_per_query_batch1_p50']:.2f} | {row['ms_per_query_batch1_p95']:.2f} | "
            f"{row['ms_per_query_eval_batch_p50']:.3f} | {row['ms_per_query_eval_batch_p95']:.3f} | "
            f"{row['queries_per_s']:.0f} | {row['flops_per_query'] / 1e6:.1f} | "
            f"{100 * row['model_flop_utilisation']:.1f}% | {row['peak_memory_mb']:.0f} | "
            f"{row['eval_loop_efficiency']:.2f} | {row['train_loop_efficiency']:.2f} | "
            f"{row.get('train_setup_s', float('nan')):.2f} |")
    lines += ["", "Loop efficiency: the full loop's speed over the bare model's. Evaluation: encoding the gallery and "
              "the queries from preloaded tensors, against `evaluate` on a freshly loaded split (its images read from "
              "the decoded-image cache an earlier evaluation of the benchmark wrote), encoding, scoring and ranking. "
              "Training: optimiser steps on the loop's own batches, preloaded, against the steps of the shared loop "
              "over the same batches (the batch gathered from the run's loaded training images, gradients clipped, the "
              "schedule stepped, the loss read back). The loop's one-off set-up, loading the training images once per "
              "run (the first method measured decodes them and fills the decoded-image cache, the later ones read it) "
              "and building the optimizer, is the set-up column (its last run). Each loop and its bare counterpart "
              f"are timed alternately {report['config'].get('loop_repeats', 1)} time(s) and the fastest "
              "of each counts, so that a slow moment of the machine does not fall on one side only. MFU = FLOPs per "
              "query x queries/s at the eval batch / the matmul peak. Peak MiB: the process's peak resident memory "
              "while the method's latency was measured (data and models included)."]
    if report.get("embedding_cache"):
        cache = report["embedding_cache"]
        lines += ["", "## Embedding cache", "",
                  "| method | gallery | 1st evaluation s | 2nd evaluation s | 2nd / 1st | 1st gallery phase s | "
                  "2nd gallery phase s | 2nd / 1st |", "|---|---|---|---|---|---|---|---|",
                  f"| {cache['method']} | {cache['gallery']} | {cache['first_s']:.2f} | {cache['second_s']:.2f} | "
                  f"{cache['second_over_first']:.2f} | {cache['first_gallery_s']:.3f} | "
                  f"{cache['second_gallery_s']:.3f} | {cache['gallery_second_over_first']:.3f} |", "",
                  "Two evaluations of a method whose target encoder is frozen, each on a freshly loaded split (image "
                  "files decoded again both times): the first encodes the gallery and writes its embeddings, the "
                  "second reads them (the key: encoder weights and buffers, image size, dataset, device type). Queries "
                  "are encoded both times."]
    if report.get("retrieval"):
        lines += ["", "## Retrieval: exact top-50 by inner product", "",
                  "| gallery | queries | dim | torch blockwise s | faiss s | torch speed / faiss | extra peak MiB "
                  "torch | extra peak MiB faiss | same top-50 |", "|---|---|---|---|---|---|---|---|---|"]
        for row in report["retrieval"]:
            lines.append(f"| {row['gallery']:,} | {row['queries']} | {row['dim']} | {row['torch_s']:.3f} | "
                         f"{row.get('faiss_s', float('nan')):.3f} | "
                         f"{row.get('torch_speed_vs_faiss', float('nan')):.2f} | {row['torch_peak_extra_mb']:.0f} | "
                         f"{row.get('faiss_peak_extra_mb', float('nan')):.0f} | {row.get('same_top50', '-')} |")
        lines += ["", "Extra peak MiB: the rise of the process's peak resident memory during the search (the gallery "
                  "itself is held before). `harness.evaluation.retrieval.top_k` takes faiss for galleries of 10k and "
                  "more when it is installed."]
    return "\n".join(lines) + "\n"


def write_bench(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``out``/<hardware>-<precision>.json and .md (e.g. amd-epyc-2core-avx2-fp32.md), written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{report['hardware']}-{report.get('precision', 'fp32')}"
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    atomic_write_text(json_path, json.dumps(report, indent=2, default=str))
    atomic_write_text(md_path, markdown(report))
    return json_path, md_path
