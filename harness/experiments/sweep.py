"""`harness sweep`: an optuna study over the settings of an experiment.

    sweep:                                   # in the experiment YAML
      trials: 20
      space:
        train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
        method.params.pool_size: {type: categorical, choices: [1, 10, 40]}
      objectives: [{metric: recall_at_10, direction: maximize}, {metric: ms_per_query, direction: minimize}]

Each trial is an ordinary run of the experiment (its first seed) with the suggested values
set: its id is the hash of its config, so it lands in ``runs/<id>/`` like any run, and an
identical config is not trained twice. With one objective, the trial reports the objective on the validation
split after every epoch and the median pruner may stop it. The study lives in
``sqlite:///<output>/<experiment>/optuna.db`` unless ``sweep.storage`` names another;
re-running the command continues it: finished and pruned trials are kept, failed trials and
trials left running by a killed process have their parameters queued again (once), and only
the missing trials are run. Each finished trial is a nested mlflow run under the sweep's
parent run.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from pathlib import Path
from typing import Any

import optuna

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text
from harness.core.secrets import mask, mask_all
from harness.evaluation.evaluate import evaluate
from harness.evaluation.results import RunResult
from harness.experiments.config import SweepConfig
from harness.experiments.executor import SplitCache, execute_run, image_resize, plan_experiment, plan_gpus
from harness.experiments.parallel import gpu_slots
from harness.experiments.tracking import Tracker, default_tracking_uri, swept_tags
from harness.training.step_log import LiveRuns

log = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def objective_value(result: RunResult, metric: str) -> float:
    """A result's value of ``metric`` (``ms_per_query``: encoding + scoring latency)."""
    if metric == "ms_per_query":
        return float(result.timings["encode_and_score_ms_per_query"])
    if metric not in result.metrics:
        raise HarnessError(f"the runs have no metric {metric!r} (they have {', '.join(sorted(result.metrics))})",
                           field="sweep.objectives", fix="name one of the run's metrics, or ms_per_query")
    return float(result.metrics[metric])


def _suggest(trial: optuna.Trial, path: str, dimension) -> Any:
    if dimension.type == "categorical":
        return trial.suggest_categorical(path, dimension.choices)
    if dimension.type == "int":
        return trial.suggest_int(path, int(dimension.low), int(dimension.high), log=dimension.log)
    return trial.suggest_float(path, dimension.low, dimension.high, log=dimension.log)


class _SeededPerTrial:
    """Sampler mixin: before each trial the sampler's random state is reseeded from (seed, trial
    number), so trial k draws what it would draw had the study run in one go; a resumed or
    extended study (a new process, a new sampler) then samples new points, never the first
    ones again. optuna keeps the state in ``_rng`` (and TPE's start-up ``_random_sampler``)."""

    def __init__(self, seed: int):
        super().__init__(seed=seed)  # type: ignore[call-arg]
        self._study_seed = seed

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        seed = (self._study_seed * 1_000_003 + trial.number) % 2**32
        for holder in (self, getattr(self, "_random_sampler", None)):
            state = getattr(holder, "_rng", None)
            if state is not None:
                state.rng.seed(seed)
        super().before_trial(study, trial)  # type: ignore[misc]


class _RandomSampler(_SeededPerTrial, optuna.samplers.RandomSampler):
    pass


class _TPESampler(_SeededPerTrial, optuna.samplers.TPESampler):
    pass


class _NSGAIISampler(_SeededPerTrial, optuna.samplers.NSGAIISampler):
    pass


def _sampler(sweep: SweepConfig, offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded per trial (``_SeededPerTrial``); ``offset`` keeps the workers
    of one study apart."""
    kind = {"random": _RandomSampler, "nsgaii": _NSGAIISampler}.get(sweep.sampler, _TPESampler)
    return kind(seed=sweep.seed + offset)


def _requeue_unfinished(study: optuna.Study) -> int:
    """Queue the parameters of failed trials (once each) and of trials a killed process left
    RUNNING (marked failed first), so a re-run retries them before sampling new ones."""
    requeued = set(study.user_attrs.get("requeued", []))
    count = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING:
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        elif trial.state != optuna.trial.TrialState.FAIL:
            continue
        if trial.number in requeued:
            continue
        study.enqueue_trial(trial.params, skip_if_exists=False)
        requeued.add(trial.number)
        count += 1
    study.set_user_attr("requeued", sorted(requeued))
    return count


def _storage(sweep: SweepConfig, output: Path):
    """The study's storage: ``journal`` = a JournalFile beside the runs (several processes on one
    machine), any other string an RDB URL, default sqlite beside the runs."""
    if sweep.storage == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(str((output / "optuna.journal").resolve())))
    return sweep.storage or f"sqlite:///{(output / 'optuna.db').resolve()}"


def _describe(storage) -> str:
    return mask(storage) if isinstance(storage, str) else "journal file"


def _open_study(plan, sweep: SweepConfig, seed_offset: int = 0) -> optuna.Study:
    single = len(sweep.objectives) == 1
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                          n_warmup_steps=sweep.pruner_warmup_epochs)
              if single and sweep.pruner == "median" else optuna.pruners.NopPruner())
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=plan.experiment.experiment, storage=_storage(sweep, plan.output),
                               load_if_exists=True, sampler=_sampler(sweep, seed_offset), pruner=pruner,
                               directions=[o.direction for o in sweep.objectives])


def _plan(config_path: Path, overrides: list[str] | None, output: Path | None):
    plan = plan_experiment(config_path, overrides, output)
    if plan.experiment.sweep is None:
        raise HarnessError("no sweep section", file=config_path, field="sweep",
                           fix="add sweep: {trials: N, space: {...}, objectives: [...]}")
    if plan.experiment.grid:
        raise HarnessError("a sweep file cannot also have a grid", file=config_path, field="grid",
                           fix="sweep the settings in sweep.space instead")
    _check_objectives(plan, config_path)
    _check_space(plan.experiment.sweep, config_path, overrides, output)
    plan.output.mkdir(parents=True, exist_ok=True)
    return plan


def _setting(path: str, value: Any) -> str:
    """``--set`` text of one sampled value."""
    return f"{path}={value!r}" if isinstance(value, str) else f"{path}={value}"


def _corners(dimension) -> list[Any]:
    """The values that test a dimension against the schema: both ends of a range, every choice."""
    if dimension.type == "categorical":
        return list(dimension.choices)
    if dimension.type == "int":
        return [int(dimension.low), int(dimension.high)]
    return [float(dimension.low), float(dimension.high)]


def _check_space(sweep: SweepConfig, config_path: Path, overrides: list[str] | None, output: Path | None) -> None:
    """Refuse, before the study exists, a search space that names an unknown setting or samples a
    value of the wrong type: each dimension's ends (or choices) are planned as a trial would be,
    so a broken space costs no FAIL trial in the study and writes nothing."""
    for path, dimension in sweep.space.items():
        for value in _corners(dimension):
            try:
                plan_experiment(config_path, [*(overrides or []), _setting(path, value)], output)
            except HarnessError as error:
                raise HarnessError(f"{error.problem} (a trial would set {path} = {value!r})", file=config_path,
                                   field=f"sweep.space.{path}",
                                   fix=error.fix or "name a setting of the experiment and a type it accepts") from None


def _check_objectives(plan, config_path: Path) -> None:
    """Refuse, before any trial trains, an objective the runs cannot have: an unknown metric, or
    a cut-off K the protocol does not evaluate."""
    import re

    from harness.evaluation.protocol import family

    config = plan.specs[0].config
    _, evaluation = config.eval.resolved(config.dataset.name)
    for index, objective in enumerate(plan.experiment.sweep.objectives):
        metric = objective.metric
        if metric == "ms_per_query" or "/" in metric:  # latency, or a per-category metric (FashionIQ)
            continue
        found = family(metric)
        cut = re.fullmatch(r"(recall_subset|recall|map)_at_(\d+)", metric)
        ks = {"recall": evaluation.ks, "recall_subset": evaluation.subset_ks, "map": evaluation.map_ks}
        if found is None or (cut and int(cut.group(2)) not in ks[cut.group(1)]):
            raise HarnessError(f"the runs will have no metric {metric!r}", file=config_path,
                               field=f"sweep.objectives[{index}].metric",
                               fix="name a metric the protocol evaluates (e.g. avg, recall_at_1 with eval.ks holding "
                               "1) or ms_per_query")


def run_sweep(config_path: Path, overrides: list[str] | None = None, output: Path | None = None,
              progress: bool = True, echo=print, workers: int = 1, allow_dirty: bool = False) -> optuna.Study:
    """Run the missing trials of the experiment's study (in ``workers`` processes); return it
    (``allow_dirty``: its report even from uncommitted code, as `harness run --allow-dirty`)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise HarnessError("harness sweep does not run under torchrun (each trial would be trained once per rank)",
                           fix="scale a sweep with --workers or with several machines on one sweep.storage URL; "
                           "use torchrun for `harness run`")
    plan = _plan(config_path, overrides, output)
    sweep = plan.experiment.sweep
    if workers > 1 and not sweep.storage:
        raise HarnessError("several workers need a storage made for it", file=config_path, field="sweep.storage",
                           fix="set sweep.storage: journal (one machine) or a PostgreSQL URL (several machines)")
    study = _open_study(plan, sweep)
    requeued = _requeue_unfinished(study)
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
    missing = max(0, sweep.trials - done)
    echo(f"study {study.study_name} ({_describe(_storage(sweep, plan.output))}): {done} finished trials, "
         f"{requeued} interrupted ones queued again, {missing} to run")
    tracker = None
    if missing and plan.experiment.tracking.enabled:  # experiment and parent run made once, before any worker
        description = plan.experiment.description
        tracker = Tracker.open(plan.experiment.tracking.uri, plan.output, plan.experiment.experiment, description)
        tracker.start_parent({"config_file": str(config_path), "trials": sweep.trials, "workers": workers},
                             name=f"sweep {study.study_name}", description=description)
    status = "FAILED"
    try:
        if missing and workers > 1:
            shares = [missing // workers + (index < missing % workers) for index in range(workers)]
            context = multiprocessing.get_context("spawn")
            slots = gpu_slots(workers, plan_gpus(plan))  # on a GPU machine a worker per GPU, round-robin beyond
            processes = [context.Process(target=_worker, args=(config_path, overrides, output, share, index,
                                                               tracker.parent_run_id if tracker else None, workers,
                                                               slots[index] if slots else None))
                         for index, share in enumerate(shares) if share]
            for process in processes:
                process.start()
            for process in processes:
                process.join()
            failed = [p.exitcode for p in processes if p.exitcode != 0]
            if failed:
                raise HarnessError(f"{len(failed)} worker(s) ended with exit codes {failed}", field="--workers",
                                   fix="see their output above; re-run the command to continue the study")
        elif missing:
            _optimize(study, plan, config_path, overrides, output, missing, tracker, progress, echo)
        status = "FINISHED"
    finally:
        if tracker is not None:
            tracker.finish(status)
    study = _open_study(plan, sweep)
    single = len(sweep.objectives) == 1
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    best = (study.best_trials if not single else [study.best_trial]) if complete else []
    for trial in best:
        echo(f"{'Pareto front' if not single else 'best'}: trial {trial.number} {trial.params} -> {trial.values}")
    if complete:
        report = _report(plan, complete, allow_dirty, echo)
        echo(f"report: {report or 'not written (above)'}")
        if tracker is not None and report is not None:
            _close_tracking(plan, tracker, report, [o.metric for o in sweep.objectives], list(sweep.space), echo)
    return study


def _close_tracking(plan, tracker: Tracker, report: Path, objectives: list[str], space: list[str], echo) -> None:
    """The sweep's report on its parent run, a runs table ordered by the first objective with the
    sampled values as columns, and how to open it."""
    metrics = [m for m in objectives if m != "ms_per_query"] or ["avg"]
    columns = ["trial", *swept_tags(dict.fromkeys(space, "")), "method", "seed"]
    for line in tracker.publish(report.parent, [plan.output / "experiment.json"], metrics, columns,
                                plan.experiment.tracking.uri or default_tracking_uri(plan.output)):
        echo(line)


def _report(plan, trials: list[optuna.trial.FrozenTrial], allow_dirty: bool = False, echo=print) -> Path | None:
    """The sweep's report: its finished trials as the rows ("trial N"), from their results (None
    where it would rest on uncommitted code without ``allow_dirty``: a line says so)."""
    from harness.experiments.runner import write_report_or_say_why

    trials = [t for t in sorted(trials, key=lambda t: t.number)
              if (plan.output / "runs" / t.user_attrs.get("run_id", "") / "result.json").is_file()]
    manifest = {"experiment": mask_all(plan.experiment.model_dump(mode="json")),
                "runs": [t.user_attrs["run_id"] for t in trials],
                "labels": {t.user_attrs["run_id"]: f"trial {t.number}" for t in trials}}
    atomic_write_text(plan.output / "experiment.json", json.dumps(manifest, indent=2))
    return write_report_or_say_why(plan.output, allow_dirty, echo)


def _worker(config_path: Path, overrides, output, trials: int, index: int, parent_run_id: str | None,
            workers: int = 1, gpu: int | None = None) -> None:
    """One worker process: ``trials`` trials of the shared study (its sampler seeded apart), with
    its share of the CPU cores as torch threads and its own GPU if any (as `harness run --jobs`)."""
    from harness.core.process import configure_process
    from harness.experiments.executor import parallel_threads

    configure_process(parallel_threads(workers), gpu)
    plan = _plan(config_path, overrides, output)
    study = _open_study(plan, plan.experiment.sweep, seed_offset=index)
    tracker = None
    if parent_run_id is not None:
        tracker = Tracker.open(plan.experiment.tracking.uri, plan.output, plan.experiment.experiment)
        tracker.parent_run_id = parent_run_id  # child runs carry the parent's id as a tag
    _optimize(study, plan, config_path, overrides, output, trials, tracker, False,
              lambda line: print(f"[worker {index}] {line}", flush=True))


def _optimize(study: optuna.Study, plan, config_path: Path, overrides, output, trials: int, tracker, progress: bool,
              echo) -> None:
    sweep = plan.experiment.sweep
    single = len(sweep.objectives) == 1
    splits = SplitCache(progress)
    live = LiveRuns(tracker)

    def objective(trial: optuna.Trial):
        values = {path: _suggest(trial, path, dimension) for path, dimension in sweep.space.items()}
        settings = [_setting(k, v) for k, v in values.items()]
        trial_plan = plan_experiment(config_path, [*(overrides or []), *settings], output)
        spec = trial_plan.specs[0]
        run_dir = trial_plan.run_dir(spec)
        trial.set_user_attr("run_id", spec.run_id)
        echo(f"[trial {trial.number}] {', '.join(f'{k}={v}' for k, v in values.items())} -> {run_dir}")
        if (run_dir / "result.json").is_file():
            from harness.evaluation.results import read_result

            result = read_result(run_dir / "result.json")
        else:
            on_epoch = None
            if single and sweep.pruner != "none":
                eval_split = splits.get(spec.config.dataset, spec.config.dataset.eval_split, image_resize(spec.config))
                _, eval_config = spec.config.eval.resolved(spec.config.dataset.name)

                def on_epoch(epoch: int, method) -> None:
                    quick = {"warmup_batches": 0, "latency_queries": 0, "diagnostic_queries": 0, "examples": 0}
                    evaluation = evaluate(method, eval_split, eval_config.model_copy(update=quick), progress=False)
                    metric = sweep.objectives[0].metric
                    value = (evaluation.timings["encode_and_score_ms_per_query"] if metric == "ms_per_query"
                             else evaluation.metrics.get(metric, 0.0))
                    trial.report(value, epoch)
                    live.values(run_dir, epoch, {f"val/{metric}": value})
                    if trial.should_prune():
                        echo(f"[trial {trial.number}] pruned after epoch {epoch} ({metric} {value:.2f})")
                        raise optuna.TrialPruned()

            tags = {"trial": str(trial.number), **swept_tags(values)}
            with live.run(spec, run_dir, tags) as finish:
                result = execute_run(spec, run_dir, splits, progress, on_epoch=on_epoch)
                finish(result)
        scores = [objective_value(result, o.metric) for o in sweep.objectives]
        echo(f"[trial {trial.number}] " + ", ".join(f"{o.metric} {v:.2f}" for o, v in zip(sweep.objectives, scores,
                                                                                            strict=True)))
        return scores[0] if single else scores

    stop = optuna.study.MaxTrialsCallback(sweep.trials, states=FINISHED)  # other machines may fill the study too
    try:
        study.optimize(objective, n_trials=trials, catch=(), callbacks=[stop])
    finally:
        live.close()
