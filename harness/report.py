"""The first slice of the experiment report: a Markdown table and a recall plot, built only
from results JSON files (so it can be rebuilt offline at any time).

    write_report(results, out_dir, x="method.params.pool_size")
    -> out_dir/report.md, out_dir/results.csv, out_dir/recall_vs_<x>.png (recall_vs_run.png when nothing single is swept)

Rows are grid points (mean ± std over seeds); runs of other methods (reference points) are
drawn as horizontal lines in the plot. The report states the protocol and the machine.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.mappings import flatten
from harness.results import RunResult, atomic_write_bytes, atomic_write_text
from harness.tables import COLUMNS, markdown_table, results_table

PLOT_METRICS = ("recall_at_1", "recall_at_5", "recall_subset_at_1")


def config_value(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


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
    keys = [key for key, _ in COLUMNS if any(key in r.metrics for r in results)]  # the dataset's own metrics
    writer.writerow(["run_id", "label", "method", "seed", *keys, "params_total", "params_trainable",
                     "ms_per_query", "train_s"])
    for r in results:
        writer.writerow([r.run_id, r.label, r.method, r.seed, *(r.metrics.get(k, "") for k in keys),
                         r.parameters["total"], r.parameters["trainable"],
                         f"{r.timings['encode_and_score_ms_per_query']:.3f}", f"{r.train.get('seconds', 0):.1f}"])
    return stream.getvalue()


def plot_recall(results: Sequence[RunResult], x: str | None, path: Path, metrics: Sequence[str] = PLOT_METRICS) -> None:
    """Recall against the swept parameter (or, with ``x`` None, against the run label) with
    std error bars over seeds; runs of other methods as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def value(r: RunResult) -> Any:
        return r.label if x is None else config_value(r.config, x)

    main = _main_method(results)
    swept = [r for r in results if value(r) is not None and (main is None or r.method == main)]
    others = [r for r in results if r not in swept]
    titles = dict(COLUMNS)
    figure, axis = plt.subplots(figsize=(5.6, 3.0), dpi=150)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, metric in enumerate(metrics):
        by_x: dict[Any, list[float]] = defaultdict(list)
        for r in swept:
            if metric in r.metrics:
                by_x[value(r)].append(r.metrics[metric])
        if not by_x:
            continue
        xs = sorted(by_x) if x is not None else list(by_x)
        means = [_mean_std(by_x[v])[0] for v in xs]
        stds = [_mean_std(by_x[v])[1] for v in xs]
        colour = colours[index % len(colours)]
        axis.errorbar(xs, means, yerr=stds, marker="o", capsize=3, color=colour,
                      linestyle="none" if x is None else "-", label=f"{main or ''} {titles.get(metric, metric)}".strip())
        reference: dict[str, list[float]] = defaultdict(list)
        for r in others:
            if metric in r.metrics:
                reference[r.label].append(r.metrics[metric])
        for line, (label, values) in enumerate(sorted(reference.items())):
            axis.axhline(statistics.mean(values), color=colour, linestyle=("--", ":", "-.")[line % 3], linewidth=0.8,
                         label=f"{label} {titles.get(metric, metric)}")
    axis.set_xlabel("run" if x is None else x.split(".")[-1].replace("_", " "))
    axis.set_ylabel("recall (%)")
    if x is None:
        axis.tick_params(axis="x", labelrotation=30, labelsize=5)
    elif len({value(r) for r in swept}) > 2 and all(isinstance(value(r), (int, float)) for r in swept):
        values = sorted({value(r) for r in swept})
        if values[0] > 0 and values[-1] / values[0] >= 10:
            axis.set_xscale("log")
        axis.set_xticks(values, [str(v) for v in values])
    axis.legend(fontsize=5, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


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
    for r in results:
        groups[r.label].append(r)
    titles = dict(COLUMNS)
    metrics = [m for m in metrics if any(m in r.metrics for r in results)]  # e.g. no Rsubset on Shoes
    if not metrics:
        return []
    lines = ["Findings (generated; '>' = gap larger than the sum of the two seed std, '≈' = within it):", ""]
    ours = {label: group for label, group in groups.items() if group[0].method == main}
    others = {label: group for label, group in groups.items() if group[0].method != main}
    if main is None or not others:
        for metric in metrics:
            lines.append(f"- {titles.get(metric, metric)}, best first: {_ranking(groups, metric)}")
        return [*lines, ""]
    for metric in metrics:
        best_label = max(ours, key=lambda label: _mean_std([r.metrics.get(metric, 0.0) for r in ours[label]])[0])
        best, best_std = _mean_std([r.metrics.get(metric, 0.0) for r in ours[best_label]])
        spread = [_mean_std([r.metrics.get(metric, 0.0) for r in group])[0] for group in ours.values()]
        lines.append(f"- {titles.get(metric, metric)}: {main} ranges {min(spread):.1f}-{max(spread):.1f} over its "
                     f"{len(ours)} settings (best {best_label}: {best:.1f} ± {best_std:.1f}).")
        for label, group in others.items():
            mean, std = _mean_std([r.metrics.get(metric, 0.0) for r in group])
            relation = "above" if best > mean else "below"
            resolved = abs(best - mean) > best_std + std
            lines.append(f"  - {relation} {label} ({mean:.1f} ± {std:.1f}) by {abs(best - mean):.1f}"
                         + ("" if resolved else ", within the seed spread (not resolved)"))
    lines.append("")
    return lines


def published_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Published numbers as their own table, labelled: not measured by this harness."""
    if not rows:
        return []
    keys = [key for key, _ in COLUMNS if any(key in row["metrics"] for row in rows)]
    keys += sorted({key for row in rows for key in row["metrics"]} - set(keys))
    titles = dict(COLUMNS)
    table = markdown_table(["published (not measured here)", *(titles.get(k, k) for k in keys), "source"],
                           [[row["method"], *(f"{row['metrics'][k]:.2f}" if k in row["metrics"] else "-" for k in keys),
                             row["source"]] for row in rows])
    return ["Published numbers, for scale only: other models, data and hardware than the runs above.", "", table, ""]


def _protocol_text(protocol: dict[str, Any]) -> str:
    """One phrase naming the protocol a result was scored with (older results lack some keys)."""
    parts = [f"preset {protocol['preset']}"] if protocol.get("preset") else []
    if protocol.get("explicit"):
        parts.append(f"set explicitly: {', '.join(protocol['explicit'])}")
    gallery = {"split_file": "split file", "category_split_file": "each category's split file",
               "query_images": "the queries' own images (VAL protocol)"}.get(
        protocol.get("gallery", "split_file"), protocol.get("gallery"))
    parts += [f"gallery = {gallery}", f"reference removed = {protocol.get('remove_reference')}"]
    if protocol.get("averaging") == "category_mean":
        parts.append("metrics averaged over categories")
    parts.append("ties broken by gallery index")
    if protocol.get("dropped_queries"):
        parts.append(f"{protocol['dropped_queries']} queries dropped for missing images")
    return ", ".join(parts)


def markdown_report(results: Sequence[RunResult], title: str, description: str, plot_name: str | None,
                    published: Sequence[dict[str, Any]] = ()) -> str:
    """The report page: what was run, on what, the table, pool usage, the plot, the machine."""
    first = results[0]
    hardware = first.environment.get("hardware", {})
    seeds = sorted({r.seed for r in results})
    lines = [
        f"# {title}",
        "",
        description,
        "",
        f"Dataset `{first.dataset}` ({first.split} split: {first.num_queries} queries, {first.num_gallery} gallery images); "
        f"protocol: {_protocol_text(first.protocol)}; seeds {', '.join(map(str, seeds))}. Metrics in %, mean ± std "
        "over seeds; ms/query = query encoding + scoring, after warm-up.",
        "",
        results_table(results),
        "",
    ]
    lines += published_table(published)
    lines += findings(results)
    usage = [(r.label, r.seed, r.method_statistics) for r in results if "prompt_usage" in r.method_statistics]
    if usage:
        lines += ["Prompt-pool usage on the evaluation queries (selections per prompt; effective number = exp(entropy)):", ""]
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
    if plot_name:
        lines += [f"![recall]({plot_name})", ""]
    lines.append(f"Machine: {hardware.get('cpu')}, {hardware.get('cpu_cores')} cores, {hardware.get('torch_threads')} torch threads, "
                 f"device {hardware.get('device')}; commit {first.environment.get('git_commit')}.")
    return "\n".join(lines) + "\n"


def write_report(results: Sequence[RunResult], out: Path, title: str, description: str = "", x: str | None = None,
                 published: Sequence[dict[str, Any]] = ()) -> Path:
    """Write report.md, results.csv and the recall plot (against the swept parameter, or the runs)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = x or infer_swept_parameter(results)
    plot_name = f"recall_vs_{x.split('.')[-1] if x else 'run'}.png"
    plot_recall(results, x, out / plot_name)
    atomic_write_text(out / "results.csv", csv_text(results))
    atomic_write_text(out / "report.md", markdown_report(results, title, description, plot_name, published))
    return out / "report.md"
