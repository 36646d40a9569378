"""Evaluate a trained method and write what a run folder holds: rankings.jsonl.gz and result.json.

    result = evaluate_and_record(run_dir, config, run_id, label, method, eval_split, train_summary, device)

Shared by `harness run` (right after training) and `harness eval` (a finished run's checkpoint
on another split), so both folders have one layout and one result schema; ``write_run_config``
writes the config.yaml beside them.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import torch

from harness.core import distributed
from harness.core.environment import environment
from harness.core.files import atomic_write_text
from harness.data.triplet import CIRSplit
from harness.evaluation.evaluate import evaluate
from harness.evaluation.protocol import ProtocolRecord
from harness.evaluation.results import RunResult, write_rankings, write_result
from harness.experiments.config import RunConfig
from harness.methods.base import CIRMethod


def write_run_config(run_dir: Path, config: RunConfig) -> None:
    """<run_dir>/config.yaml: the resolved config a run (or an evaluation) was made with."""
    import yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def evaluate_and_record(run_dir: Path, config: RunConfig, run_id: str, label: str, method: CIRMethod,
                        eval_split: CIRSplit, train_summary: dict[str, Any], device: torch.device,
                        progress: bool = True) -> RunResult:
    """Evaluate ``method`` on ``eval_split`` under ``config``'s protocol; rank 0 writes the
    rankings and result.json into ``run_dir``. Returns the result on every rank."""
    protocol, eval_config = config.eval.resolved(config.dataset.name)
    evaluation = evaluate(method, eval_split, eval_config, device, progress)
    main = distributed.current().is_main
    if main:
        write_rankings(run_dir / "rankings.jsonl.gz", evaluation.rankings)
    result = RunResult(
        run_id=run_id,
        experiment=config.experiment,
        label=label,
        method=config.method.name,
        dataset=config.dataset.name,
        split=config.dataset.eval_split,
        seed=config.seed,
        metrics=evaluation.metrics,
        metrics_by_edit_type=evaluation.metrics_by_edit_type,
        metrics_by_category=evaluation.metrics_by_category,
        num_queries=evaluation.num_queries,
        num_gallery=evaluation.num_gallery,
        protocol=ProtocolRecord.of(config.eval, protocol, eval_config, bool(evaluation.metrics_by_category),
                                   eval_split.info),
        parameters=method.parameter_counts(),
        train=train_summary,
        timings=evaluation.timings,
        config=config.model_dump(mode="json"),
        environment={**environment(device),
                     "precision": {"train": train_summary.get("precision", "fp32"), "eval": evaluation.precision}},
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        method_statistics={**method.statistics(), **evaluation.diagnostics},
        examples=evaluation.examples,
        rankings_file="rankings.jsonl.gz",
        learning_free=evaluation.learning_free,
        provenance={**method.provenance(), "image_mode": eval_split.images.resize},
    )
    if main:
        write_result(run_dir / "result.json", result)
    return result
