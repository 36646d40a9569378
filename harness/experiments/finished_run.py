"""A finished run's folder: read it back with one-line errors, and evaluate its checkpoint on
another split without training again (`harness eval`).

    config = read_run_config(run_dir); result = read_run_result(run_dir)
    result, split, rankings = read_run_split(run_dir)   # what `harness score` and `submit` read
    metrics, by_category = score_run(run_dir)            # its rankings scored again, no model
    result = evaluate_run(run_dir, "test1")   # -> <run_dir>/eval/test1/{config.yaml, result.json, rankings.jsonl.gz}
    result = evaluate_run(run_dir, "val", settings=["eval.max_queries=500"])   # eval.* settings changed

A run folder is the harness's own output, but it may have been copied, edited or cut short:
a missing or malformed file is a HarnessError naming it, never a traceback. The evaluation
folder has a run folder's layout, so `harness score` and `harness submit` read it as they read
a run (`harness submit <run_dir>/eval/test1`). The run's own result.json, its rankings and the
experiment's reports are left untouched; evaluating again replaces only that split's folder
(written atomically, file by file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.core import distributed
from harness.core.device import resolve_device
from harness.core.errors import HarnessError
from harness.core.settings import apply_overrides, validate_model
from harness.data.datasets import dataset_root, load_dataset, read_split
from harness.data.triplet import CIRSplit
from harness.evaluation.results import RunResult, read_rankings, read_result
from harness.evaluation.saved_rankings import Metrics, score
from harness.experiments.config import RunConfig
from harness.experiments.executor import image_resize
from harness.experiments.recording import evaluate_and_record, write_run_config
from harness.methods.base import CIRMethod
from harness.methods.registry import build_run_method
from harness.training.loop import load_checkpoint

FIX = "give a finished run's folder: <output>/<experiment>/runs/<run id>"


def read_run_config(run_dir: Path) -> RunConfig:
    path = _required(run_dir, "config.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise HarnessError(f"not YAML ({type(error).__name__})", file=path,
                           fix="re-run the run, or restore the file") from None
    return validate_model(RunConfig, data, file=str(path))


def read_run_result(run_dir: Path) -> RunResult:
    """The folder's result.json (an older schema upgraded), or a HarnessError naming it."""
    return read_result(_required(run_dir, "result.json"))


def _required(run_dir: Path, name: str) -> Path:
    path = Path(run_dir) / name
    if not path.is_file():
        raise HarnessError(f"no {name} here", file=run_dir, fix=FIX)
    return path


def read_run_split(run_dir: Path) -> tuple[RunResult, CIRSplit, list[dict[str, Any]]]:
    """(result, split annotations, rankings) of a finished run directory (or of an evaluation
    folder `harness eval` wrote); the annotations suffice, the images may be absent."""
    config = read_run_config(run_dir)
    result = read_run_result(run_dir)
    if not (Path(run_dir) / "rankings.jsonl.gz").is_file():
        raise HarnessError("no rankings.jsonl.gz here", file=run_dir, fix=FIX)
    split, _ = read_split(config.dataset.name, dataset_root(config.dataset, progress=False), result.split,
                          config.dataset.image_size, config.dataset.categories)
    return result, split, read_rankings(Path(run_dir) / "rankings.jsonl.gz")


def score_run(run_dir: Path) -> Metrics:
    """(metrics, metrics per category) of a finished run's saved rankings under the protocol its
    result.json records: what `harness score RUN` compares with the metrics the run wrote."""
    result, split, entries = read_run_split(run_dir)
    return score(entries, split, result.protocol.eval_config(), file=str(run_dir))


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


def evaluation_config(config: RunConfig, split: str, settings: list[str] | None = None,
                      file: str = "--set") -> tuple[RunConfig, list[str]]:
    """The run's config for evaluating ``split``, and what changed from the run's own evaluation.
    Another split than the run's is evaluated whole: a smoke run's ``eval.max_queries`` and its
    ``eval.subset_file`` (pair ids of the run's split) are dropped. ``settings`` then set
    ``eval.*`` fields (``--set eval.max_queries=100``); the trained model cannot change here."""
    data = config.model_dump(mode="json")
    data["dataset"]["eval_split"] = split
    notes = []
    if split != config.dataset.eval_split:
        for key in ("max_queries", "subset_file"):
            if data["eval"].get(key) is not None:
                notes.append(f"the run's eval.{key} ({data['eval'][key]}) is for {config.dataset.eval_split}: "
                             f"{split} is evaluated whole (--set eval.{key}=... to limit it)")
                data["eval"][key] = None
    for item in settings or []:
        if not item.strip().startswith("eval."):
            raise HarnessError(f"{item.split('=', 1)[0]!r} is not an evaluation setting", file=file, field="--set",
                               fix="set eval.* fields only (e.g. eval.max_queries=100); the trained model is fixed")
    data = apply_overrides(data, settings or [], file)
    return validate_model(RunConfig, data, file=file), notes


def evaluate_run(run_dir: Path, split: str, progress: bool = True, settings: list[str] | None = None,
                 echo=print) -> RunResult:
    """Rebuild the run's method, load its checkpoint, evaluate it on ``split`` of its dataset
    under its protocol (``evaluation_config``: another split whole, ``settings`` for eval.*) and
    write ``<run_dir>/eval/<split>/``. Under torchrun the ranks share the evaluation (whole
    batches dealt to the ranks, embeddings gathered) and rank 0 writes."""
    config, notes = evaluation_config(read_run_config(Path(run_dir)), split, settings)
    joined = not distributed.current().distributed
    world = distributed.init_from_environment(config.eval.device)
    for note in notes if world.is_main else []:
        echo(note)
    try:
        return _evaluate_run(Path(run_dir), config, split, progress and world.is_main, world.is_main)
    finally:
        if joined and world.distributed:
            distributed.shutdown()


def _evaluate_run(run_dir: Path, config: RunConfig, split: str, progress: bool, main: bool) -> RunResult:
    finished = read_run_result(run_dir)
    trained = int(finished.train.get("steps", 0)) > 0
    if trained and not (run_dir / "checkpoints" / "last" / "model.safetensors").is_file():
        raise HarnessError("the run kept no checkpoint", file=run_dir / "checkpoints", field="train.keep_checkpoint",
                           fix="run it again with train.keep_checkpoint: true (the default)")
    method, eval_split = rebuild_run(run_dir, config, progress, weights=trained)
    out = evaluation_dir(run_dir, split)
    if main:
        write_run_config(out, config)
    return evaluate_and_record(out, config, finished.run_id, finished.label, method, eval_split, finished.train,
                               resolve_device(config.eval.device), progress)
