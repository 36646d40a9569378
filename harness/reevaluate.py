"""Evaluate a finished run's checkpoint on another split without training again.

    result = evaluate_run(run_dir, "test1")   # -> <run_dir>/eval/test1/{config.yaml, result.json, rankings.jsonl.gz}

The evaluation folder has a run folder's layout, so `harness score` and `harness submit` read it
as they read a run (`harness submit <run_dir>/eval/test1`). The run's own result.json, its
rankings and the experiment's reports are left untouched; evaluating again replaces only that
split's folder (written atomically, file by file).
"""

from __future__ import annotations

from pathlib import Path

from harness.config import RunConfig
from harness.data.datasets import load_dataset
from harness.data.triplet import CIRSplit
from harness.device import resolve_device
from harness.errors import HarnessError
from harness.executor import image_resize
from harness.recording import evaluate_and_record, write_run_config
from harness.methods.base import CIRMethod
from harness.registry import build_run_method
from harness.results import RunResult
from harness.run_folder import read_run_config, read_run_result
from harness.train import load_checkpoint


def evaluation_dir(run_dir: Path, split: str) -> Path:
    return Path(run_dir) / "eval" / split


def rebuild_run(run_dir: Path, config: RunConfig, progress: bool = True,
                weights: bool = True) -> tuple[CIRMethod, CIRSplit]:
    """(the method of ``config`` rebuilt, the checkpoint's weights loaded unless ``weights`` is
    false; the config's evaluation split)."""
    resize = image_resize(config)
    train_split = load_dataset(config.dataset, config.dataset.train_split, progress, resize)
    eval_split = load_dataset(config.dataset, config.dataset.eval_split, progress, resize)
    method = build_run_method(config, train_split, progress)
    if weights:
        load_checkpoint(run_dir / "checkpoints", method)
    return method, eval_split


def evaluate_run(run_dir: Path, split: str, progress: bool = True) -> RunResult:
    """Rebuild the run's method, load its checkpoint, evaluate it on ``split`` of its dataset
    under its protocol and write ``<run_dir>/eval/<split>/``."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    finished = read_run_result(run_dir)
    trained = int(finished.train.get("steps", 0)) > 0
    if trained and not (run_dir / "checkpoints" / "last" / "model.safetensors").is_file():
        raise HarnessError("the run kept no checkpoint", file=run_dir / "checkpoints", field="train.keep_checkpoint",
                           fix="run it again with train.keep_checkpoint: true (the default)")
    config = config.model_copy(update={"dataset": config.dataset.model_copy(update={"eval_split": split})})
    method, eval_split = rebuild_run(run_dir, config, progress, weights=trained)
    out = evaluation_dir(run_dir, split)
    write_run_config(out, config)
    return evaluate_and_record(out, config, finished.run_id, finished.label, method, eval_split, finished.train,
                               resolve_device(config.eval.device), progress)
