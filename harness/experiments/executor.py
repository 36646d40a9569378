"""The run executor: an experiment planned into runs, and one run trained, evaluated and recorded.

    plan = plan_experiment(Path("ablations/reference.yaml"))
    result = execute_run(plan.specs[0], plan.run_dir(plan.specs[0]), SplitCache(progress=True))

Shared by the sequential loop (harness.experiments.runner), the ``--jobs`` workers (harness.experiments.parallel) and
sweep trials (harness.experiments.sweep), none of which imports another for it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.backbones.params import BackboneParams
from harness.backbones.vision import processor_resize
from harness.core import distributed
from harness.core.device import resolve_device
from harness.core.errors import HarnessError
from harness.data.datasets import SCENE_GRAPH, DatasetConfig, load_dataset
from harness.data.synthetic.scene import GRID
from harness.data.triplet import CIRSplit
from harness.evaluation.results import RunResult
from harness.experiments.config import ExperimentConfig, RunConfig, RunSpec, expand, load_experiment
from harness.experiments.recording import evaluate_and_record, write_run_config
from harness.methods.registry import build_run_method
from harness.training.frozen_features import attach_frozen_features
from harness.training.loop import seed_everything, train


@dataclass
class Plan:
    """An expanded experiment ready to run."""

    experiment: ExperimentConfig
    specs: list[RunSpec]
    output: Path

    def run_dir(self, spec: RunSpec) -> Path:
        return self.output / "runs" / spec.run_id


def plan_experiment(config_path: Path, overrides: list[str] | None = None, output: Path | None = None) -> Plan:
    experiment, raw = load_experiment(config_path, overrides)
    specs = expand(experiment, raw, str(config_path))
    root = Path(output) if output is not None else Path(experiment.output_dir)
    return Plan(experiment, specs, root / experiment.experiment)


class SplitCache:
    """Loaded splits shared by the runs of one process (decoded images are reused)."""

    def __init__(self, progress: bool):
        self.progress = progress
        self.splits: dict[tuple[str, str], CIRSplit] = {}

    def get(self, config: DatasetConfig, split: str, resize: str | None = None) -> CIRSplit:
        """The split, its images made square by ``resize`` (default: the dataset's setting)."""
        key = (config.model_dump_json(), split, resize)
        if key not in self.splits:
            self.splits[key] = load_dataset(config, split, self.progress, resize)
        return self.splits[key]


def image_resize(config: RunConfig) -> str:
    """How the run's images become square: ``dataset.resize``, or for ``auto`` what the run's
    checkpoint's own image processor does (harness.backbones.vision.processor_resize); squash for
    tiny backbones, which have no processor. ``scene_graph`` for a run on the perfect-perception
    track (backbone.vision: scene_graph), whose tower needs one patch per grid cell."""
    backbone = config.method.params.get("backbone") or {}
    if backbone.get("vision") == SCENE_GRAPH:
        return _scene_graph_mode(config, backbone)
    if config.dataset.resize != "auto":
        return config.dataset.resize
    pretrained = backbone.get("source") == "pretrained"
    directory = ((backbone.get("lvlm_dir") or backbone.get("vision_dir") or backbone.get("blip2_dir"))
                 if pretrained else None)
    return (processor_resize(Path(directory)) if directory else None) or "squash"


def _scene_graph_mode(config: RunConfig, backbone: dict) -> str:
    """``scene_graph``, once the tower's patches are the grid's cells."""
    patch, side = backbone.get("patch_size", BackboneParams().patch_size), config.dataset.image_size
    if patch != side // GRID or side // patch != GRID:
        raise HarnessError(f"backbone.vision: scene_graph needs one patch per grid cell; patch_size {patch} at "
                           f"{side} px gives {side // patch} x {side // patch} patches",
                           field="method.params.backbone.patch_size", fix=f"set it to {side // GRID}")
    return SCENE_GRAPH


def execute_run(spec: RunSpec, run_dir: Path, splits: SplitCache, progress: bool = True, on_epoch=None) -> RunResult:
    """Train and evaluate one run; write config.yaml, rankings and result.json."""
    config = spec.config
    main = distributed.current().is_main
    progress = progress and main
    if main:
        write_run_config(run_dir, config)
    if config.train.num_threads is not None:
        torch.set_num_threads(config.train.num_threads)
    device = resolve_device(config.eval.device)
    with distributed.main_first():  # rank 0 generates the dataset and stage 0; the others read the cache
        resize = image_resize(config)
        train_split = splits.get(config.dataset, config.dataset.train_split, resize)
        eval_split = splits.get(config.dataset, config.dataset.eval_split, resize)
        decode_gallery_first(eval_split, config.eval.gallery)
        seed_everything(config.seed)
        method = build_run_method(config, train_split, progress)
        frozen = attach_frozen_features(method, config, train_split, eval_split, device, progress)
    tokenizer = getattr(method, "tokenizer", None)
    if tokenizer is not None and main:
        tokenizer.save_pretrained(str(run_dir / "tokenizer"))
    summary = train(method, train_split, config.train, config.seed, run_dir / "checkpoints", device, progress,
                    on_epoch=on_epoch, step_log=run_dir / "metrics.jsonl")
    # the geometry every image of the run had, and whether its frozen towers read a feature table
    trained = summary.to_json() | {"image_resize": resize, "frozen_features": frozen}
    result = evaluate_and_record(run_dir, config, spec.run_id, spec.label, method, eval_split, trained, device,
                                 progress)
    if main and not config.train.keep_checkpoint:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    distributed.barrier()
    return result


def decode_gallery_first(split, gallery: str) -> None:
    """Decode the evaluation's gallery before training (into the image caches the evaluation then
    reads), so that an unreadable image stops the run before it trains, naming the file. A
    query-image gallery is built at evaluation time and decoded then."""
    if gallery == "split_file" and split.gallery:
        split.images.load(split.gallery)


def parallel_threads(jobs: int) -> int:
    """torch threads of each of ``jobs`` concurrent runs: the cores shared out."""
    return max(1, (os.cpu_count() or 1) // jobs)


def plan_gpus(plan: Plan) -> int:
    """GPUs the runs of ``plan`` can be spread over (0 when they run on the CPU)."""
    devices = {resolve_device(spec.config.eval.device).type for spec in plan.specs}
    return torch.cuda.device_count() if "cuda" in devices else 0


def build_warm_starts(plan: Plan, echo: Callable[[str], None], force: bool = False, progress: bool = True) -> int:
    """Build the stage-0 warm starts the runs of ``plan`` start from (`harness pretrain`), each
    once, and ``echo`` a line as each is ready: where it is, how long it took or that it was
    cached, its final losses. Returns how many there were."""
    from harness.data.datasets import dataset_key
    from harness.methods.registry import get_method

    seen: set[str] = set()
    for spec in plan.specs:
        info = get_method(spec.config.method.name)
        params = info.params.model_validate(spec.config.method.params)
        for start in info.cls.warm_starts(params, dataset_key(spec.config.dataset)):
            if start.key() in seen:
                continue
            seen.add(start.key())
            dataset = spec.config.dataset
            split = load_dataset(dataset, dataset.train_split, progress, image_resize(spec.config))
            cached = start.built() and not force
            start.ensure(split, force, progress)
            echo(start.summary(cached))
    return len(seen)
