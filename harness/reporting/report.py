"""The experiment report, built only from results JSON files and the rankings beside them (so
it can be rebuilt offline at any time, and is the same each time).

    write_report(results, out_dir, title="pool_size", x="method.params.pool_size", runs_dir=runs)
    -> out_dir/report.md, report.html (self-contained), report.tex, results.csv,
       tables/<table>.{tex,csv}, <figure>.{png,pdf}

Rows are grid points (mean ± std over seeds). Statistics are over queries: 95% bootstrap
intervals and paired tests against a named baseline (harness.reporting). The report states
the protocol, the seeds, the number of queries and the machine.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text
from harness.core.settings import flatten
from harness.evaluation.protocol import TABLE_METRICS, title
from harness.evaluation.results import RunResult, row_labels
from harness.reporting.analysis import AnalysisConfig, analysis_table, verdicts
from harness.reporting.attention import attention_table
from harness.reporting.composition import composition_table, unimodal_flags
from harness.reporting.data import Group, config_value, load_groups
from harness.reporting.gate import gate_lines, regime_gate
from harness.reporting.intent_sections import error_kinds_table, intent_table
from harness.reporting.sections import (
    ablation_table,
    compare,
    diagnostics_table,
    edit_type_table,
    efficiency_table,
    headline_metrics,
    main_table,
    seed_statistics_table,
    statistics_table,
    summary,
)
from harness.reporting.specificity import specificity_table
from harness.reporting.stats import RESAMPLES
from harness.reporting.tables import Cell, Table, latex_escape

PLOT_METRICS = ("recall_at_1", "recall_at_5", "recall_subset_at_1")
#: The k of the composition gap: a query is solved by one modality when a unimodal run ranks its
#: target within the top k; 10, the R@10 both CIRR's and FashionIQ's protocols report (an
#: assumption: the published audits' own criteria differ in detail; `harness subsets --k` changes it).
COMPOSITION_K = 10


def infer_swept_parameter(results: Sequence[RunResult]) -> str | None:
    """The one method parameter that varies among the runs of the most frequent method."""
    if not results:
        return None
    main = _main_method(results)
    values: dict[str, set[str]] = defaultdict(set)
    for result in results:
        if result.method == main:
            for key, value in flatten(result.config.get("method", {}), "method.").items():
                values[key].add(repr(value))
    varying = [key for key, seen in values.items() if len(seen) > 1]
    return varying[0] if len(varying) == 1 else None


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def csv_text(results: Sequence[RunResult]) -> str:
    stream = io.StringIO()
    writer = csv.writer(stream)
    keys = [key for key in TABLE_METRICS if any(key in r.metrics for r in results)]  # the dataset's own metrics
    writer.writerow(["run_id", "label", "method", "seed", *keys, "params_total", "params_trainable",
                     "ms_per_query", "train_s"])
    for r, label in zip(results, row_labels(results), strict=True):
        writer.writerow([r.run_id, label, r.method, r.seed, *(r.metrics.get(k, "") for k in keys),
                         r.parameters["total"], r.parameters["trainable"],
                         f"{r.timings['encode_and_score_ms_per_query']:.3f}", f"{r.train.get('seconds', 0):.1f}"])
    return stream.getvalue()


def _main_method(results: Sequence[RunResult]) -> str | None:
    """The method with the most grid points (the one under study), or None when methods tie."""
    labels: dict[str, set[str]] = defaultdict(set)
    for r in results:
        labels[r.method].add(r.label)
    most = max(len(v) for v in labels.values())
    leaders = [name for name, v in labels.items() if len(v) == most]
    return leaders[0] if len(leaders) == 1 and most > 1 else None


def _ranking(groups: dict[str, list[RunResult]], metric: str) -> str:
    """'A 12.3 ± 0.5 > B 10.1 ± 0.2 ≈ C 9.9 ± 0.4': '>' where the gap exceeds the sum of the two
    seed standard deviations, '≈' where it does not; then the pairs not resolved."""
    stats = {label: _mean_std([r.metrics.get(metric, 0.0) for r in group]) for label, group in groups.items()}
    ranked = sorted(stats, key=lambda label: -stats[label][0])

    def resolved(a: str, b: str) -> bool:
        return abs(stats[a][0] - stats[b][0]) > stats[a][1] + stats[b][1]

    chain = f"{ranked[0]} {stats[ranked[0]][0]:.1f} ± {stats[ranked[0]][1]:.1f}"
    for previous, label in zip(ranked, ranked[1:], strict=False):
        chain += f" {'>' if resolved(previous, label) else '≈'} {label} {stats[label][0]:.1f} ± {stats[label][1]:.1f}"
    pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
    clear = [f"{a} > {b}" for a, b in pairs if resolved(a, b)]
    open_pairs = [f"{a} vs {b}" for a, b in pairs if not resolved(a, b)]
    summary = f" {len(clear)} of {len(pairs)} pairs differ by more than the seed spread"
    if not clear or not open_pairs:
        summary += "."
    elif len(clear) <= len(open_pairs):  # name the shorter list
        summary += f": {', '.join(clear)}."
    else:
        summary += f"; not resolved: {', '.join(open_pairs)}."
    return chain + "." + (summary if len(ranked) > 1 else "")


def findings(results: Sequence[RunResult], metrics: Sequence[str] = ("recall_at_1", "recall_subset_at_1")) -> list[str]:
    """Plain sentences. With one method under study (the one with most grid points), its best
    grid point against every other method; otherwise every run ranked, best first.

    A difference is called resolved only when it exceeds the sum of the two seed standard
    deviations (a rough screen; confidence intervals and paired tests come with the full
    report)."""
    main = _main_method(results)
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for r, label in zip(results, row_labels(results), strict=True):
        groups[label].append(r)
    metrics = [m for m in metrics if any(m in r.metrics for r in results)]  # e.g. no Rsubset on Shoes
    if not metrics:
        return []
    lines = ["Findings (generated; '>' = gap larger than the sum of the two seed std, '≈' = within it):", ""]
    ours = {label: group for label, group in groups.items() if group[0].method == main}
    others = {label: group for label, group in groups.items() if group[0].method != main}
    if main is None or not others:
        for metric in metrics:
            lines.append(f"- {title(metric)}, best first: {_ranking(groups, metric)}")
        return [*lines, ""]
    for metric in metrics:
        best_label = max(ours, key=lambda label: _mean_std([r.metrics.get(metric, 0.0) for r in ours[label]])[0])
        best, best_std = _mean_std([r.metrics.get(metric, 0.0) for r in ours[best_label]])
        spread = [_mean_std([r.metrics.get(metric, 0.0) for r in group])[0] for group in ours.values()]
        lines.append(f"- {title(metric)}: {main} ranges {min(spread):.1f}-{max(spread):.1f} over its "
                     f"{len(ours)} settings (best {best_label}: {best:.1f} ± {best_std:.1f}).")
        for label, group in others.items():
            mean, std = _mean_std([r.metrics.get(metric, 0.0) for r in group])
            relation = "above" if best > mean else "below"
            resolved = abs(best - mean) > best_std + std
            lines.append(f"  - {relation} {label} ({mean:.1f} ± {std:.1f}) by {abs(best - mean):.1f}"
                         + ("" if resolved else ", within the seed spread (not resolved)"))
    lines.append("")
    return lines


FORMATS = ("md", "html", "tex", "csv")


@dataclass
class Report:
    """Everything one report shows, rendered by ``markdown``, ``html`` and ``latex``."""

    title: str
    description: str
    setup: str
    summary: list[str]
    tables: list[Table]
    findings: list[str]
    notes: list[str]
    figures: list[tuple[str, str]]  # (stem, caption)
    machine: str
    published: Table | None = None
    gate: list[str] = field(default_factory=list)  # the regime gate's lines (harness.reporting.gate)


def build_report(results: Sequence[RunResult], out: Path, title: str, description: str = "", x: str | None = None,
                 published: Sequence[dict[str, Any]] = (), runs_dir: Path | None = None,
                 baseline: str | None = None, analysis: AnalysisConfig | None = None,
                 unimodal: Sequence[Group] = ()) -> Report:
    """Compute every table and draw every figure (into ``out``) of the report; the pre-registered
    ``analysis`` first, when the experiment declares one."""
    from harness.reporting import plots  # matplotlib only when a report is drawn
    groups = load_groups(results, runs_dir)
    if baseline is not None and baseline not in {g.label for g in groups}:
        raise HarnessError(f"report.baseline {baseline!r} is not a run of this experiment", field="report.baseline",
                           fix=f"use one of: {', '.join(g.label for g in groups)}")
    reference = next((g for g in groups if g.label == baseline), groups[0])
    x = x or infer_swept_parameter(results)
    main = _main_method(results)
    headline = headline_metrics(groups)
    tested = [*headline, *(["recall_joint_at_1"] if all(g.mean_std("recall_joint_at_1") for g in groups) else [])]
    comparisons = [c for m in tested if (c := compare(groups, reference, m)) is not None]
    primary = analysis.metric if analysis else headline[0] if headline else "recall_at_1"
    checks = regime_gate(groups, primary)  # on the pre-registered endpoint where there is one
    tables = [*([analysis_table(verdicts(groups, analysis, checks), analysis)] if analysis else []),
              main_table(groups)]
    if comparisons:
        tables.append(statistics_table(groups, comparisons))
        tables += [t for t in (seed_statistics_table(comparisons),) if t is not None]
    tables += [t for t in (ablation_table(groups, main, x, headline or ["recall_at_1"]), _composition(groups, unimodal))
               if t is not None]
    tables.append(efficiency_table(groups))
    tables += [t for t in (edit_type_table(groups, headline[0] if headline else "recall_at_1"),
                           diagnostics_table(groups), intent_table(groups), error_kinds_table(groups),
                           attention_table(groups), specificity_table(groups)) if t is not None]
    figures = []
    metrics = [m for m in PLOT_METRICS if any(g.mean_std(m) for g in groups)]
    if x is not None:
        stem = plots.recall_vs_parameter(groups, x, main, metrics, out)
        if stem:
            figures.append((stem, f"Recall against {x.split('.')[-1].replace('_', ' ')}: seed mean; 95% band drawing "
                                  "seeds, then queries (queries alone with one seed); other methods as horizontal "
                                  "lines; dotted: a random ranking's expected recall (chance)."))
    drawn = [
        (plots.pareto(groups, headline[0] if headline else "recall_at_1", out),
         "Accuracy against latency; the red steps join the runs no other run beats on both."),
        (plots.by_edit_type(groups, headline[0] if headline else "recall_at_1", out), "Recall per edit type of the "
                                                                                      "query."),
        (plots.intent_vs_retention(groups, out),
         "Intent fidelity against visual retention of each run's top-1 image (the target scores 100 on both)."),
        (plots.top1_kinds(groups, out), "What each run's top-1 image is: the target, an intent distractor (a "
         "misreading of the caption), a retention distractor (the edit and one unrequested change), a topped-up group "
         "member, or an image outside the query's group."),
        (plots.prompt_usage(groups, out), "Prompt-pool usage on the evaluation queries (seed 0)."),
        (plots.attention_shares(groups, out), _attention_caption(groups)),
        (plots.retrieval_examples(groups, out), "Retrieval examples (seed 0): the target is framed in green."),
    ]
    figures += [(stem, caption) for stem, caption in drawn if stem]
    first = results[0]
    queries = first.num_queries
    seeds = sorted({r.seed for r in results})
    version = config_value(first.config, "dataset.synthetic.version") if first.dataset == "synthetic" else None
    named = f"`{first.dataset}`" + (f" version {version}" if version else "")
    setup = (f"Dataset {named} ({first.split} split: {queries} queries, {first.num_gallery} gallery images); "
             f"protocol: {first.protocol.description()}; seeds {', '.join(map(str, seeds))}. Metrics in %, mean ± std "
             f"over seeds unless marked; intervals are 95% bootstrap intervals over the {queries} queries "
             f"({RESAMPLES} resamples)." + _perception_line(groups) + _machine_caveat(results))
    hardware = first.environment.get("hardware", {})
    machine = (f"Machine: {hardware.get('cpu')}, {hardware.get('cpu_cores')} cores, {hardware.get('torch_threads')} "
               f"torch threads, device {hardware.get('gpu') or hardware.get('device')}; commit "
               f"{first.environment.get('git_commit')}.")
    gate = gate_lines(checks)
    return Report(title, description, setup, summary(comparisons, groups), tables, findings(results),
                  _notes(results), figures, machine, _published(published), gate)


def _composition(groups: Sequence[Group], unimodal: Sequence[Group] = (), k: int = COMPOSITION_K) -> Table | None:
    """The composition-gap table where the experiment has image_only and text_only runs, or
    ``unimodal`` (another experiment's, report.unimodal) has them on the same queries."""
    flags = unimodal_flags(groups, k)
    if flags is None and unimodal:
        labels = {g.label for g in groups}
        groups = [*groups, *(g for g in unimodal if g.label not in labels)]
        flags = unimodal_flags(groups, k)
        table = composition_table(groups, flags, k) if flags else None
        if table is None:
            raise HarnessError("its image_only and text_only runs do not rank the same queries as this experiment's "
                               "runs", field="report.unimodal", fix="name an experiment on the same dataset and split")
        return table
    return composition_table(groups, flags, k) if flags else None


def _perception_line(groups: Sequence[Group]) -> str:
    """What each run's fusion sees of an image: the evaluation's linear perception probe (percent
    of grid cells read right: occupancy, and shape / colour / size of the occupied ones; mean over
    seeds), where the runs recorded it."""
    parts = []
    for group in groups:
        probes = [r.method_statistics.get("perception") for r in group.runs]
        probes = [p for p in probes if isinstance(p, dict)]
        if probes:
            means = [statistics.fmean(float(p[name]) for p in probes) for name in ("cell", "shape", "colour", "size")]
            parts.append(f"{group.label} {' / '.join(f'{v:.0f}' for v in means)}")
    if not parts:
        return ""
    return (" Perception probe of what each run's fusion reads (linear read-out of every grid cell on held-out "
            "gallery images, % right: occupied / shape / colour / size): " + "; ".join(parts) + ".")


def _machine_caveat(results: Sequence[RunResult]) -> str:
    """Which digits of the runs reproduce where: bit for bit on one machine and thread count;
    across CPUs, under bf16 autocast, per-run metrics moved by up to 1.6 points (measured,
    docs/reliability.md)."""
    same = (" Which digits reproduce: a run id gives the same metrics bit for bit on the same CPU model, torch build "
            "and thread count (these runs' are named below).")
    if any(r.environment.get("precision", {}).get("train") == "bf16" or
           r.environment.get("precision", {}).get("eval") == "bf16" for r in results):
        return same + (" Runs under bf16 autocast depend on the CPU's kernels: the main job's run ids on an AMD EPYC "
                       "and an Intel Xeon gave per-run metrics up to 1.6 points apart, more than the seeds' spread "
                       "(docs/reliability.md), so compare runs from one machine and read a difference below its MDE "
                       "as unresolved; precision: fp32 is the portable choice.")
    return same + (" These runs are fp32, the portable choice: other CPUs round their sums differently only in the "
                   "last bits (not measured across machines here), so compare across machines within the seeds' "
                   "spread.")


def _attention_caption(groups: Sequence[Group]) -> str:
    """Figure 5's caption; it says where a layout puts the task prompt before the task input."""
    caption = ("Attention on visual and caption tokens from the soft prompt, the task prompt and [EMB] (the paper's "
               "Figure 5), seed 0; black ticks: uniform causal attention over the same tokens, the reference a share "
               "must clear to say the prompt looks there (table 'Figure 5 against uniform attention').")
    first = [g.label for g in groups if config_value(g.runs[0].config,
                                                     "method.params.instruction_order") == "task_first"]
    if first:
        caption += (f" In {', '.join(first)} (instruction_order: task_first) the task prompt precedes both, so causal "
                    "attention gives it none.")
    return caption


def _notes(results: Sequence[RunResult]) -> list[str]:
    lines = []
    usage = [(r.label, r.seed, r.method_statistics) for r in results if "prompt_usage" in r.method_statistics]
    if usage:
        lines += ["Prompt-pool usage on the evaluation queries (selections per prompt; effective number = "
                  "exp(entropy)):", ""]
        lines += [f"- {label}, seed {seed}: {stats['prompt_usage']} (effective {stats['prompts_used_effective']:.1f})"
                  for label, seed, stats in usage]
        lines.append("")
    inversions = {r.label: r.method_statistics["oti"] for r in results if "oti" in r.method_statistics}
    if inversions:
        lines += ["Optimisation-based textual inversion (run once per backbone, cached, shared by the seeds; "
                  "not in 'train s'):", ""]
        lines += [f"- {label}: {oti['images']} images x {oti['steps']} steps in {oti['seconds']:.0f} s"
                  for label, oti in inversions.items()]
        lines.append("")
    return lines


def _published(rows: Sequence[dict[str, Any]]) -> Table | None:
    if not rows:
        return None
    keys = [key for key in TABLE_METRICS if any(key in row["metrics"] for row in rows)]
    keys += sorted({key for row in rows for key in row["metrics"]} - set(keys))
    return Table("Published numbers (not measured here)", ["method", *(title(k) for k in keys), "source"],
                 [[Cell(row["method"]), *(Cell(f"{row['metrics'][k]:.2f}", row["metrics"][k]) if k in row["metrics"]
                                          else Cell("-") for k in keys), Cell(row["source"])] for row in rows],
                 caption="For scale only: other models, data and hardware than the runs above.", name="published",
                 csv_header=["method", *keys, "source"])


#: What a report with a pre-registered analysis says of everything after it.
EXPLORATORY = ("**Everything below is exploratory**: tests chosen after the fact, p-values adjusted within each table "
               "at most; only the pre-registered analysis above carries a verdict.")


def _preregistered_first(tables: Sequence[Table]) -> tuple[list[Table], list[Table]]:
    """(the pre-registered analysis table, if any; the others), so it is shown before the rest."""
    return [t for t in tables if t.name == "preregistered"], [t for t in tables if t.name != "preregistered"]


def markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", report.description, "", report.setup, "",
             *(["## Regime gate", "", *report.gate, ""] if report.gate else [])]
    first, rest = _preregistered_first(report.tables)
    for table in first:
        lines += [f"## {table.title}", "", table.markdown(), "", table.caption, "", EXPLORATORY, ""]
    lines += report.summary
    for table in rest:
        lines += [f"## {table.title}", "", table.markdown(), "", table.caption, ""]
    if report.published is not None:
        lines += [f"## {report.published.title}", "", report.published.caption, "", report.published.markdown(), ""]
    lines += report.findings + report.notes
    for stem, caption in report.figures:
        lines += [f"![{stem}]({stem}.png)", "", f"*{caption}* ([PDF]({stem}.pdf))", ""]
    lines.append(report.machine)
    return "\n".join(lines) + "\n"


def latex(report: Report) -> str:
    """A standalone document (article + booktabs) with every table."""
    parts = ["\\documentclass{article}", "\\usepackage{booktabs}", "\\usepackage[margin=2cm]{geometry}",
             "\\begin{document}", f"\\section*{{{latex_escape(report.title)}}}"]
    parts += [table.latex() for table in [*report.tables, *([report.published] if report.published else [])]]
    parts.append("\\end{document}")
    return "\n".join(parts) + "\n"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222;"
         "line-height:1.4}\n"
         "table{border-collapse:collapse;margin:0.5rem 0;font-size:0.85rem}caption{text-align:left;font-weight:bold;"
         "padding:0.3rem 0}\n"
         "th,td{padding:0.2rem 0.5rem;border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child"
         "{text-align:left}\n"
         "thead th{border-bottom:2px solid #444}.note{font-size:0.8rem;color:#555;margin-top:0}"
         "figure{margin:1.5rem 0}\n"
         "figure img{max-width:100%}figcaption{font-size:0.85rem;color:#444}code{background:#f4f4f4;padding:0 0.2rem}")


def html_page(report: Report, out: Path) -> str:
    """One self-contained page: tables inline, figures embedded as data URIs, PDFs linked beside."""
    def paragraph(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    body = [f"<h1>{html.escape(report.title)}</h1>", f"<p>{paragraph(report.description)}</p>",
            f"<p>{paragraph(report.setup)}</p>"]
    if report.gate:
        body.append("<h2>Regime gate</h2><ul>" + "".join(f"<li>{paragraph(line[2:])}</li>" for line in report.gate)
                    + "</ul>")
    first, rest = _preregistered_first(report.tables)
    body += [table.html() + f"<p>{paragraph(EXPLORATORY)}</p>" for table in first]
    bullets = [line[2:] for line in report.summary if line.startswith("- ")]
    body += [f"<p>{paragraph(line)}</p>" for line in report.summary if line and not line.startswith("- ")]
    if bullets:
        body.append("<ul>" + "".join(f"<li>{paragraph(b)}</li>" for b in bullets) + "</ul>")
    body += [table.html() for table in rest]
    if report.published is not None:
        body.append(report.published.html())
    for stem, caption in report.figures:
        data = base64.b64encode((out / f"{stem}.png").read_bytes()).decode()
        body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(stem)}">'
                    f'<figcaption>{html.escape(caption)} <a href="{stem}.pdf">PDF</a></figcaption></figure>')
    extra = [line for line in report.findings + report.notes if line]
    if extra:
        notes = "".join(f"<li>{paragraph(line.lstrip('- '))}</li>" for line in extra)
        body.append(f"<h2>Notes</h2><ul>{notes}</ul>")
    body.append(f"<p class=\"note\">{paragraph(report.machine)}</p>")
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(body) + "</body></html>\n")


def write_report(results: Sequence[RunResult], out: Path, title: str, description: str = "", x: str | None = None,
                 published: Sequence[dict[str, Any]] = (), runs_dir: Path | None = None, baseline: str | None = None,
                 formats: Sequence[str] = FORMATS, analysis: AnalysisConfig | None = None,
                 unimodal: Sequence[Group] = (), notice: str = "") -> Path:
    """Write the report in ``formats`` (md, html, tex, csv) into ``out``; return report.md's path
    (or the first format's file). ``notice`` opens the setup paragraph (uncommitted code)."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise HarnessError(f"unknown report format {unknown[0]!r}", field="--format", fix="use some of "
                                                                                          f"{','.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(results, out, title, description, x, published, runs_dir, baseline, analysis, unimodal)
    if notice:
        report.setup = f"{notice} {report.setup}"
    written = []
    if "csv" in formats:
        atomic_write_text(out / "results.csv", csv_text(results))
        for table in [*report.tables, *([report.published] if report.published else [])]:
            (out / "tables").mkdir(exist_ok=True)
            atomic_write_text(out / "tables" / f"{table.name}.csv", table.csv())
        written.append(out / "results.csv")
    if "tex" in formats:
        atomic_write_text(out / "report.tex", latex(report))
        for table in [*report.tables, *([report.published] if report.published else [])]:
            (out / "tables").mkdir(exist_ok=True)
            atomic_write_text(out / "tables" / f"{table.name}.tex", table.latex())
        written.append(out / "report.tex")
    if "html" in formats:
        atomic_write_text(out / "report.html", html_page(report, out))
        written.append(out / "report.html")
    if "md" in formats:
        atomic_write_text(out / "report.md", markdown(report))
        written.insert(0, out / "report.md")
    _remove_stale_figures(out, {stem for stem, _ in report.figures})
    return written[0]


#: Figures this generator (or an earlier one) writes; a rebuild removes those it no longer draws.
_FIGURE_STEMS = re.compile(r"^(recall_vs_.+|pareto|recall_by_edit_type|intent_vs_retention|top1_kinds|prompt_usage|"
                           r"attention_share|retrieval_examples)$")


def _remove_stale_figures(out: Path, current: set[str]) -> None:
    """Delete figures an earlier build of this report drew and this one does not (say, a plot
    against a parameter no longer swept), so the folder shows one report, not two."""
    for path in [*out.glob("*.png"), *out.glob("*.pdf")]:
        if _FIGURE_STEMS.match(path.stem) and path.stem not in current:
            path.unlink()
