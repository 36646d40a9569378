"""Run an experiment: expand it, train and evaluate each run, write results, mirror to mlflow.

    results = run_experiment(Path("ablations/reference.yaml"), overrides=[], output=None)

Layout of what is written:

    <output_dir>/<experiment>/mlflow.db
    <output_dir>/<experiment>/runs/<run id>/config.yaml | result.json | rankings.jsonl.gz | checkpoints/ | tokenizer/

A run whose result.json exists is finished and skipped. Under torchrun every rank runs this
same loop (harness.core.distributed): rank 0 decides what to skip, builds caches first, and alone
writes files and talks to mlflow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from harness.core import distributed
from harness.core.errors import HarnessError, RunsFailed, WorkerError
from harness.core.files import atomic_write_text
from harness.core.paths import file_lock
from harness.core.secrets import mask, mask_all
from harness.data.datasets import dataset_key
from harness.evaluation.protocol import table_columns, title
from harness.evaluation.results import RunResult, read_result
from harness.experiments.config import RunSpec
from harness.experiments.executor import Plan, SplitCache, execute_run, parallel_threads, plan_experiment, plan_gpus
from harness.experiments.tracking import Tracker, default_tracking_uri, swept_tags
from harness.reporting.build import UncommittedCode, report_experiment
from harness.reporting.tables import results_table
from harness.training.step_log import LiveRuns

log = logging.getLogger(__name__)


def run_experiment(
    config_path: Path,
    overrides: list[str] | None = None,
    output: Path | None = None,
    progress: bool = True,
    echo=print,
    overwrite: Literal["never", "only-missing", "always"] = "only-missing",
    jobs: int | Literal["auto"] = 1,
    allow_dirty: bool = False,
) -> list[RunResult]:
    """Run every not yet finished run of the experiment; return all its results in plan order.

    ``overwrite``: ``only-missing`` skips finished runs and resumes interrupted ones from their
    last checkpoint; ``never`` also leaves unfinished run folders untouched; ``always``
    recomputes every run from scratch. ``jobs``: runs trained at once in separate processes
    (``auto``: one per CPU core on a CPU, one on a GPU; see ``resolve_jobs``). ``allow_dirty``:
    write the report even where the runs or the code have uncommitted changes (it says so).

    Under torchrun (WORLD_SIZE > 1) the ranks share each run's training and evaluation; rank 0
    prints, writes and reports, and its decisions (skip, resume, delete) are every rank's."""
    plan = plan_experiment(config_path, overrides, output)
    joined = not distributed.current().distributed
    world = distributed.init_from_environment(plan.specs[0].config.eval.device if plan.specs else "auto")
    try:
        uneven = sorted({s.config.train.batch_size for s in plan.specs if s.config.train.batch_size % world.size})
        if uneven:  # before any run starts, not after the first ones
            raise HarnessError(f"train.batch_size {uneven[0]} does not split evenly over {world.size} ranks",
                               file=config_path, field="train.batch_size", fix=f"use a multiple of {world.size}")
        return _run_plan(plan, config_path, overrides, progress and world.is_main,
                         echo if world.is_main else (lambda *_: None), overwrite, world, jobs, allow_dirty)
    finally:
        if joined and world.distributed:
            distributed.shutdown()


def _run_plan(plan: Plan, config_path: Path, overrides: list[str] | None, progress: bool, echo,
              overwrite: str, world: distributed.World, jobs: int | Literal["auto"] = 1,
              allow_dirty: bool = False) -> list[RunResult]:
    if world.is_main:
        write_manifest(plan)
    tracker = _open_tracker(plan, config_path, overrides, world)
    events = _RunEvents(plan, echo, world, tracker, allow_dirty)
    status = "FAILED"
    try:
        try:
            _execute_pending(plan, events, overwrite, progress, jobs)
            status = "FINISHED" if not events.failures else "FAILED"
        finally:
            events.live.close()
        return _conclude(plan, events, echo, world)
    finally:
        if tracker is not None:
            tracker.finish(status)


def _execute_pending(plan: Plan, events: _RunEvents, overwrite: str, progress: bool,
                     jobs: int | Literal["auto"]) -> None:
    """Train and evaluate the runs not finished yet: in this process, or ``jobs`` at a time."""
    splits = SplitCache(progress)
    pending = _pending_runs(plan, overwrite, events.world, events.echo, events.finished)
    events.count = resolve_jobs(jobs, len(pending), plan, events.world)
    if events.count > 1:
        from harness.experiments.parallel import run_in_processes

        events.echo(f"{len(pending)} runs, {events.count} at a time ({parallel_threads(events.count)} torch thread(s) "
                    "each; --jobs)")
        prepare_caches(plan, [spec for _, spec in pending], splits)
        run_in_processes(warm_starts_first(pending), plan, events.count, events.started, events.ended, progress,
                         events.failed, gpus=plan_gpus(plan))
        return
    for number, spec in pending:
        events.started(number, spec)
        try:
            result = execute_run(spec, plan.run_dir(spec), splits, progress)
        except Exception as error:  # noqa: BLE001 - reported and re-raised at the end
            events.failed(number, spec, error)
            continue
        events.ended(number, spec, result)


def _open_tracker(plan: Plan, config_path: Path, overrides: list[str] | None,
                  world: distributed.World) -> Tracker | None:
    """The experiment's mlflow parent run (rank 0, when tracking is on)."""
    tracking = plan.experiment.tracking
    if not (tracking.enabled and world.is_main):
        return None
    description = plan.experiment.description
    tracker = Tracker.open(tracking.uri, plan.output, plan.experiment.experiment, description)
    tracker.start_parent({"config_file": str(config_path), "overrides": mask(" ".join(overrides or [])),
                          "runs": len(plan.specs)}, name=plan.experiment.experiment, description=description)
    return tracker


def _pending_runs(plan: Plan, overwrite: str, world: distributed.World, echo,
                  finished: dict[str, RunResult]) -> list[tuple[int, RunSpec]]:
    """The runs still to do, numbered; finished ones are read into ``finished`` and named."""
    pending: list[tuple[int, RunSpec]] = []
    for number, spec in enumerate(plan.specs, 1):
        run_dir = plan.run_dir(spec)
        done = run_dir / "result.json"
        head = f"[{number}/{len(plan.specs)}] {spec.label} seed={spec.config.seed}"
        if overwrite == "always" and run_dir.exists() and world.is_main:
            shutil.rmtree(run_dir)
        state = distributed.broadcast_object(
            "finished" if done.is_file() else "left" if overwrite == "never" and run_dir.exists() else "run")
        if state == "finished":
            echo(f"{head}: finished earlier ({run_dir})")
            if world.is_main:
                finished[spec.run_id] = read_result(done)
        elif state == "left":
            echo(f"{head}: unfinished, left as it is (--overwrite never) ({run_dir})")
        else:
            pending.append((number, spec))
    return pending


class _RunEvents:
    """What the loop says and keeps as runs start, end and fail (in this process or a worker's)."""

    def __init__(self, plan: Plan, echo, world: distributed.World, tracker: Tracker | None,
                 allow_dirty: bool = False):
        self.plan, self.echo, self.world, self.tracker = plan, echo, world, tracker
        self.allow_dirty = allow_dirty  # write the report from uncommitted code (--allow-dirty)
        self.live = LiveRuns(tracker)
        self.finished: dict[str, RunResult] = {}
        self.failures: list[str] = []
        self.trained = 0  # runs this command trained (or resumed) to the end, finished earlier ones aside
        self.broken_inputs = 0  # failures a user-fixable error caused (a broken file, a bad setting)
        self.count = 1

    def _head(self, number: int, spec: RunSpec) -> str:
        return f"[{number}/{len(self.plan.specs)}] {spec.label} seed={spec.config.seed}"

    def started(self, number: int, spec: RunSpec) -> None:
        run_dir = self.plan.run_dir(spec)
        (run_dir / "error.log").unlink(missing_ok=True)  # an earlier attempt's
        if (run_dir / "checkpoints" / "last" / "state.pt").is_file():
            self.echo(f"{self._head(number, spec)}: resuming from its last checkpoint")
        self.echo(f"{self._head(number, spec)} -> {run_dir}")
        self.live.start(spec, run_dir)

    def ended(self, number: int, spec: RunSpec, result: RunResult) -> None:
        self.live.end(self.plan.run_dir(spec), result)
        self.finished[spec.run_id] = result
        self.trained += 1
        self.echo(f"{'' if self.count == 1 else self._head(number, spec) + ':'}"
                  f"    {headline(result.metrics)}  train {result.train['seconds']:.0f}s")

    def failed(self, number: int, spec: RunSpec, error: BaseException) -> None:
        """One broken grid point is reported and the others still run (not under torchrun,
        where the ranks must fail together)."""
        self.live.fail(self.plan.run_dir(spec))
        if self.world.distributed or not isinstance(error, Exception):
            raise error
        line = f"{spec.label} seed={spec.config.seed}: {record_failure(self.plan.run_dir(spec), error)}"
        self.failures.append(line)
        self.broken_inputs += _user_fixable(error)
        self.echo(f"[{number}/{len(self.plan.specs)}] FAILED {line}")


def _conclude(plan: Plan, events: _RunEvents, echo, world: distributed.World) -> list[RunResult]:
    """The results in plan order; on rank 0 the results table, the report, and where they are.
    Failed runs raise RunsFailed once the others are reported."""
    failures = events.failures
    results = [events.finished[spec.run_id] for spec in plan.specs if spec.run_id in events.finished]
    if not results:
        echo("no finished runs: nothing to report")
        if failures:
            _raise_failures(events, f"all {len(failures)} runs failed", "fix the cause and run again")
        return results
    if not world.is_main:
        return results
    table = results_table(results)
    atomic_write_text(plan.output / "results.md", table + "\n")
    report = write_report_or_say_why(plan.output, events.allow_dirty, echo)
    echo("")
    echo(table)
    echo("")
    echo(f"results: {plan.output / 'runs'}   report: {report or 'not written (above)'}")
    if events.tracker is not None and report is not None:
        _close_tracking(plan, events.tracker, results, report, echo)
    if failures:
        _raise_failures(events, f"{len(failures)} of {len(plan.specs)} runs failed",
                        "fix the cause and run the same command again: finished runs are kept")
    return results


def write_report_or_say_why(output: Path, allow_dirty: bool, echo) -> Path | None:
    """The experiment's report; where it would rest on uncommitted code and that is not allowed,
    a line that says so and how to write it (the runs are kept either way)."""
    try:
        return report_experiment(output, allow_dirty=allow_dirty)
    except UncommittedCode as refused:
        echo(f"{refused.problem}; `harness report {output} --allow-dirty` writes it with that said in it")
        return None


def _close_tracking(plan: Plan, tracker: Tracker, results: list[RunResult], report: Path, echo) -> None:
    """The parent run's report and files, the runs-table view, and how to open it."""
    metrics = [key for key, _ in table_columns({key for r in results for key in r.metrics})]
    swept = sorted({key for spec in plan.specs for key in swept_tags(spec.grid_point)})
    for line in tracker.publish(report.parent, [plan.output / "experiment.json", plan.output / "results.md"], metrics,
                                ["method", "family", "seed", *swept],
                                plan.experiment.tracking.uri or default_tracking_uri(plan.output)):
        echo(line)


def _user_fixable(error: BaseException) -> bool:
    """Whether a run's error is one a user fixes (a --jobs worker sends a HarnessError as it is)."""
    return isinstance(error, HarnessError)


def _raise_failures(events: _RunEvents, count: str, fix: str) -> None:
    """Exit 2 (HarnessError) when no run this command attempted finished and every failure was
    a broken input or setting, with the first one's own line and fix; else RunsFailed (exit 1):
    a grid of which some runs trained did its job in part, whatever broke the others."""
    first = events.failures[0]
    if not events.trained and events.broken_inputs == len(events.failures):
        raise HarnessError(f"{count} on a broken input (first: {first})")
    raise RunsFailed(f"{count} (first: {first})", fix=fix)


#: the per-run line's metrics, first two present: CIRR-style recalls, else FashionIQ's or CIRCO's
HEADLINE = ("recall_at_1", "recall_subset_at_1", "recall_at_10", "recall_at_50", "map_at_5", "map_at_10")


def headline(metrics: dict[str, float]) -> str:
    """The two headline metrics a protocol reports, e.g. 'R@1 9.1  Rs@1 33.4' ('R@10 .. R@50 ..' on FashionIQ)."""
    shown = [f"{title(key)} {metrics[key]:.1f}" for key in HEADLINE if key in metrics][:2]
    return "  ".join(shown)


def record_failure(run_dir: Path, error: Exception) -> str:
    """One line for a failed run, also written to ``run_dir/error.log``: a user error's own line
    (file, field, fix), any other error's traceback."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "error.log"
    if isinstance(error, HarnessError):
        atomic_write_text(log, f"error: {error}\n")
        return str(error)
    error = WorkerError.of(error)
    atomic_write_text(log, error.remote_traceback)
    return f"{error.kind}: {error.message[:300]} (traceback in {log})"


def resolve_jobs(jobs: int | Literal["auto"], pending: int, plan: Plan, world: distributed.World) -> int:
    """How many runs train at once. ``auto``: on a CPU, one per core (a tiny model gains little
    from a second thread: two 1-thread CIR-LVLM runs made 1.2x the steps of one 2-thread run);
    with GPUs, one per GPU (each worker is given its own); under torchrun, one."""
    if world.distributed or pending <= 1:
        if jobs not in ("auto", 1) and world.distributed:
            raise HarnessError("--jobs cannot be combined with torchrun (the ranks already share each run)",
                               field="--jobs", fix="drop --jobs, or run without torchrun")
        return 1
    if jobs == "auto":
        gpus = plan_gpus(plan)
        return max(1, min(pending, gpus if gpus else os.cpu_count() or 1))
    return max(1, min(int(jobs), pending))


def prepare_caches(plan: Plan, specs: list[RunSpec], splits: SplitCache) -> None:
    """Build what concurrent runs would otherwise race to build: the datasets (a generated
    benchmark is rendered here, once). They are read here too, so a broken annotation file stops
    the job with its own error before any worker starts. Stage-0 warm starts are built by the
    first run that needs them while the others train (a file lock makes the rest wait for it)."""
    for spec in specs:
        dataset = spec.config.dataset
        for name in (dataset.train_split, dataset.eval_split):
            splits.get(dataset, name)


def missing_warm_starts(spec: RunSpec) -> list[str]:
    """Cache directories of the stage-0 warm starts ``spec`` needs that are not built yet."""
    from harness.methods.registry import get_method

    info = get_method(spec.config.method.name)
    params = info.params.model_validate(spec.config.method.params)
    return [str(start.directory()) for start in info.cls.warm_starts(params, dataset_key(spec.config.dataset))
            if not start.built()]


def warm_starts_first(pending: list[tuple[int, RunSpec]]) -> list[tuple[int, RunSpec]]:
    """``pending`` with, first, one run per stage-0 warm start still to build: that run builds it
    while the other processes train runs that need none, instead of all waiting on it later."""
    first: list[tuple[int, RunSpec]] = []
    seen: set[str] = set()
    for item in pending:
        missing = set(missing_warm_starts(item[1])) - seen
        if missing:
            seen |= missing
            first.append(item)
    chosen = {number for number, _ in first}
    return first + [item for item in pending if item[0] not in chosen]


def write_manifest(plan: Plan) -> None:
    """experiment.json: the experiment's settings and its runs, those of earlier invocations
    (still on disk) first, so a partial re-run (a --set, a smaller grid) adds to the report
    instead of replacing it. Delete runs/<id> to drop a run from it. Invocations on one output
    take turns (a file lock) and each run's folder is made here, so two started together list
    each other's runs; an unreadable file is rebuilt from the run folders on disk."""
    plan.output.mkdir(parents=True, exist_ok=True)
    path = plan.output / "experiment.json"
    with file_lock(plan.output / ".experiment.lock"):
        earlier = _earlier_runs(path, plan.output / "runs")
        kept = [run_id for run_id in earlier if (plan.output / "runs" / run_id).is_dir()]
        runs = list(dict.fromkeys([*kept, *(spec.run_id for spec in plan.specs)]))
        for spec in plan.specs:
            (plan.output / "runs" / spec.run_id).mkdir(parents=True, exist_ok=True)
        manifest = {"experiment": mask_all(plan.experiment.model_dump(mode="json")), "runs": runs}
        atomic_write_text(path, json.dumps(manifest, indent=2))


def _earlier_runs(path: Path, runs: Path) -> list[str]:
    """The run ids experiment.json lists; every run folder on disk when it is unreadable."""
    if not path.is_file():
        return []
    try:
        listed = json.loads(path.read_text(encoding="utf-8")).get("runs", [])
        return [str(r) for r in listed]
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError):
        log.warning("%s is unreadable; it is rebuilt from the run folders on disk", path)
        return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def describe_plan(plan: Plan) -> list[dict[str, Any]]:
    """What a dry run prints: one row per run."""
    return [
        {
            "run_id": spec.run_id,
            "label": spec.label,
            "seed": spec.config.seed,
            "status": "finished" if (plan.run_dir(spec) / "result.json").is_file() else "to run",
        }
        for spec in plan.specs
    ]
