"""The report's tables and its generated summary, built from report groups.

Every number comes from the results JSON files and the rankings beside them: metrics as
mean ± std over seeds, 95% bootstrap intervals over queries, paired sign-flip tests against
a named baseline with Holm's correction over the runs compared, and beside them a seed-aware
test (seeds, then queries) wherever both runs share at least two seeds; every test states
its minimum detectable effect at 80 % power.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.evaluation.protocol import TABLE_METRICS
from harness.evaluation.protocol import title as metric_title
from harness.reporting.data import Group, chance_values, config_value
from harness.reporting.intent_sections import LEARNING_FREE_LABEL, learning_free_rows
from harness.reporting.stats import (
    ALPHA,
    POWER,
    PairedTest,
    bootstrap_ci,
    holm,
    p_relation,
    paired_test,
    seed_aware_test,
)
from harness.reporting.tables import Cell, Table, fmt, mean_std_text

#: Metrics a report tests, in order of preference (the first two the runs have per query).
HEADLINE = ("recall_at_1", "recall_subset_at_1", "recall_at_10", "recall_at_50", "recall_at_5")
EDIT_ORDER = ("add", "remove", "recolour", "resize", "move", "replace", "compound")
NOT_SIGNIFICANT = "†"


def headline_metrics(groups: Sequence[Group]) -> list[str]:
    """The first two metrics of ``HEADLINE`` every group can give per query."""
    chosen = [m for m in HEADLINE if all(g.per_query(m) is not None for g in groups)]
    return chosen[:2]


@dataclass
class Comparison:
    """Each group against the baseline on one metric (Holm over the groups compared)."""

    metric: str
    baseline: str
    tests: dict[str, PairedTest]
    significant: dict[str, bool]
    seed_tests: dict[str, PairedTest]
    seed_significant: dict[str, bool]


def compare(groups: Sequence[Group], baseline: Group, metric: str, alpha: float = ALPHA) -> Comparison | None:
    """Paired tests of every other group against ``baseline`` on the queries both evaluated,
    and seed-aware tests over the seeds both ran (where they share two or more)."""
    reference = baseline.per_query(metric)
    if reference is None:
        return None
    tests: dict[str, PairedTest] = {}
    seed_tests: dict[str, PairedTest] = {}
    for group in groups:
        ours = group.per_query(metric)
        if group is baseline or ours is None or ours.pairids != reference.pairids:
            continue
        tests[group.label] = paired_test(ours.values, reference.values, reference.weights, reference.strata,
                                         alpha=alpha)
        common = [seed for seed in reference.seeds if seed in ours.seeds]
        if len(common) >= 2:
            seed_tests[group.label] = seed_aware_test(ours.for_seeds(common), reference.for_seeds(common),
                                                      reference.weights, reference.strata, alpha=alpha)
    return Comparison(metric, baseline.label, tests, _holm(tests, alpha), seed_tests, _holm(seed_tests, alpha))


def _holm(tests: dict[str, PairedTest], alpha: float) -> dict[str, bool]:
    labels = list(tests)
    return dict(zip(labels, holm([tests[label].p_value for label in labels], alpha)))


def main_table(groups: Sequence[Group]) -> Table:
    """Methods x the protocol's metrics, mean ± std over seeds, no cell emphasised."""
    metrics = [key for key in TABLE_METRICS if any(g.mean_std(key) for g in groups)]
    rows = []
    for group in groups:
        row = [Cell(group.label), Cell(",".join(map(str, group.seeds)))]
        for metric in metrics:
            stats = group.mean_std(metric)
            row.append(Cell(mean_std_text(group.values(metric)), None if stats is None else stats[0]))
        rows.append(row)
    ceilings = learning_free_rows(groups, metrics, 2)
    chance = chance_row(groups, metrics)
    table = Table("Main results", ["run", "seeds", *(metric_title(m) for m in metrics)], rows, name="main",
                  caption="Metrics in %, mean ± std over seeds; no cell is emphasised (differences are tested in the "
                  "pre-registered analysis and the statistics tables, not read off this one)." + (
                      " Row 'chance': the expected value of a ranking drawn at random (R@K: K of the gallery less "
                      "the reference; Rs@K: K of each query's set less the reference), the floor a run must clear "
                      "to show it learned anything." if chance else "") + (
                      f" Rows '{LEARNING_FREE_LABEL}': learning-free scorers that read the embedded benchmark's scene "
                      "graphs (R@1 only; see 'Following intent'); 'additive grid' is version 2's grid of additive "
                      "scorers (`harness data check` also runs a stronger, fitted adversary)." if ceilings else ""),
                  csv_header=["run", "seeds", *metrics])
    table.rows += [*([chance] if chance else []), *ceilings]
    return table


def chance_row(groups: Sequence[Group], metrics: Sequence[str]) -> list[Cell] | None:
    """The main table's row of a random ranking's expected R@K (one gallery for every query) and
    Rs@K, from the first run's gallery size and its rankings' subset lists; None when neither can
    be given (issue 35: Rs@1's 20 % must not read like a working model)."""
    values = chance_values(groups, metrics)
    if not values:
        return None
    return [Cell("chance (a random ranking)"), Cell("-"),
            *(Cell(f"{values[m]:.1f}" if values[m] >= 0.1 else f"{values[m]:.3f}", values[m]) if m in values
              else Cell("-") for m in metrics)]


def statistics_table(groups: Sequence[Group], comparisons: Sequence[Comparison]) -> Table:
    """Per headline metric: the seed-averaged value with its 95% interval over queries, the
    difference to the baseline with its interval, and the paired test's p-value."""
    header, csv_header = ["run", "queries"], ["run", "queries"]
    for comparison in comparisons:
        title = metric_title(comparison.metric)
        header += [f"{title} [95% CI]", f"Δ {title} [95% CI]", "p", "MDE"]
        csv_header += [comparison.metric, f"{comparison.metric}_ci_low", f"{comparison.metric}_ci_high",
                       f"delta_{comparison.metric}", f"delta_{comparison.metric}_ci_low",
                       f"delta_{comparison.metric}_ci_high", f"p_{comparison.metric}", f"mde_{comparison.metric}"]
    rows, csv_rows = [], []
    for group in groups:
        first = group.per_query(comparisons[0].metric) if comparisons else None
        row = [Cell(group.label), Cell(str(len(first.values)) if first is not None else "-")]
        csv_row: list[Any] = [group.label, len(first.values) if first is not None else ""]
        for comparison in comparisons:
            values = group.per_query(comparison.metric)
            if values is None:
                row += [Cell("-"), Cell("-"), Cell("-"), Cell("-")]
                csv_row += [""] * 8
                continue
            low, high = bootstrap_ci(values.values, values.weights, values.strata)
            mean = (group.mean_std(comparison.metric) or (values.mean(),))[0]  # the main table's figure, same rounding
            row.append(Cell(f"{mean:.1f} [{low:.1f}, {high:.1f}]", mean))
            test = comparison.tests.get(group.label)
            if test is None:
                row += [Cell("baseline" if group.label == comparison.baseline else "-"), Cell("-"), Cell("-")]
                csv_row += [values.mean(), low, high, "", "", "", "", ""]
                continue
            row += _test_cells(test, comparison.significant[group.label])
            csv_row += [values.mean(), low, high, test.difference, test.low, test.high, test.p_value, test.mde]
        rows.append(row)
        csv_rows.append(csv_row)
    baseline = comparisons[0].baseline if comparisons else "-"
    table = Table("Statistics over queries", header, rows, name="statistics", csv_header=csv_header, csv_rows=csv_rows,
                  caption=f"Seed-averaged per-query values with 95% bootstrap intervals over queries; Δ = run - "
                  f"{baseline} on the same queries, paired sign-flip permutation test (two-sided); {NOT_SIGNIFICANT} = "
                  f"not significant at α = {ALPHA} after Holm's correction over the runs compared; MDE = the smallest "
                  f"difference this test detects with {POWER:.0%} power (query sampling only: seeds are averaged).")
    return table


def seed_statistics_table(comparisons: Sequence[Comparison]) -> Table | None:
    """Per headline metric and run: the difference to the baseline under the seed-aware test
    (a two-level bootstrap over shared seeds, then queries), its interval, p and MDE."""
    tested = [c for c in comparisons if c.seed_tests]
    if not tested:
        return None
    header, csv_header = ["run", "seeds"], ["run", "seeds"]
    for comparison in tested:
        title = metric_title(comparison.metric)
        header += [f"Δ {title} [95% CI]", "p", "MDE"]
        csv_header += [f"delta_{comparison.metric}", f"delta_{comparison.metric}_ci_low",
                       f"delta_{comparison.metric}_ci_high", f"p_{comparison.metric}", f"mde_{comparison.metric}"]
    rows, csv_rows = [], []
    for label in dict.fromkeys(label for c in tested for label in c.seed_tests):
        seeds = next(c.seed_tests[label].seeds for c in tested if label in c.seed_tests)
        row, csv_row = [Cell(label), Cell(str(seeds))], [label, seeds]
        for comparison in tested:
            test = comparison.seed_tests.get(label)
            if test is None:
                row += [Cell("-"), Cell("-"), Cell("-")]
                csv_row += [""] * 5
                continue
            row += _test_cells(test, comparison.seed_significant[label])
            csv_row += [test.difference, test.low, test.high, test.p_value, test.mde]
        rows.append(row)
        csv_rows.append(csv_row)
    return Table("Seed-aware statistics", header, rows, name="seed_statistics", csv_header=csv_header,
                 csv_rows=csv_rows, caption=f"Δ = run - {tested[0].baseline} over the seeds both ran: each of the "
                 "bootstrap's samples draws seeds with replacement (the same for both runs), then queries, so training "
                 "luck of one seed counts as noise; p = two-sided bootstrap p-value; "
                 f"{NOT_SIGNIFICANT} = not significant at α = {ALPHA} after Holm's correction; MDE at {POWER:.0%} "
                 "power.")


def _test_cells(test: PairedTest, significant: bool) -> list[Cell]:
    """Δ with its interval († unless significant), p and MDE of one test."""
    mark = "" if significant else NOT_SIGNIFICANT
    return [Cell(f"{test.difference:+.1f} [{test.low:+.1f}, {test.high:+.1f}]", test.difference, note=mark),
            Cell(_p_text(test.p_value), test.p_value), Cell(f"{test.mde:.1f}", test.mde)]


def _p_text(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def ablation_table(groups: Sequence[Group], main: str | None, x: str | None, metrics: Sequence[str],
                   alpha: float = ALPHA) -> Table | None:
    """One row per variant of the method under study, ordered by the swept parameter, with
    the change against the first variant (paired test, Holm over the variants)."""
    if main is None or x is None:
        return None
    variants = [g for g in groups if g.method == main and config_value(g.runs[0].config, x) is not None]
    if len(variants) < 2:
        return None
    try:
        variants.sort(key=lambda g: config_value(g.runs[0].config, x))
    except TypeError:
        pass
    name = x.split(".")[-1].replace("_", " ")
    values = [str(config_value(g.runs[0].config, x)) for g in variants]
    ambiguous = len(set(values)) < len(values)  # the grid sweeps more than x: the full grid point tells rows apart
    comparison = compare(variants, variants[0], metrics[0], alpha) if metrics else None
    header = [name, *(["run"] if ambiguous else []), *(metric_title(m) for m in metrics)]
    if comparison:
        baseline = variants[0].label if ambiguous else f"{name} = {values[0]}"
        header += [f"Δ {metric_title(metrics[0])} vs {baseline}", "p",
                   "MDE", "p (seeds)", "MDE (seeds)"]
    rows = []
    for group, value in zip(variants, values):
        row = [Cell(value), *([Cell(group.label)] if ambiguous else [])]
        row += [Cell(mean_std_text(group.values(m)), (group.mean_std(m) or (None,))[0]) for m in metrics]
        if comparison:
            row += _ablation_cells(comparison, group.label)
        rows.append(row)
    table = Table(f"Ablation: {main}, {name}", header, rows, name="ablation",
                  caption=f"{main} variants; metrics mean ± std over seeds; Δ on the same queries with a paired "
                  f"sign-flip test; {NOT_SIGNIFICANT} = not significant at α = {ALPHA} (Holm); p (seeds): the "
                  "seed-aware test (seeds, then queries); MDE: the smallest difference each test detects with "
                  f"{POWER:.0%} power.")
    return table


def _ablation_cells(comparison: Comparison, label: str) -> list[Cell]:
    """Δ, p and MDE of the query test, then p and MDE of the seed-aware test ("-" where absent)."""
    test, seeds = comparison.tests.get(label), comparison.seed_tests.get(label)
    if test is None:
        return [Cell("-") for _ in range(5)]
    mark = "" if comparison.significant[label] else NOT_SIGNIFICANT
    cells = [Cell(f"{test.difference:+.1f}", test.difference, note=mark), Cell(_p_text(test.p_value), test.p_value),
             Cell(f"{test.mde:.1f}", test.mde)]
    if seeds is None:
        return cells + [Cell("-"), Cell("-")]
    seed_mark = "" if comparison.seed_significant[label] else NOT_SIGNIFICANT
    return cells + [Cell(_p_text(seeds.p_value), seeds.p_value, note=seed_mark), Cell(f"{seeds.mde:.1f}", seeds.mde)]


MEMORY = {"cuda_max_allocated": "peak CUDA allocation during the evaluation",
          "eval_peak_rss": "peak resident memory of the process during the evaluation (data and model included)",
          "process_peak_rss": "peak resident memory of the process since it started (earlier runs of the same "
                              "process included, so it only grows down the table)"}


def efficiency_table(groups: Sequence[Group]) -> Table:
    """Parameters and latency: ms/query p50 / p95 at batch 1 and at the eval batch size,
    queries/s of the evaluation pass, peak memory; the hardware in the caption."""
    header = ["run", "params", "trainable", "ms/q b1 p50", "ms/q b1 p95", "ms/q batch p50", "ms/q batch p95",
              "queries/s", "peak MiB"]
    keys = ["ms_per_query_batch1_p50", "ms_per_query_batch1_p95", "ms_per_query_eval_batch_p50",
            "ms_per_query_eval_batch_p95", "queries_per_second", "peak_memory_mb"]
    rows = []
    for group in groups:
        parameters = group.runs[0].parameters
        row = [Cell(group.label), Cell(f"{parameters['total'] / 1e6:.2f}M", float(parameters["total"])),
               Cell(f"{parameters['trainable'] / 1e6:.2f}M", float(parameters["trainable"]))]
        for key in keys:
            value = group.timing(key)
            row.append(Cell(fmt(value, 0 if key in ("queries_per_second", "peak_memory_mb") else 2), value))
        rows.append(row)
    first = groups[0].runs[0]
    hardware = first.environment.get("hardware", {})
    threads = hardware.get("torch_threads")
    machine = hardware.get("gpu") or f"{hardware.get('cpu')} ({hardware.get('cpu_cores')} cores, " \
                                     f"{threads} torch thread{'' if threads == 1 else 's'})"
    precision = first.environment.get("precision", {}).get("eval")
    if precision:
        machine += f", {'bf16 autocast' if precision == 'bf16' else 'float32'}"
    batch = first.timings.get("eval_batch_size")
    memory = first.method_statistics.get("peak_memory", "process_peak_rss")
    caption = (f"Measured on {machine}, torch {first.environment.get('packages', {}).get('torch')}, after warm-up; "
               f"b1 = one query at a time (encode + score + top-50), batch = the eval batch"
               f"{f' of {int(batch)}' if batch else ''} (per query, scoring included); peak MiB = "
               f"{MEMORY.get(memory, memory)}. "
               "Timings of runs that shared the machine with other work (another run under `--jobs`, a test) overstate "
               "the cost.")
    return Table("Efficiency", header, rows, caption=caption, name="efficiency",
                 csv_header=["run", "params_total", "params_trainable", *keys])


def edit_type_table(groups: Sequence[Group], metric: str) -> Table | None:
    """``metric`` per edit type of the query (embedded benchmark), mean over seeds."""
    types = sorted({t for g in groups for r in g.runs for t in r.metrics_by_edit_type})
    if not types:
        return None
    order = [t for t in EDIT_ORDER if t in types] + [t for t in types if t not in EDIT_ORDER]
    rows = []
    for group in groups:
        row = [Cell(group.label)]
        for edit_type in order:
            values = [r.metrics_by_edit_type[edit_type][metric] for r in group.runs
                      if metric in r.metrics_by_edit_type.get(edit_type, {})]
            row.append(Cell(fmt(sum(values) / len(values)) if values else "-",
                            sum(values) / len(values) if values else None))
        rows.append(row)
    counts = groups[0].runs[0].metrics_by_edit_type
    header = ["run", *(f"{t} ({int(counts[t]['num_queries'])})" if t in counts else t for t in order)]
    table = Table(f"{metric_title(metric)} per edit type", header, rows, name="edit_types",
                  caption=f"{metric_title(metric)} in %, mean over seeds, per edit type of the query (queries in "
                          "brackets).",
                  csv_header=["run", *order])
    return table


def diagnostics_table(groups: Sequence[Group]) -> Table | None:
    """Intent fidelity and visual retention of the top-1 image, with 95% intervals."""
    names = ("intent_fidelity", "visual_retention")
    if not any(g.mean_std(n) for g in groups for n in names):
        return None
    rows = []
    for group in groups:
        row = [Cell(group.label)]
        for name in names:
            values = group.per_query(name)
            if values is None:
                row.append(Cell(mean_std_text(group.values(name)), (group.mean_std(name) or (None,))[0]))
                continue
            low, high = bootstrap_ci(values.values, values.weights, values.strata)
            row.append(Cell(f"{values.mean():.1f} [{low:.1f}, {high:.1f}]", values.mean()))
        rows.append(row)
    table = Table("Intent fidelity and visual retention of the top-1 image", ["run", "intent fidelity [95% CI]",
                  "visual retention [95% CI]"], rows, name="diagnostics", csv_header=["run", *names],
                  caption="Read off the embedded benchmark's scene graphs: intent fidelity = share of the requested "
                  "edits the top-1 image shows; visual retention = share of the reference's unedited objects it keeps "
                  "unchanged. The target scores 100 on both. Seed-averaged, 95% bootstrap intervals over queries.")
    return table


def summary(comparisons: Sequence[Comparison], groups: Sequence[Group]) -> list[str]:
    """Generated sentences: which runs differ significantly from the baseline, which do not."""
    if not comparisons:
        return ["No per-query statistics: the runs lack rankings files or comparable queries."]
    queries = len(next(iter(groups)).per_query(comparisons[0].metric).values)  # type: ignore[union-attr]
    seeds = sorted({len(g.runs) for g in groups})
    lines = [f"Summary (generated): paired sign-flip tests over {queries} queries, seed-averaged "
             f"({'/'.join(map(str, seeds))} seeds per run), against **{comparisons[0].baseline}**; "
             f"significant means p < {ALPHA} after Holm's correction.", ""]
    for comparison in comparisons:
        title = metric_title(comparison.metric)
        above = [f"{label} ({t.difference:+.1f}{_seed_text(comparison, label)})" for label,
                 t in comparison.tests.items()
                 if comparison.significant[label] and t.difference > 0]
        below = [f"{label} ({t.difference:+.1f}{_seed_text(comparison, label)})" for label,
                 t in comparison.tests.items()
                 if comparison.significant[label] and t.difference < 0]
        tied = [f"{label} ({t.difference:+.1f}, p = {_p_text(t.p_value)}, " +
                (f"not resolved at MDE {t.mde:.1f})" if t.mde > 0 else "the same on every query)")
                for label, t in comparison.tests.items() if not comparison.significant[label]]
        parts = []
        if above:
            parts.append(f"significantly above: {', '.join(above)}")
        if below:
            parts.append(f"significantly below: {', '.join(below)}")
        if tied:
            parts.append(f"not significantly different: {', '.join(tied)}")
        lines.append(f"- {title}: " + "; ".join(parts) + ".")
    lines += ["", f"MDE: the smallest difference a test detects with {POWER:.0%} power; a difference below it is "
              "not resolved, whichever way it points. 'seeds' marks the seed-aware test (seeds, then queries).", ""]
    return lines


def _seed_text(comparison: Comparison, label: str) -> str:
    """", MDE x" for the query test, and the seed-aware verdict where that test ran."""
    text = f", MDE {comparison.tests[label].mde:.1f}"
    seeds = comparison.seed_tests.get(label)
    if seeds is None:
        return text
    verdict = "holds" if comparison.seed_significant[label] else "not significant"
    return text + f"; over seeds {verdict}, p {p_relation(seeds.p_value)}, MDE {seeds.mde:.1f}"


