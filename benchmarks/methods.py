"""Speed and size of each method on this machine: train steps/s, encoder latency (ms/query,
p50 and p95, at batch 1 and at the eval batch size, after warm-up), queries/s, parameters.
A measurement script, not a test. Weights do not change speed, so CIR-LVLM is measured
without its stage-0 warm start and the dual-encoder methods start from an untrained stage-0
CLIP of the default size (0 stage-0 steps; SEARLE's OTI cut to one step on 64 images: only
phi's training step is timed). CLIP4Cir's train step is its stage 1 (encoders + sum), its
latency that of stage 2 (Combiner). Pic2Word and SEARLE train on image batches.

    .venv/bin/python benchmarks/methods.py [--methods cir_lvlm sum] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.data.cirr import load_cirr_split
from harness.data.synthetic.generate import SyntheticConfig, write_benchmark
from harness.environment import environment
from harness.methods.base import ImageBatch, MethodContext, TripletBatch
from harness.registry import build_method

#: CIR-LVLM as in the main job (vision tower frozen after its warm start), minus stage 0 itself;
#: the dual-encoder methods on an untrained default-size stage-0 CLIP.
UNTRAINED_CLIP = {"stage0": {"vision_steps": 0, "caption_steps": 0}}
PARAMS = {"cir_lvlm": {"stage0": {"enabled": False}, "backbone": {"freeze_vision": True}},
          "image_only": UNTRAINED_CLIP, "text_only": UNTRAINED_CLIP, "sum": UNTRAINED_CLIP, "clip4cir": UNTRAINED_CLIP,
          "pic2word": UNTRAINED_CLIP, "searle": {**UNTRAINED_CLIP, "oti_images": 64, "oti_steps": 1}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_calls(call, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+",
                        default=["image_only", "text_only", "sum", "clip4cir", "pic2word", "searle", "cir_lvlm"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="training batch")
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, object] = {"environment": environment("cpu"), "threads": args.threads, "methods": {}}
    with tempfile.TemporaryDirectory() as folder:
        os.environ["CIR_HARNESS_CACHE"] = str(Path(folder) / "cache")  # stage-0 stand-ins stay out of the user's cache
        root = write_benchmark(SyntheticConfig(num_train=1000, num_val=300, num_test=10), Path(folder) / "bench", progress=False)
        split = load_cirr_split(root, "train")
        triplets = split.triplets[: max(args.batch_size, args.eval_batch_size)]
        references = split.images.load([t.reference for t in triplets])
        targets = split.images.load([t.target for t in triplets])
        captions = [t.caption for t in triplets]
        context = MethodContext(64, [t.caption for t in split.triplets], train_split=split, dataset_key="bench")
        print(f"{'method':10s} {'params':>9s} {'trainable':>9s} {'train step/s':>12s} {'b1 p50 ms':>9s} {'b1 p95 ms':>9s} "
              f"{'b' + str(args.eval_batch_size) + ' ms/q':>10s} {'queries/s':>9s}")
        for name in args.methods:
            torch.manual_seed(0)
            method = build_method(name, PARAMS.get(name, {}), context)
            optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
            batch: TripletBatch | ImageBatch = TripletBatch(references[: args.batch_size], captions[: args.batch_size],
                                                            targets[: args.batch_size])
            if method.training_data == "images":
                names = method.training_images(split)[: args.batch_size]
                batch = ImageBatch(split.images.load(names), names)
            method.begin_step(0, 2)  # CLIP4Cir: stage 1

            def step() -> None:
                loss = method.loss(batch)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

            method.train()
            train_s = time_calls(step, warmup=3, repeats=20)
            method.begin_step(1, 2)  # CLIP4Cir: stage 2, queries through the Combiner
            method.eval()
            with torch.inference_mode():
                single = time_calls(lambda: method.encode_query(references[:1], captions[:1]), warmup=5, repeats=50)
                n = args.eval_batch_size
                batched = time_calls(lambda: method.encode_query(references[:n], captions[:n]), warmup=2, repeats=5)
            counts = method.parameter_counts()
            row = {
                "parameters": counts,
                "train_steps_per_s": 1 / statistics.mean(train_s),
                "batch1_ms_p50": 1000 * percentile(single, 0.5),
                "batch1_ms_p95": 1000 * percentile(single, 0.95),
                "eval_batch_ms_per_query_p50": 1000 * percentile(batched, 0.5) / n,
                "eval_batch_ms_per_query_p95": 1000 * percentile(batched, 0.95) / n,
            }
            row["queries_per_s"] = 1000 / row["eval_batch_ms_per_query_p50"]
            report["methods"][name] = row  # type: ignore[index]
            print(f"{name:10s} {counts['total'] / 1e6:8.2f}M {counts['trainable'] / 1e6:8.2f}M {row['train_steps_per_s']:12.1f} "
                  f"{row['batch1_ms_p50']:9.2f} {row['batch1_ms_p95']:9.2f} {row['eval_batch_ms_per_query_p50']:10.3f} "
                  f"{row['queries_per_s']:9.0f}")
    hardware = report["environment"]["hardware"]  # type: ignore[index]
    print(f"machine: {hardware['cpu']}, {hardware['cpu_cores']} cores, {args.threads} torch threads, torch {torch.__version__}, float32")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
