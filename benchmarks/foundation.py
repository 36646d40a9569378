"""Speed of the foundation on this machine: benchmark generation, training steps/s and
evaluation queries/s of the reference methods. A measurement script, not a test.

    .venv/bin/python benchmarks/foundation.py [--size default] [--steps 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.cli import SIZES
from harness.core.environment import environment
from harness.data.cirr import load_cirr_split
from harness.data.synthetic.generate import SyntheticConfig, write_benchmark
from harness.evaluation.evaluate import evaluate
from harness.evaluation.protocol import EvalConfig
from harness.methods.base import MethodContext
from harness.methods.registry import build_method
from harness.training.loop import TrainConfig, seed_everything, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="default", choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=100, help="timed training steps per method")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train_n, val_n, test_n = SIZES[args.size]
    config = SyntheticConfig(num_train=train_n, num_val=val_n, num_test=test_n)
    report: dict[str, object] = {"environment": environment("cpu"), "size": args.size}
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "synthetic"
        start = time.perf_counter()
        write_benchmark(config, root, progress=False)
        report["generation_s"] = time.perf_counter() - start
        counts = json.loads((root / "synthetic.json").read_text())["counts"]
        images = sum(counts[s]["images"] for s in ("train", "val", "test1"))
        print(f"generation ({args.size}: {train_n}/{val_n}/{test_n} queries, {images} images): "
              f"{report['generation_s']:.1f} s")
        start = time.perf_counter()
        train_split = load_cirr_split(root, "train")
        val_split = load_cirr_split(root, "val")
        train_split.images.load([t.reference for t in train_split.triplets] + [t.target for t in train_split.triplets])
        val_split.images.load(val_split.gallery)
        report["decode_s"] = time.perf_counter() - start
        print(f"decoding train + val images: {report['decode_s']:.1f} s")
        corpus = [t.caption for t in train_split.triplets]
        methods = {}
        for name in ("image_only", "text_only", "sum"):
            seed_everything(0)
            method = build_method(name, {}, MethodContext(64, corpus))
            warm = train(method, train_split, TrainConfig(epochs=1, max_steps=5, checkpoint=False), 0, progress=False)
            timed = train(method, train_split, TrainConfig(epochs=1, max_steps=args.steps, checkpoint=False), 0,
                          progress=False)
            evaluation = evaluate(method, val_split, EvalConfig(), progress=False)
            encode_s = evaluation.timings["gallery_encode_s"] + evaluation.timings["query_encode_s"]
            total_s = encode_s + evaluation.timings["scoring_s"]
            methods[name] = {
                "train_steps_per_s": timed.steps_per_second,
                "eval_queries_per_s": evaluation.num_queries / total_s,
                "eval_total_s": total_s,
                "gallery_images": evaluation.num_gallery,
                **{k: v for k, v in evaluation.timings.items() if k.endswith("per_query") or k.endswith("per_image")},
            }
            del warm
            print(f"{name:10s} train {timed.steps_per_second:5.1f} steps/s (batch 64) | eval "
                  f"{methods[name]['eval_queries_per_s']:7.1f} queries/s ({evaluation.num_queries} queries x "
                  f"{evaluation.num_gallery} gallery, gallery encoding included)")
        report["methods"] = methods
    hardware = report["environment"]["hardware"]  # type: ignore[index]
    print(f"machine: {hardware['cpu']}, {hardware['cpu_cores']} cores, {args.threads} torch threads, torch "
          f"{torch.__version__}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
