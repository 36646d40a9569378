"""An experiment's report built from its results folder alone: experiment.json, each run's
result.json and the rankings beside them, never a model (`harness report`, and the end of
`harness run` and `harness sweep`).

    report = report_experiment(Path("runs/pool_size"))   # -> the report folder (report.md, ...)

A report is refused (``UncommittedCode``) when its runs, or the code writing it, came from a
tree with uncommitted changes: its numbers could not be traced to a commit. ``allow_dirty``
(``--allow-dirty``, or CIR_HARNESS_ALLOW_DIRTY=1) writes it with that said at its foot.
"""

from __future__ import annotations

from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import read_json_object
from harness.core.source import dirty_allowed, git_commit, is_dirty
from harness.evaluation.results import read_result
from harness.evaluation.subsets import write_subsets
from harness.reporting.analysis import read_analysis
from harness.reporting.composition import UNIMODAL, unimodal_flags
from harness.reporting.data import load_groups
from harness.reporting.report import FORMATS, write_report


class UncommittedCode(HarnessError):
    """A report that would rest on uncommitted code, refused without ``--allow-dirty``."""


def uncommitted(results: list) -> str | None:
    """Why a report of ``results`` would rest on uncommitted code (its runs' or its own); None
    when every commit is clean (or unknown: an installed package has none)."""
    dirty = [r.environment.get("git_commit") for r in results if is_dirty(r.environment.get("git_commit"))]
    reasons = []
    if dirty:
        reasons.append(f"{len(dirty)} of {len(results)} runs were made from a tree with uncommitted changes "
                       f"({', '.join(sorted(set(dirty)))})")
    if is_dirty(git_commit()):
        reasons.append(f"the code writing the report has uncommitted changes ({git_commit()})")
    return "; ".join(reasons) or None


def report_experiment(output: Path, out: Path | None = None, formats: list[str] | None = None,
                      allow_dirty: bool = False) -> Path:
    """(Re)build the report of ``<output_dir>/<experiment>`` from its results JSON files (and
    the rankings beside them) only; refused on uncommitted code unless ``allow_dirty``."""
    output = Path(output)
    experiment, results, manifest_path = _finished(output)
    reason = uncommitted(results)
    if reason and not (allow_dirty or dirty_allowed()):
        raise UncommittedCode(f"report not written: {reason}", file=output, field="--allow-dirty",
                              fix="commit the changes and re-run those runs, or pass --allow-dirty to write it "
                              "with that said in it")
    report = experiment.get("report") or {}
    if out is None:
        out = report_dir(output, report.get("dir"), experiment["experiment"])
    return write_report(results, out, title=experiment["experiment"], description=experiment.get("description", ""),
                        x=report.get("x"), published=report.get("published") or [], runs_dir=output / "runs",
                        baseline=report.get("baseline"), formats=formats or report.get("formats") or FORMATS,
                        analysis=read_analysis(experiment.get("analysis"), str(manifest_path)),
                        unimodal=_unimodal(report.get("unimodal")),
                        notice=f"**Written from uncommitted code (--allow-dirty)**: {reason}; these numbers cannot be "
                        "traced to a commit alone." if reason else "")


def _unimodal(folder: str | None) -> list:
    """The runs of the experiment ``report.unimodal`` names (its image_only and text_only runs)."""
    if not folder:
        return []
    path = Path(folder).expanduser()
    if not (path / "experiment.json").is_file():
        raise HarnessError("no finished experiment here", file=path, field="report.unimodal",
                           fix="name an <output>/<experiment> folder that holds image_only and text_only runs")
    _, results, _ = _finished(path)
    return [g for g in load_groups(results, path / "runs") if g.method in UNIMODAL]


def write_experiment_subsets(output: Path, k: int, out: Path | None = None) -> tuple[Path, int, int]:
    """`harness subsets`: the composition-required flags of an experiment folder's queries from its
    image_only and text_only runs, written as JSON (default ``<output>/subsets.json``); (path,
    composition-required queries, all queries)."""
    output = Path(output)
    _, results, _ = _finished(output)
    flags = unimodal_flags(load_groups(results, output / "runs"), k)
    if flags is None:
        raise HarnessError("needs finished image_only and text_only runs with their rankings on the same queries",
                           file=output, fix="add {name: image_only} and {name: text_only} to the experiment's grid and "
                           "run it (finished runs are kept)")
    path = write_subsets(Path(out) if out else output / "subsets.json", flags, k, str(output))
    return path, sum(flags.values()), len(flags)


def _finished(output: Path) -> tuple[dict, list, Path]:
    """(the experiment's settings, its finished results, its manifest's path) from experiment.json."""
    manifest_path = output / "experiment.json"
    if not manifest_path.is_file():
        raise HarnessError("no experiment.json here", file=output, fix="give the <output_dir>/<experiment> folder of a "
                                                                       "run")
    manifest = read_json_object(manifest_path, fix="run the experiment again (finished runs are kept and only "
                                "its list of runs is rewritten)")
    if not isinstance(manifest.get("experiment"), dict) or not isinstance(manifest.get("runs"), list):
        raise HarnessError("not an experiment manifest (no experiment settings or run list)", file=manifest_path,
                           fix="run the experiment again (finished runs are kept and only its list of runs is "
                               "rewritten)")
    experiment = manifest["experiment"]
    labels = manifest.get("labels", {})  # a sweep names its rows by trial
    results = [read_result(output / "runs" / run_id / "result.json") for run_id in dict.fromkeys(manifest["runs"])
               if (output / "runs" / run_id / "result.json").is_file()]
    results = [r.model_copy(update={"label": labels[r.run_id]}) if r.run_id in labels else r for r in results]
    if not results:
        raise HarnessError("no finished runs to report", file=output / "runs", fix="run the experiment first")
    return experiment, results, manifest_path


def report_dir(output: Path, configured: str | None, experiment: str) -> Path:
    """Where an experiment's report goes: ``<output>/report`` by default; a relative
    ``report.dir`` sits beside the results root (``<output_dir>/../<dir>/<experiment>``), so
    `harness run X --output /scratch/runs` reports to /scratch/<dir>, never into the working
    directory (with the default output_dir ``runs``: ./<dir>/<experiment>)."""
    if not configured:
        return output / "report"
    folder = Path(configured)
    return (folder if folder.is_absolute() else output.parent.parent / folder) / experiment
