"""Experiment configs: YAML -> validated pydantic models -> one RunSpec per grid point and seed.

    experiment = load_experiment(Path("ablations/reference.yaml"), overrides=["train.epochs=1"])
    for spec in expand(experiment):
        spec.run_id, spec.config.method.name, spec.config.seed

A config file may ``include:`` base files (paths relative to it; later keys win, mappings
merge deeply); ``--set key.path=value`` overrides are applied last (values parsed as YAML).
``grid:`` maps a key path to a list of values; the runs are the cartesian product of the
grid times ``seeds``. A grid value that is a mapping replaces the node at its path, so
``grid: {method: [{name: image_only}, {name: sum}]}`` compares methods with different
parameters. Each run's id is a hash of its resolved config. Every mistake is a HarnessError
naming the file, the field path, what is wrong and the fix.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from harness.core.errors import HarnessError, did_you_mean
from harness.core.settings import apply_overrides, flatten, load_raw, set_path, validate_model
from harness.data.datasets import DatasetConfig
from harness.evaluation.protocol import EvalConfig
from harness.methods.registry import get_method
from harness.reporting.analysis import AnalysisConfig, MainEffect, same_level
from harness.reporting.data import config_value
from harness.training.loop import TrainConfig


class MethodConfig(BaseModel):
    """A method by registered name, with its typed parameters (validated per method)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="registered method name (see `harness list`)")
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the method's parameters; unset ones take defaults")


class TrackingConfig(BaseModel):
    """mlflow tracking: a sqlite file beside the results unless ``uri`` names another store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    uri: str | None = Field(None, description="tracking URI; default sqlite:///<output>/<experiment>/mlflow.db")


class PublishedRow(BaseModel):
    """A published result shown beside the measured ones, never mixed with them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(description="row label, e.g. 'CIR-LVLM (paper)'")
    source: str = Field(description="where the numbers are printed, e.g. 'ReCALL (arXiv 2602.01639) Table 1'")
    metrics: dict[str, float] = Field(description="metric key -> value in %, e.g. recall_at_10: 56.21")


class SearchDimension(BaseModel):
    """One swept setting: a float or int range (optionally log-scaled) or a list of choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchDimension:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs choices: [...]")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"{self.type} needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        return self


class Objective(BaseModel):
    """A metric of the run's result (or ms_per_query) and whether to raise or lower it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description="e.g. recall_at_10, avg, or ms_per_query")
    direction: Literal["maximize", "minimize"] = "maximize"


class SweepConfig(BaseModel):
    """An optuna study over settings of the experiment (`harness sweep`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(20, ge=1, description="finished (complete or pruned) trials the study should reach")
    space: dict[str, SearchDimension] = Field(description="config path -> search dimension", min_length=1)
    objectives: list[Objective] = Field(default_factory=lambda: [Objective(metric="avg")], min_length=1)
    sampler: Literal["tpe", "random", "nsgaii"] = Field("tpe", description="nsgaii suits several objectives")
    seed: int = Field(0, description="sampler seed")
    pruner: Literal["median", "none"] = Field("median", description="median: stop a trial whose per-epoch "
                                                "validation metric falls below the median (one objective only)")
    pruner_warmup_epochs: int = Field(1, ge=0, description="epochs before a trial may be pruned")
    pruner_startup_trials: int = Field(5, ge=0, description="trials that finish unpruned before pruning starts "
                                       "(optuna's MedianPruner default)")
    storage: str | None = Field(None, description="optuna storage URL; default "
                                                  "sqlite:///<output>/<experiment>/optuna.db")


class ReportConfig(BaseModel):
    """Where the experiment's report goes, what its plot sweeps, which published numbers to show."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dir: str | None = Field(None, description="report folder root, beside the results root when relative "
                            "(output_dir/../dir); default <output>/<experiment>/report (ablations use reports/)")
    x: str | None = Field(None, description="config path on the plot's x axis; inferred when one method parameter "
                                            "varies")
    published: list[PublishedRow] = Field(default_factory=list, description="published numbers, labelled as such")
    baseline: str | None = Field(None, description="run label (e.g. 'cir_lvlm(pool_size=1)') every run is tested "
                                 "against, paired over queries; default: the experiment's first run")
    formats: list[Literal["md", "html", "tex", "csv"]] = Field(["md", "html", "tex", "csv"],
                                                             description="what the report is written as")
    unimodal: str | None = Field(None, description="an experiment folder (<output>/<experiment>) whose image_only and "
                                 "text_only runs, on the same queries, decide the composition gap when this experiment "
                                 "has none (harness.reporting.composition)")


#: dotted paths of settings that decide what is kept or how a step is computed (memory layout,
#: attention kernel), not what: left out of run ids (a run resumes under other such settings)
ID_NEUTRAL: tuple[str, ...] = (
    "train.keep_checkpoint", "train.checkpoint_every", "train.micro_batch_size", "train.gradient_checkpointing",
    "train.frozen_features",
    "method.params.backbone.attn_implementation", "eval.gallery_on_disk", "eval.perception_images")
#: dotted paths of settings added after run ids were first given out, with the value that does what
#: the code did before them (their default, or for CIR-LVLM's instruction order and LM adaptation
#: the earlier behaviour, now selectable): left out of a run id at that value, so the runs made
#: before keep their ids (and results)
ID_LATER: dict[str, Any] = {"train.group_lr": {}, "dataset.resize": "squash",
                            "method.params.instruction_order": "task_first",
                            "method.params.lm_adaptation": "full",
                            "method.params.lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj"],
                            "method.params.stage0.instruct_steps": 0,
                            "method.params.stage0.instructions": ["describe", "colour", "count", "edit"],
                            "method.params.qformer_pretraining.itm": False,
                            "method.params.stage0.dense_weight": 0.0, "method.params.stage0.dense_steps": 0,
                            "method.params.backbone.vision": "pixels", "eval.subset_file": None}


def _drop_path(resolved: dict[str, Any], path: str, only_if: Any = ...) -> None:
    """Remove ``path`` (a.b.c) from nested ``resolved``, or only when it equals ``only_if``."""
    *parents, last = path.split(".")
    node: Any = resolved
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict) and last in node and (only_if is ... or node[last] == only_if):
        del node[last]


class RunConfig(BaseModel):
    """Everything that determines one run's result (its hash is the run id)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    method: MethodConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    seed: int = 0

    def run_id(self) -> str:
        """Stable id: short hash of the resolved config (key order independent), without the
        settings that cannot change a result (``ID_NEUTRAL``), the later ones at their default
        (``ID_LATER``), the embedded benchmark's version-2 settings for version 1, and paths by
        their last component (``_located_by_name``)."""
        resolved = self.model_dump(mode="json")
        resolved["dataset"]["synthetic"] = self.dataset.synthetic.settings()  # version 1 without version 2's fields
        for path in ID_NEUTRAL:
            _drop_path(resolved, path)
        for path, default in ID_LATER.items():
            _drop_path(resolved, path, only_if=default)
        for path in get_method(self.method.name).params.unread_settings:
            _drop_path(resolved, f"method.params.{path}")
        resolved = _located_by_name(resolved)
        blob = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _located_by_name(value: Any, key: str = "") -> Any:
    """``value`` with every path setting (``dataset.root``, the ``*_dir`` of backbones) reduced
    to its last component: a run id names data and checkpoints by their folder, so moving them,
    or running from another working directory, keeps the ids (and the finished runs)."""
    if isinstance(value, dict):
        return {k: _located_by_name(v, k) for k, v in value.items()}
    if isinstance(value, str) and (key == "root" or key.endswith("_dir")) and value:
        return Path(value.rstrip("/")).name or value
    return value


class ExperimentConfig(BaseModel):
    """A YAML experiment: a base run, a grid over key paths, seeds, where results go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str = Field(description="experiment name; results go to <output_dir>/<experiment>/")
    description: str = ""
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    method: MethodConfig | None = Field(None, description="the method; may instead come from grid")
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="key path -> values (cartesian product)")
    sweep: SweepConfig | None = Field(None, description="optuna study for `harness sweep` (ignored by `harness run`)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    output_dir: str = Field("runs", description="root folder of results")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    analysis: AnalysisConfig | None = Field(
        None, description="the pre-registered analysis: primary endpoint, confirmatory contrasts, equivalence margin "
        "(harness/reporting/analysis.py)")

    @field_validator("experiment")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not name or any(c in name for c in "/\\") or name.startswith("."):
            raise ValueError("must be a plain folder name (no slashes, not starting with '.')")
        return name

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seed {repeated[0]} is listed more than once (each seed is one run per grid point)")
        return seeds

    @field_validator("grid")
    @classmethod
    def _non_empty(cls, grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for path, values in grid.items():
            if not values:
                raise ValueError(f"grid '{path}' has no values")
        return grid


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: its resolved config, id and grid point."""

    config: RunConfig
    grid_point: dict[str, Any]
    source: str

    @property
    def run_id(self) -> str:
        return self.config.run_id()

    @property
    def label(self) -> str:
        """Readable name of the grid point (method name when nothing is swept)."""
        if not self.grid_point:
            return self.config.method.name
        return _describe(self.grid_point)


def _short(value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        params = flatten(value.get("params") or {})
        inside = ", ".join(f"{k}={_named(v)}" for k, v in params.items())
        return f"{value['name']}({inside})" if inside else str(value["name"])
    return json.dumps(value) if isinstance(value, (dict, list)) else _named(value)


def _named(value: Any) -> Any:
    """A path shown by its last component in labels (a checkpoint's folder name, not where it lies)."""
    return Path(value).name if isinstance(value, str) and "/" in value.rstrip("/") else value


# ---------------------------------------------------------------- loading


def load_experiment(path: Path, overrides: list[str] | None = None) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Load, merge and validate an experiment file; return it with the raw merged mapping.
    When the grid sweeps whole methods, a ``method.*`` override goes into each of them
    (``method.params.*`` into those that have the parameter), not into a base ``method:``,
    which every grid point replaces."""
    raw = load_raw(Path(path))
    swept = raw.get("grid", {}).get("method") if isinstance(raw.get("grid"), dict) else None
    late = [o for o in overrides or [] if o.startswith("method.")] if isinstance(swept, list) else []
    raw = apply_overrides(raw, [o for o in overrides or [] if o not in late], str(path))
    if late:
        raw["grid"]["method"] = override_grid_methods(swept, late, str(path))
    experiment = validate_model(ExperimentConfig, raw, file=str(path))
    if experiment.method is not None:
        _validate_method(experiment.method, file=str(path), prefix="method")
    return experiment, raw


def override_grid_methods(methods: list[Any], overrides: list[str], file: str) -> list[Any]:
    """The grid's method entries with ``method.*`` overrides applied: ``method.params.<field>...``
    to the methods whose parameters have ``<field>`` (an error when none has it), anything else
    to every method."""
    methods = [copy.deepcopy(m) if isinstance(m, dict) else {"name": m} for m in methods]
    for item in overrides:
        path = item.split("=", 1)[0].strip()
        keys = path.split(".")
        takers = methods
        if len(keys) > 2 and keys[1] == "params":
            takers = [m for m in methods if keys[2] in _parameter_fields(m.get("name"))]
            if not takers:
                names = ", ".join(str(m.get("name")) for m in methods)
                raise HarnessError(f"no method of the grid ({names}) has a parameter '{keys[2]}'", file=file,
                                   field=f"--set {path}", fix="check the name with `harness list`")
        for method in takers:
            method.update(apply_overrides(method, [item[len("method."):]], file))
    return methods


def _parameter_fields(name: Any) -> set[str]:
    try:
        return set(get_method(str(name)).params.model_fields)
    except HarnessError:
        return set()


# ---------------------------------------------------------------- expansion


def expand(experiment: ExperimentConfig, raw: dict[str, Any], file: str) -> list[RunSpec]:
    """One RunSpec per grid point and seed, each validated with its method's parameters."""
    base = {k: v for k, v in raw.items() if k in RunConfig.model_fields}
    base["experiment"] = experiment.experiment
    paths = list(experiment.grid)
    specs: list[RunSpec] = []
    seen: set[str] = set()
    for values in itertools.product(*(experiment.grid[p] for p in paths)):
        point = dict(zip(paths, values, strict=True))
        run = copy.deepcopy(base)
        for path, value in point.items():
            if path.split(".")[0] not in RunConfig.model_fields:
                raise HarnessError(f"grid key '{path}' is not a run setting", file=file, field=f"grid.{path}",
                                   fix="sweep a path under one of "
                                       f"{', '.join(f for f in RunConfig.model_fields if f != 'experiment')}")
            set_path(run, path, value, file=file, field=f"grid.{path}")
        for seed in experiment.seeds:
            run["seed"] = seed
            where = f"grid point {_describe(point)}" if point else None
            if "method" not in run:
                raise HarnessError("no method given", file=file, field="method",
                                   fix="add `method: {name: ...}` or sweep `method` in grid")
            config = validate_model(RunConfig, _stage0_seed_follows_run(run, seed), file=file, context=where)
            method = _validate_method(config.method, file=file, prefix="method", context=where)
            config = config.model_copy(update={"method": method})
            spec = RunSpec(config=config, grid_point=point, source=file)
            if spec.run_id not in seen:
                seen.add(spec.run_id)
                specs.append(spec)
    _check_contrasts(experiment, specs, file)
    return specs


#: ``method.params.stage0.seed: run``: each run's stage 0 is drawn with the run's own seed
STAGE0_SEED_FROM_RUN = "run"


def _stage0_seed_follows_run(run: dict[str, Any], seed: int) -> dict[str, Any]:
    """``run`` with a ``stage0.seed: run`` resolved to the run's seed (issue 35: stage-0 luck then
    varies with the seeds, so a seed-level test counts it as noise instead of resting every run on
    one draw). The resolved number is what the run id hashes: an explicit seed gives the same run."""
    method = run.get("method")
    params = method.get("params") if isinstance(method, dict) else None
    stage0 = params.get("stage0") if isinstance(params, dict) else None
    if isinstance(stage0, dict) and stage0.get("seed") == STAGE0_SEED_FROM_RUN:
        run = copy.deepcopy(run)
        run["method"]["params"]["stage0"]["seed"] = seed
    return run


def _check_contrasts(experiment: ExperimentConfig, specs: list[RunSpec], file: str) -> None:
    """Each pre-registered contrast names runs of the experiment (checked before any training)."""
    if experiment.analysis is None:
        return
    labels = list(dict.fromkeys(spec.label for spec in specs))
    for index, contrast in enumerate(experiment.analysis.contrasts):
        if isinstance(contrast, MainEffect):
            _check_main_effect(contrast, specs, file, index)
            continue
        sides = [("a", contrast.a), ("b", contrast.b)]
        sides += [("minus.a", contrast.minus.a), ("minus.b", contrast.minus.b)] if contrast.minus else []
        for side, label in sides:
            if label not in labels:
                raise HarnessError(f"contrast names {label!r}, not a run of this experiment"
                                   f"{did_you_mean(label, labels)}", file=file,
                                   field=f"analysis.contrasts.{index}.{side}", fix=f"use one of: {', '.join(labels)}")


def _check_main_effect(effect: MainEffect, specs: list[RunSpec], file: str, index: int) -> None:
    """A main effect's factor is set by the runs at both of its levels."""
    levels = [config_value(spec.config.model_dump(mode="json"), effect.factor) for spec in specs]
    for side, wanted in (("a", effect.a), ("b", effect.b)):
        if not any(same_level(level, wanted) for level in levels):
            seen = ", ".join(dict.fromkeys(json.dumps(level) for level in levels))
            raise HarnessError(f"no run sets {effect.factor} to {json.dumps(wanted)} (the runs set it to {seen})",
                               file=file, field=f"analysis.contrasts.{index}.{side}",
                               fix="name the factor's path and two of its levels in the grid")


def _describe(point: dict[str, Any]) -> str:
    """'image_only, train.lr=0.001': a swept method shows as its bare name."""
    parts = []
    for key, value in point.items():
        if key in ("method", "method.name"):
            parts.append(_short(value))
        elif isinstance(value, dict) and "name" not in value:
            inside = ", ".join(f"{k}={_named(v)}" for k, v in flatten(value).items())
            parts.append(f"{key.split('.')[-1]}({inside})")
        else:
            parts.append(f"{key}={_short(value)}")
    return ", ".join(parts)


def _validate_method(method: MethodConfig, *, file: str, prefix: str, context: str | None = None) -> MethodConfig:
    """Check the method name and its typed parameters; return them with defaults filled in."""
    try:
        info = get_method(method.name)
    except HarnessError as error:
        raise HarnessError(error.problem + (f" ({context})" if context else ""), file=file, field=f"{prefix}.name",
                           fix=error.fix) from None
    params = validate_model(info.params, method.params, file=file, prefix=f"{prefix}.params", context=context)
    return MethodConfig(name=method.name, params=params.model_dump(mode="json"))
