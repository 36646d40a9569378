"""One CIR-LVLM run from a tiny bf16 Qwen2.5-VL stand-in on the lent GPU (issue 15's device check).

    python3 benchmarks/device_lvlm_check.py --out $OUT          # called by benchmarks/device_bench.sh
    python3 benchmarks/device_lvlm_check.py --out /tmp/x --device cpu   # the script itself, here

Saves the stand-in the way the real checkpoint ships (bf16 weights, Qwen2Tokenizer), trains it
through the shared loop on the embedded benchmark three ways (plain; gradient checkpointing;
checkpointing + micro-batches), evaluates each on val, and writes lvlm_check.json: losses,
metrics, seconds, and on CUDA the peak memory the step allocated beside harness plan's
activation estimate for the same batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {"plain": {}, "checkpointing": {"gradient_checkpointing": True},
            "checkpointing+micro": {"gradient_checkpointing": True, "micro_batch_size": 8}}


def run(directory: Path, device: str, settings: dict, batch: int, steps: int) -> dict:
    from harness.data.datasets import load_dataset
    from harness.evaluation.evaluate import evaluate
    from harness.experiments.config import RunConfig, RunSpec
    from harness.measure.memory_estimate import estimate_run
    from harness.methods.registry import build_run_method
    from harness.training.loop import train

    config = RunConfig.model_validate({
        "experiment": "device_check", "dataset": {"name": "synthetic"},
        "method": {"name": "cir_lvlm", "params": {"backbone": {"source": "pretrained", "lvlm_dir": str(directory),
                                                               "lora_rank": 8}}},
        "train": {"max_steps": steps, "batch_size": batch, "checkpoint": False, **settings},
        "eval": {"device": device, "batch_size": 64}})
    train_split = load_dataset(config.dataset, "train", progress=False)
    val = load_dataset(config.dataset, "val", progress=False)
    estimate = estimate_run(RunSpec(config, {}, "device_check"), train_split, precision="bf16")
    method = build_run_method(config, train_split)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    summary = train(method, train_split, config.train, seed=0, device=device, progress=False)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - before) if device == "cuda" else None
    evaluation = evaluate(method, val, config.eval.resolved(config.dataset.name)[1], progress=False)
    return {"losses": summary.loss_per_epoch, "precision": summary.precision, "train_seconds": seconds,
            "metrics": {k: evaluation.metrics[k] for k in ("recall_at_1", "recall_subset_at_1", "avg")},
            "estimated_activation_bytes": estimate.activation_bytes,
            "estimated_total_bytes": estimate.total_bytes, "cuda_peak_step_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from tests import stand_ins

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        directory = stand_ins.save_qwen_vl(Path(temporary) / "qwen2.5-vl-bf16", "qwen2_5_vl", torch.bfloat16)
        report = {"device": torch.cuda.get_device_name() if args.device == "cuda" else args.device,
                  "torch": torch.__version__, "batch": args.batch, "steps": args.steps,
                  "runs": {name: run(directory, args.device, settings, args.batch, args.steps)
                           for name, settings in SETTINGS.items()}}
    (args.out / "lvlm_check.json").write_text(json.dumps(report, indent=2))
    for name, result in report["runs"].items():
        print(f"{name}: losses {result['losses']} {result['metrics']} {result['train_seconds']:.1f}s "
              f"peak {result['cuda_peak_step_bytes']} estimate {result['estimated_activation_bytes']:.0f}")


if __name__ == "__main__":
    main()
