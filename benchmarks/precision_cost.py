"""What `precision: fp32` (the portable choice) costs against bf16 autocast on this machine:
seconds per training step and per evaluated query of the main job's runs. A measurement
script, not a test.

    .venv/bin/python benchmarks/precision_cost.py [--steps 40] [--queries 500] [--json out.json]

Each method of ablations/pool_size.yaml (sum, CIR-LVLM N=10) is built from the cached stage 0,
trained for ``--steps`` steps and evaluated on ``--queries`` val queries (gallery included) under
each precision, one torch thread (as each `--jobs 2` run of the main job has).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from harness.core.device import resolve_precision
from harness.core.environment import cpu_model
from harness.evaluation.evaluate import evaluate
from harness.experiments.executor import SplitCache, image_resize, plan_experiment
from harness.methods.registry import build_run_method
from harness.training.loop import seed_everything, train

REPO = Path(__file__).resolve().parents[1]


def measure(spec, splits: SplitCache, precision: str, steps: int, queries: int) -> dict[str, float]:
    config = spec.config
    resize = image_resize(config)
    train_split = splits.get(config.dataset, config.dataset.train_split, resize)
    eval_split = splits.get(config.dataset, config.dataset.eval_split, resize)
    seed_everything(config.seed)
    method = build_run_method(config, train_split, False)
    summary = train(method, train_split, config.train.model_copy(update={"max_steps": steps, "precision": precision,
                                                                         "checkpoint": False}),
                    config.seed, None, "cpu", progress=False)
    _, eval_config = config.eval.resolved(config.dataset.name)
    eval_config = eval_config.model_copy(update={"precision": precision, "max_queries": queries, "latency_queries": 0,
                                                 "diagnostic_queries": 0, "examples": 0})
    start = time.perf_counter()
    evaluation = evaluate(method, eval_split, eval_config, torch.device("cpu"), progress=False)
    return {"s_per_step": summary.seconds / max(1, summary.steps), "eval_s": time.perf_counter() - start,
            "recall_at_1": evaluation.metrics["recall_at_1"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    plan = plan_experiment(REPO / "ablations" / "pool_size.yaml")
    wanted = {"sum": None, "cir_lvlm(pool_size=10)": None}
    specs = [next(s for s in plan.specs if s.label == label and s.config.seed == 0) for label in wanted]
    splits = SplitCache(False)
    rows = {}
    for spec in specs:
        for precision in ("bf16", "fp32"):
            rows[f"{spec.label} {precision}"] = measure(spec, splits, precision, args.steps, args.queries)
            print(f"{spec.label:24s} {precision}: {rows[f'{spec.label} {precision}']}", flush=True)
    out = {"cpu": cpu_model(), "threads": 1, "bf16_native": resolve_precision("auto", "cpu") == "bf16",
           "steps": args.steps, "queries": args.queries, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
