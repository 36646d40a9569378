"""The ``harness`` command line. It only parses, validates and calls the library.

    harness run ablations/reference.yaml [--set train.epochs=2] [--output DIR] [--dry-run]
    harness list
    harness data synthetic --out DIR [--seed N] [--size small]
    harness data check --dataset synthetic --root DIR [--split val]
    harness sweep ablations/sweeps/cir_lvlm.yaml [--set ...]
    harness score RUN_DIR | FILE... [--dataset --root --split]
    harness submit RUN_DIR [--out DIR]
    harness cache [--prune images] [--older-than DAYS]
    harness verdicts reports [--write reports/README.md | --check reports/README.md]
    harness --version

A user mistake prints one line ``error: <file>: <field>: <what is wrong>; fix: <how>`` to
stderr and exits with code 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

try:  # typer 0.29 carries its own copy of click: its usage errors are that copy's
    from typer._click import exceptions as usage
except ImportError:  # pragma: no cover - older typer on click itself
    from click import exceptions as usage

from harness import __version__
from harness.core.errors import HarnessError, RunsFailed, as_user_error
from harness.core.process import configure_process


class Overwrite(str, Enum):
    """What `harness run` does with runs it finds on disk."""

    never = "never"
    only_missing = "only-missing"
    always = "always"


class _OneLineUsageErrors(TyperGroup):
    """The command group whose usage errors (an unknown option, a value out of range, a missing
    argument) are one line on stderr naming the option and pointing at --help, exit code 2, like
    every other input error; help pages and the commands' own exit codes are unchanged."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except usage.NoArgsIsHelpError as error:  # `harness` alone: the help page, as before
            error.show()
            sys.exit(error.exit_code)
        except usage.UsageError as error:
            command = error.ctx.command_path if error.ctx is not None else "harness"
            message = " ".join(error.format_message().split())
            typer.echo(f"error: {message}; fix: see `{command} --help`", err=True)
            sys.exit(2)
        except usage.ClickException as error:
            typer.echo(f"error: {' '.join(error.format_message().split())}", err=True)
            sys.exit(error.exit_code)
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineUsageErrors,
    help="cir-harness: train, evaluate and compare Composed Image Retrieval methods under one loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Generate the embedded benchmark or check a dataset on disk.", no_args_is_help=True)
app.add_typer(data_app, name="data")


#: --debug: let unexpected errors through with their traceback (also CIR_HARNESS_DEBUG=1)
DEBUG = {"on": os.environ.get("CIR_HARNESS_DEBUG", "") not in ("", "0")}


def user_errors(command):
    """The CLI's one boundary: a user-fixable error (HarnessError, or an unreadable file, path or
    argument: harness.core.errors.as_user_error) is one line on stderr and exit code 2 (1 when some
    runs failed); anything else is one line too, exit 1, its traceback behind --debug."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except HarnessError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, usage.ClickException):
            raise
        except Exception as error:
            if DEBUG["on"]:
                raise
            user = as_user_error(error)
            if user is not None:
                typer.echo(f"error: {user}", err=True)
                raise typer.Exit(user.exit_code) from None
            typer.echo(f"error: unexpected {type(error).__name__}: {' '.join(str(error).split())[:500]}; run again "
                       "with --debug for the traceback (and report it if no file of yours is at fault)", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cir-harness {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error (errors are one "
                                        "line otherwise; CIR_HARNESS_DEBUG=1 does the same).")] = False,
) -> None:
    """cir-harness: train, evaluate and compare Composed Image Retrieval methods under one loop."""
    if debug:
        DEBUG["on"] = True
    configure_process()


@app.command()
@user_errors
def run(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (e.g. ablations/reference.yaml).")],
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a setting: --set train.epochs=2 (value parsed as YAML; repeatable)."),
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", help="Results root (default: the config's output_dir).")
    ] = None,
    dry_run: Annotated[bool,
                       typer.Option("--dry-run", help="Validate and list the runs without running them.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    overwrite: Annotated[Overwrite, typer.Option(
        "--overwrite", help="only-missing: skip finished runs, resume interrupted ones from their last checkpoint; "
        "never: also leave unfinished runs alone; always: recompute every run.")] = "only-missing",  # type: ignore[assignment]
    jobs: Annotated[str, typer.Option(
        "--jobs", envvar="CIR_HARNESS_JOBS", show_envvar=True,
        help="Runs trained at once, each in its own process with its share of the CPU cores as torch threads. "
        "auto: one per core on a CPU (tiny models use a second thread poorly: 1.2x more steps on 2 cores), one per "
        "GPU on a GPU machine, each process given its own GPU (more jobs than GPUs share them round-robin). Under "
        "bf16 the last bits of a run depend on its thread count.")] = "auto",
    allow_dirty: Annotated[bool, typer.Option(
        "--allow-dirty", envvar="CIR_HARNESS_ALLOW_DIRTY", help="Write the report even when the runs or the harness "
        "code have uncommitted changes (refused otherwise: its numbers could not be traced to a commit); the report "
        "then says so.")] = False,
) -> None:
    """Train and evaluate every run of an experiment (grid x seeds) and print a results table.

    Each run gets a stable id (hash of its resolved config); its config.yaml, result.json and
    per-query rankings go to <output>/<experiment>/runs/<id>/, and an mlflow sqlite database
    sits beside them. Finished runs are skipped when the command is repeated, and a run that
    was interrupted continues from its last checkpoint (written after every epoch)."""
    from harness.experiments.runner import describe_plan, plan_experiment, run_experiment

    if dry_run:
        plan = plan_experiment(config, set_ or [], output)
        typer.echo(f"experiment {plan.experiment.experiment}: {len(plan.specs)} runs -> {plan.output}")
        for row in describe_plan(plan):
            typer.echo(f"  {row['run_id']}  {row['label']}  seed={row['seed']}  ({row['status']})")
        return
    if jobs != "auto" and not (jobs.isdigit() and int(jobs) >= 1):
        raise HarnessError(f"--jobs {jobs!r} is not a positive number", field="--jobs",
                           fix="give e.g. --jobs 2 or auto")
    run_experiment(config, set_ or [], output, progress=not quiet and sys.stderr.isatty(), echo=typer.echo,
                   overwrite=Overwrite(overwrite).value, jobs="auto" if jobs == "auto" else int(jobs),
                   allow_dirty=allow_dirty)


@app.command()
@user_errors
def plan(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (e.g. ablations/paper/cirr.yaml).")],
    set_: Annotated[Optional[list[str]],
                    typer.Option("--set", help="Override a setting (as in `harness run`).")] = None,
    gpus: Annotated[int, typer.Option("--gpus", min=1, help="World size: processes (GPUs) under torchrun sharing "
                                      "each batch; each holds a full copy of the model.")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="bf16 (a GPU's autocast; what precision: auto "
                                           "gives on one) or fp32.")] = "bf16",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output (bytes).")] = False,
) -> None:
    """Memory per GPU of every run of an experiment: parameters, trained parameters, weights,
    gradients, AdamW state and the activations a training step keeps, for the batch share (or
    micro-batch) of one GPU. Activations are measured on this machine from each checkpoint's
    config at one and two layers (random weights, no weight file read) and extrapolated to the
    full depth; captions as long as the method reads. Transient buffers of the backward pass
    and allocator slack come on top. Try train.micro_batch_size and train.gradient_checkpointing.
    A run that cannot be built (a missing checkpoint folder) is listed and the others planned
    (exit 1); progress goes to stderr."""
    from harness.experiments.executor import plan_experiment
    from harness.measure.memory_estimate import HEADER, estimate_specs, table_row

    if precision not in ("bf16", "fp32"):
        raise HarnessError(f"--precision {precision!r} is not bf16 or fp32", field="--precision",
                           fix="give bf16 or fp32")
    experiment = plan_experiment(config, set_ or [])
    estimates, failures = estimate_specs(experiment.specs, gpus, precision, lambda line: typer.echo(line, err=True))
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in estimates], indent=2))
    elif estimates:
        typer.echo(f"experiment {experiment.experiment.experiment}: {gpus} GPU(s), {precision}; per GPU")
        typer.echo("| " + " | ".join(HEADER) + " |")
        typer.echo("|" + "---|" * len(HEADER))
        for estimate in estimates:
            typer.echo("| " + " | ".join(table_row(estimate)) + " |")
    if failures:
        planned = len(failures) + len(estimates)
        count = f"{len(failures)} of {planned} runs could not be planned (first: {failures[0][0]})"
        if estimates or not all(user for _, user in failures):
            raise RunsFailed(count, fix="the table holds the others; fix the cause and plan again")
        raise HarnessError(count)


@app.command()
@user_errors
def pretrain(
    config: Annotated[Path, typer.Argument(help="Experiment YAML whose runs start from stage 0.")],
    set_: Annotated[Optional[list[str]],
                    typer.Option("--set", help="Override a setting (as in `harness run`).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the cache has it.")] = False,
) -> None:
    """Stage 0: warm-start the tiny backbones on the embedded benchmark (a CLIP contrastive
    against scene descriptions; for CIR-LVLM then connector + LM describe images). Builds what
    every run of CONFIG starts from. Cached by (dataset, backbone, connector, settings, seed)
    and reused by every run; `harness run` triggers it by itself when needed."""
    from harness.experiments.executor import build_warm_starts, plan_experiment

    if not build_warm_starts(plan_experiment(config, set_ or []), typer.echo, force, sys.stderr.isatty()):
        typer.echo("no run of this experiment starts from stage 0 (tiny backbones with stage 0 enabled do)")


@app.command()
@user_errors
def report(
    experiment_dir: Annotated[Path, typer.Argument(help="The <output_dir>/<experiment> folder of a run.")],
    out: Annotated[Optional[Path],
                   typer.Option("--out", help="Report folder (default: the experiment's report.dir).")] = None,
    format_: Annotated[Optional[str], typer.Option(
        "--format", help="Comma-separated: md (report.md), html (one self-contained page), tex (booktabs tables and "
        "a standalone report.tex), csv (results.csv and one CSV per table). Default: the experiment's "
        "report.formats.")] = None,
    allow_dirty: Annotated[bool, typer.Option(
        "--allow-dirty", envvar="CIR_HARNESS_ALLOW_DIRTY", help="Write the report even when the runs or the harness "
        "code have uncommitted changes (refused otherwise: its numbers could not be traced to a commit); the report "
        "then says so.")] = False,
) -> None:
    """Rebuild an experiment's report from its results JSON files and rankings alone (offline):
    main, statistics, ablation, efficiency, edit-type and diagnostics tables; 95% bootstrap
    intervals over queries and paired tests against report.baseline; figures as PNG and PDF.
    `harness run` and `harness sweep` write the same report when they end."""
    from harness.reporting.build import report_experiment

    formats = [part.strip() for part in format_.split(",") if part.strip()] if format_ else None
    typer.echo(f"report: {report_experiment(experiment_dir, out, formats, allow_dirty)}")


@app.command()
@user_errors
def verdicts(
    reports: Annotated[Path, typer.Argument(help="A folder of reports, one sub-folder per experiment (reports/).")],
    write: Annotated[Optional[Path], typer.Option("--write", help="Rewrite the generated section of this Markdown "
                                                  "file (between its two verdict marker lines).")] = None,
    check: Annotated[Optional[Path], typer.Option("--check", help="Exit 1 when this file's generated section is not "
                                                  "what the committed tables give.")] = None,
    ablations: Annotated[Optional[Path], typer.Option("--ablations", help="The experiment files, for tables written "
                                                      "before they recorded their endpoint (default: "
                                                      "REPORTS/../ablations).")] = None,
) -> None:
    """The claims table of a reports folder, generated: one row per confirmatory contrast of each
    report's pre-registered analysis (tables/preregistered.csv), its verdict as the report gave it
    (the regime gate applied), every number read from that table; reports without an analysis
    are listed as exploratory. Prints it, or puts it in a README (--write) or checks it (--check)."""
    from harness.reporting.verdicts import collect, current_block, replace_block, verdicts_block

    block = verdicts_block(*collect(reports, ablations))
    if write is not None:
        changed = replace_block(write, block)
        typer.echo(f"{write}: verdicts {'rewritten' if changed else 'already current'}")
    elif check is not None:
        if current_block(check) != block:
            typer.echo(f"error: {check}: its generated verdicts differ from the committed tables; fix: run "
                       f"`harness verdicts {reports} --write {check}`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{check}: verdicts match the committed tables")
    else:
        typer.echo(block)


@app.command()
@user_errors
def bench(
    methods: Annotated[Optional[list[str]], typer.Option("--methods", help="Methods to measure (repeatable; default: "
                                                         "all eight; --quick: image_only and sum).")] = None,
    out: Annotated[Path,
                   typer.Option("--out",
                                help="Folder of <hardware>-<precision>.json and .md.")] = Path("reports/bench"),
    retrieval: Annotated[bool, typer.Option("--retrieval", help="Also time exact top-50 retrieval over galleries of "
                                            "1k, 10k, 100k and 1M random unit vectors (dim 256, 1k queries), blockwise "
                                            "torch against faiss.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Seconds, not minutes: small methods, benchmark and galleries, "
                                        "few repeats (a smoke test; its figures are not for a report).")] = False,
    threads: Annotated[Optional[int],
                       typer.Option("--threads", min=1, help="torch CPU threads (default: torch's).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto (bf16 autocast where the hardware multiplies "
                                           "bf16 natively), fp32 or bf16: as train.precision / "
                                           "eval.precision.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Measure each method on this machine: ms/query p50 / p95 at batch 1 and at the eval batch
    (after warm-up, synchronised on a GPU), queries/s, parameters, FLOPs per query, model FLOP
    utilisation against the machine's measured matmul peak, peak memory, and the loop
    efficiency of evaluation and training (full loop over bare model). Written to
    <out>/<hardware>.json and .md."""
    from harness.measure.bench import BenchConfig, run_bench, write_bench

    if precision not in ("auto", "fp32", "bf16"):
        raise HarnessError(f"--precision {precision!r} is not one of auto, fp32, bf16", field="--precision",
                           fix="give auto, fp32 or bf16")
    overrides: dict = {"retrieval": retrieval, "threads": threads, "device": device, "precision": precision}
    if methods:
        overrides["methods"] = methods
    config = BenchConfig.quick(**overrides) if quick else BenchConfig(**overrides)
    report = run_bench(config, progress=not quiet and sys.stderr.isatty(), echo=typer.echo)
    json_path, md_path = write_bench(report, out)
    typer.echo(f"bench: {md_path} and {json_path}")


@app.command()
@user_errors
def sweep(
    config: Annotated[Path, typer.Argument(help="Experiment YAML with a sweep: section (see ablations/sweeps/).")],
    set_: Annotated[Optional[list[str]],
                    typer.Option("--set", help="Override a setting (as in `harness run`).")] = None,
    output: Annotated[Optional[Path],
                      typer.Option("--output", help="Results root (default: the config's output_dir).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes on one study (needs "
                                         "sweep.storage: journal or an RDB URL); the missing trials are split among "
                                         "them.")] = 1,
    allow_dirty: Annotated[bool, typer.Option(
        "--allow-dirty", envvar="CIR_HARNESS_ALLOW_DIRTY", help="Write the report even when the runs or the harness "
        "code have uncommitted changes (refused otherwise: its numbers could not be traced to a commit); the report "
        "then says so.")] = False,
) -> None:
    """Search the settings in the file's sweep.space with optuna: each trial is a run of the
    experiment, reported per epoch so bad trials are pruned (one objective), several objectives
    give a Pareto front. The study is stored in <output>/<experiment>/optuna.db (or
    sweep.storage); re-running continues it, keeping finished trials and retrying interrupted
    ones. Each trial is a nested mlflow run."""
    from harness.experiments.sweep import run_sweep

    run_sweep(config, set_ or [], output, progress=not quiet and sys.stderr.isatty() and workers == 1, echo=typer.echo,
              workers=workers, allow_dirty=allow_dirty)


@app.command("eval")
@user_errors
def eval_(
    run_dir: Annotated[Path, typer.Argument(help="A finished run's folder: <output>/<experiment>/runs/<run id>.")],
    split: Annotated[str, typer.Option("--split", help="The split of the run's dataset to evaluate on (CIRR: val, "
                                       "test1; FashionIQ / Shoes: val, test; CIRCO: val, test).")] = "test1",
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="An evaluation setting, eval.KEY=VALUE "
                                                      "(repeatable), e.g. eval.max_queries=500 or "
                                                      "eval.batch_size=64.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Evaluate a finished run's checkpoint on another split, without training again: the
    method is rebuilt from the run's config.yaml, its trained weights loaded from
    checkpoints/last, and the split evaluated under the run's protocol. A split other than the
    run's own is evaluated whole (a smoke run's eval.max_queries is not inherited; it says so);
    --set changes eval.* settings. Results go to
    <run>/eval/<split>/ (config.yaml, result.json, rankings.jsonl.gz), a run folder of its own
    for `harness score` and `harness submit`; the run's result and the reports are untouched.
    Under torchrun (`torchrun --nproc-per-node N -m harness eval RUN`) the ranks share the evaluation."""
    from harness.core import distributed
    from harness.experiments.finished_run import evaluate_run, evaluation_dir
    from harness.experiments.runner import headline

    result = evaluate_run(run_dir, split, progress=not quiet and sys.stderr.isatty(), settings=set_ or [],
                          echo=typer.echo)
    line = headline(result.metrics) if result.metrics else "no targets in this split: submit the rankings"
    if distributed.current().is_main:
        typer.echo(f"{result.label} on {result.dataset} {split}: {line} -> {evaluation_dir(run_dir, split)}")


@app.command()
@user_errors
def score(
    sources: Annotated[list[Path],
                       typer.Argument(help="A run folder, or rankings.jsonl.gz / submission JSON file(s).")],
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="With files: the dataset they rank.")] = None,
    root: Annotated[Optional[Path], typer.Option("--root", help="With files: the dataset folder.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="With files: the split they rank.")] = None,
    protocol: Annotated[Optional[str], typer.Option("--protocol", help="With files: cirr, fashioniq, shoes or circo "
                                                                       "(default: the dataset's).")] = None,
) -> None:
    """Recompute the metrics from saved rankings and the annotations alone, with no model.

    Given a run folder, its rankings are scored with the protocol its result.json records and
    compared with the metrics the evaluation wrote (exit 1 if they differ). Given several run
    folders, each is checked so, and a warning names every provenance field (where the embedding
    is taken, prompt texts, image preprocessing, package versions) in which a run differs from the
    first. Given files (a
    rankings.jsonl.gz, or CIRR recall / recall_subset / CIRCO submission files, merged by pair
    id), --dataset, --root and --split say what they rank. The rankings format is documented
    in harness/evaluation/saved_rankings.py."""
    from harness.evaluation.saved_rankings import differences, score_files
    from harness.experiments.finished_run import read_run_result, score_run

    for source in sources:
        if not source.exists():
            raise HarnessError("no such file or folder", file=source,
                               fix="give a run folder, or rankings / submission files")
    if len(sources) > 1 and all(source.is_dir() for source in sources):
        _score_runs(sources)
        return
    run_folder = len(sources) == 1 and sources[0].is_dir()
    if run_folder:
        metrics, by_category = score_run(sources[0])
    else:
        metrics, by_category = score_files(sources, dataset, root, split, protocol)
    for key, value in metrics.items():
        typer.echo(f"{key:24s} {value:8.2f}")
    for category, values in by_category.items():
        typer.echo(f"  {category}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items() if k != "num_queries"))
    if run_folder:
        differing, unchecked = differences(metrics, read_run_result(sources[0]).metrics)
        if differing:
            typer.echo(f"differs from result.json: {', '.join(differing)}", err=True)
            raise typer.Exit(1)
        typer.echo("matches result.json" + (f" (not re-checked, the rankings keep too little: {', '.join(unchecked)})"
                                            if unchecked else ""))


@app.command()
@user_errors
def subsets(
    experiment_dir: Annotated[Path, typer.Argument(help="A finished experiment's folder (<output>/<experiment>) with "
                                                   "image_only and text_only runs.")],
    k: Annotated[int, typer.Option("--k", min=1, help="A query is solved by one modality when image_only or "
                                   "text_only ranks its target within the top k (seed-averaged).")] = 10,
    out: Annotated[Optional[Path], typer.Option("--out", help="Where the JSON goes (default: "
                                                "<experiment>/subsets.json).")] = None,
) -> None:
    """Write which queries need composition: per pair id, composition_required is true when
    neither the image_only nor the text_only run ranks the target within the top k. Set
    eval.subset_file to the file to score a later experiment on those queries alone (a published
    cleaned subset, as a JSON list of pair ids, works the same way)."""
    from harness.reporting.build import write_experiment_subsets

    path, required, total = write_experiment_subsets(experiment_dir, k, out)
    typer.echo(f"{required} of {total} queries need composition (neither modality alone within the top {k}) -> {path}")


def _score_runs(folders: list[Path]) -> None:
    """`harness score RUN RUN ...`: each run re-scored and checked; provenance differences warned."""
    from harness.evaluation.results import provenance_differences
    from harness.evaluation.saved_rankings import differences
    from harness.experiments.finished_run import read_run_result, score_run

    failed = False
    first = read_run_result(folders[0])
    for folder in folders:
        result = read_run_result(folder)
        differing, _ = differences(score_run(folder)[0], result.metrics)
        failed = failed or bool(differing)
        typer.echo(f"{folder}: " + (f"differs from result.json: {', '.join(differing)}" if differing
                                     else "matches result.json"))
        if folder != folders[0]:
            record = {**result.provenance, "packages": result.environment.get("packages", {})}
            reference = {**first.provenance, "packages": first.environment.get("packages", {})}
            if changed := provenance_differences(reference, record):
                typer.echo(f"warning: {folder} differs from {folders[0]} in how it encodes: {', '.join(changed)}; "
                           "compare their numbers with care", err=True)
    if failed:
        raise typer.Exit(1)


@app.command()
@user_errors
def submit(
    run_dir: Annotated[Path, typer.Argument(help="A finished run on CIRR test1 (or val) or CIRCO, or its evaluation "
                                            "folder from `harness eval` (<run>/eval/test1).")],
    out: Annotated[Optional[Path],
                   typer.Option("--out", help="Folder for the files (default: <run>/submission).")] = None,
) -> None:
    """Write the test-server submission files of a run (CIRR: recall and recall_subset; CIRCO),
    validated first: every query ranked, 50 unique gallery images, no reference in CIRR's lists."""
    from harness.evaluation.submission import write_submissions
    from harness.experiments.finished_run import read_run_split

    _, loaded, entries = read_run_split(run_dir)
    for path in write_submissions(entries, loaded, out or run_dir / "submission", file=str(run_dir)):
        typer.echo(f"wrote {path}")


@app.command()
@user_errors
def cache(
    prune: Annotated[Optional[list[str]], typer.Option("--prune", help="Remove the entries of a kind (repeatable): "
                                                       "images, embeddings, backbones, datasets, searle, scratch, "
                                                       "or all.")] = None,
    older_than: Annotated[Optional[float], typer.Option("--older-than", min=0, help="With --prune: only entries not "
                                                        "written for this many days.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="With --prune: list what would go, remove "
                                          "nothing.")] = False,
    entries_: Annotated[bool, typer.Option("--entries", help="List every entry, not only each kind's "
                                           "total.")] = False,
) -> None:
    """What the cache ($CIR_HARNESS_CACHE, default ~/.cache/cir-harness) holds, by kind, and how
    to free it. Everything in it is derived and rebuilt when needed (generated benchmarks,
    stage-0 warm starts, decoded images, gallery embeddings); results live in the runs folders.
    Do not prune while a run uses the cache."""
    from harness.core.cache import KINDS, cache_entries, gib, totals
    from harness.core.cache import prune as prune_entries
    from harness.core.paths import cache_dir

    kinds = set(KINDS) if "all" in (prune or []) else set(prune or [])
    unknown = sorted(kinds - set(KINDS))
    if unknown:
        raise HarnessError(f"no cache kind {unknown[0]!r}", field="--prune",
                           fix=f"give one of: {', '.join(KINDS)}, all")
    if (older_than is not None or dry_run) and not kinds:
        raise HarnessError("--older-than and --dry-run go with --prune", field="--prune", fix="add --prune KIND")
    found = cache_entries()
    if kinds:
        removed = prune_entries(found, kinds, older_than, dry_run)
        verb = "would remove" if dry_run else "removed"
        for entry in removed:
            typer.echo(f"{verb} {entry.path} ({gib(entry.bytes)})")
        typer.echo(f"{verb} {len(removed)} entries, {gib(sum(e.bytes for e in removed))}")
        return
    typer.echo(f"cache {cache_dir()}: {gib(sum(e.bytes for e in found))}")
    for kind, (count, size) in totals(found).items():
        typer.echo(f"  {kind:<10} {count:>5} entries {gib(size):>12}   {KINDS[kind]}")
        for entry in [e for e in found if e.kind == kind] if entries_ else []:
            typer.echo(f"      {entry.path.name}  {gib(entry.bytes)}")


@app.command("list")
@user_errors
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List every method (family, description, parameters with defaults) and every dataset."""
    from harness.data.datasets import DATASETS
    from harness.methods.registry import list_methods

    methods = list_methods()
    if as_json:
        payload = {
            "methods": [
                {"name": m.name, "family": m.family, "paper": m.paper, "description": m.description,
                 "parameters": m.defaults()}
                for m in methods
            ],
            "datasets": DATASETS,
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    typer.echo("Methods")
    for info in methods:
        typer.echo(f"  {info.name}  [{info.family}]  {info.description}")
        if info.paper:
            typer.echo(f"      paper: {info.paper}")
        for name, default, description in _parameter_rows(info.params):
            about = f"  # {description}" if description else ""
            typer.echo(f"      {name} = {default!r}{about}")
    typer.echo("Datasets")
    for name, about in DATASETS.items():
        typer.echo(f"  {name}  {about}")


def _parameter_rows(model, prefix: str = ""):
    """(dotted name, default, description) of every parameter, nested models expanded."""
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            yield from _parameter_rows(type(default), f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", default, field.description


class Size(str, Enum):
    tiny = "tiny"
    small = "small"
    default = "default"
    large = "large"


@data_app.command("synthetic")
@user_errors
def data_synthetic(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (must not exist or be empty).")],
    seed: Annotated[int, typer.Option("--seed", help="Generator seed; the same seed gives byte-identical files.")] = 0,
    size: Annotated[
        Size, typer.Option("--size", help="Preset query counts train/val/test1: tiny 200/100/50, small 2000/500/200, "
                           "default 10000/1000/500, large 40000/3000/1000.")
    ] = Size.default,
    image_size: Annotated[int, typer.Option("--image-size", help="Image side in pixels.")] = 64,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Rendering processes.")] = 2,
    version: Annotated[int, typer.Option("--version", help="Generator version: 3 (the default: a joint-reading "
                                         "certificate by construction, mirror pairs whose targets are each other's "
                                         "twins, groups with no hub), 2 (reference-dependent families, a grid "
                                         "certificate) or 1 (the first benchmark); 1 and 2 stay byte-identical.")] = 3,
) -> None:
    """Generate the embedded CIR benchmark in CIRR's layout (captions/, image_splits/, PNGs)
    plus scene_graphs.json and per-query edit types (version 2: programs and certificates)."""
    import time

    from pydantic import ValidationError

    from harness.data.synthetic.generate import SIZE_PRESETS, SyntheticConfig, write_benchmark

    train_n, val_n, test_n = SIZE_PRESETS[size.value]
    try:
        config = SyntheticConfig(seed=seed, num_train=train_n, num_val=val_n, num_test=test_n, image_size=image_size,
                                 version=version)
    except ValidationError as error:
        problem = error.errors()[0]
        option = "--" + str(problem["loc"][0]).replace("_", "-")
        raise HarnessError(problem["msg"], field=option, fix="see `harness data synthetic --help`") from None
    start = time.perf_counter()
    try:
        write_benchmark(config, out, workers=workers, progress=sys.stderr.isatty())
    except FileExistsError:
        raise HarnessError("output folder exists and is not empty", file=out, fix="choose a new --out folder") from None
    manifest = json.loads((out / "synthetic.json").read_text())
    counts = ", ".join(f"{split}: {c['queries']} queries / {c['images']} images" for split,
                       c in manifest["counts"].items())
    typer.echo(f"wrote {out} in {time.perf_counter() - start:.1f}s ({counts})")


@data_app.command("check")
@user_errors
def data_check(
    dataset: Annotated[str, typer.Option("--dataset", help="Dataset name (see `harness list`).")],
    root: Annotated[Path, typer.Option("--root", help="Local dataset folder.")],
    split: Annotated[Optional[list[str]], typer.Option("--split", help="Split(s) to check (default: all).")] = None,
) -> None:
    """Check a dataset on disk: counts, missing or unreadable images, duplicate ids, targets
    or set members absent from the split. Exits 1 when a problem is found."""
    from harness.data.check import check_dataset

    if check_dataset(dataset, root, split, typer.echo, progress=sys.stderr.isatty()):
        raise typer.Exit(1)


def entry_point() -> None:
    app()


if __name__ == "__main__":
    entry_point()
