"""Report statistics on hand-made inputs, tables that parse back, and the HTML page in Chromium."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from harness.reporting.stats import (
    bootstrap_ci,
    holm,
    minimum_detectable_effect,
    paired_test,
    seed_aware_test,
    weights_for,
)
from harness.reporting.tables import Cell, Table

from .conftest import chromium_path


def test_a_known_difference_is_significant_and_identical_methods_are_not():
    rng = np.random.default_rng(0)
    base = (rng.random(500) < 0.3).astype(float) * 100
    better = base.copy()
    better[rng.choice(np.flatnonzero(base == 0), 60, replace=False)] = 100  # +12 points on the same queries
    weights, strata = weights_for(None, 500)
    test = paired_test(better, base, weights, strata)
    assert test.difference == pytest.approx(12.0) and test.p_value < 0.001 and test.significant()
    assert test.low > 0 and test.low < 12.0 < test.high
    same = paired_test(base, base.copy(), weights, strata)
    assert same.difference == 0 and same.p_value == 1.0 and not same.significant()
    noise = paired_test(rng.permutation(base), base, weights, strata)  # same rate, unrelated queries
    assert noise.p_value > 0.05


def _hits(rng: np.random.Generator, seeds: int, queries: int, rate: float) -> np.ndarray:
    return (rng.random((seeds, queries)) < rate).astype(float) * 100


def test_seed_aware_test_gives_p_1_for_identical_runs_and_a_small_p_for_a_planted_difference():
    rng = np.random.default_rng(1)
    base = _hits(rng, 3, 500, 0.3)
    weights, strata = weights_for(None, 500)
    same = seed_aware_test(base, base.copy(), weights, strata)
    assert same.difference == 0 and same.p_value == 1.0 and same.seeds == 3 and same.queries == 500
    better = np.maximum(base, _hits(rng, 3, 500, 0.15))  # every seed gains about 10 points on its own queries
    planted = seed_aware_test(better, base, weights, strata)
    assert planted.difference > 8 and planted.p_value < 0.001 and planted.low > 0 and planted.significant()


def test_a_difference_from_one_seed_is_significant_over_queries_but_not_over_seeds():
    rng = np.random.default_rng(2)
    base = _hits(rng, 3, 500, 0.3)
    lucky = base.copy()
    lucky[0] = np.maximum(lucky[0], _hits(rng, 1, 500, 0.25)[0])  # seed 0 alone gains ~17 points: training luck
    weights, strata = weights_for(None, 500)
    over_queries = paired_test(lucky.mean(axis=0), base.mean(axis=0), weights, strata)
    over_seeds = seed_aware_test(lucky, base, weights, strata)
    assert over_queries.difference == pytest.approx(over_seeds.difference)
    assert over_queries.p_value < 0.001 and over_seeds.p_value > 0.2 and over_seeds.mde > 3 * over_queries.mde


def test_minimum_detectable_effect_is_2_8_standard_errors_and_halves_with_four_times_the_queries():
    assert minimum_detectable_effect(1.0) == pytest.approx(1.95996 + 0.84162, abs=1e-4)  # alpha 0.05, power 0.8
    rng = np.random.default_rng(3)
    mdes = []
    for queries in (400, 1600):
        base, other = _hits(rng, 1, queries, 0.3)[0], _hits(rng, 1, queries, 0.3)[0]
        mdes.append(paired_test(other, base, *weights_for(None, queries)).mde)
    assert mdes[0] / mdes[1] == pytest.approx(2.0, rel=0.15)


def test_bootstrap_interval_holds_the_mean_and_shrinks_to_a_point_for_constants():
    values = np.r_[np.zeros(70), np.full(30, 100.0)]
    weights, strata = weights_for(None, 100)
    low, high = bootstrap_ci(values, weights, strata)
    assert low < 30.0 < high and high - low < 25
    assert bootstrap_ci(np.full(50, 40.0), *weights_for(None, 50)) == pytest.approx((40.0, 40.0))


def test_category_weights_give_the_category_mean():
    categories = ["dress"] * 3 + ["shirt"]
    weights, strata = weights_for(categories, 4)
    values = np.array([100.0, 100.0, 100.0, 0.0])
    assert float(values @ weights) == pytest.approx(50.0)  # (100 + 0) / 2, not 75
    low, high = bootstrap_ci(values, weights, strata)
    assert (low, high) == pytest.approx((50.0, 50.0))  # resampling within categories keeps each category's share


def test_holm_rejects_step_down():
    assert holm([0.01, 0.04, 0.03, 0.5]) == [True, False, False, False]
    assert holm([0.001, 0.012, 0.02]) == [True, True, True]


def _table() -> Table:
    rows = [[Cell("a_b"), Cell("10.0 ± 1.0", 10.0), Cell("5.0", 5.0)],
            [Cell("c"), Cell("12.5 ± 0.5", 12.5, mark="bold"), Cell("4.0", 4.0, note="†")],
            [Cell("d"), Cell("11.0 ± 0.0", 11.0), Cell("-")]]
    return Table("T", ["run", "R@1", "Δ"], rows, caption="50% of it", name="t")


def test_tables_render_a_bold_cell_and_parse_back_from_csv():
    table = _table()
    parsed = list(csv.reader(io.StringIO(table.csv())))
    assert parsed[0] == ["run", "R@1", "Δ"] and [float(row[1]) for row in parsed[1:]] == [10.0, 12.5, 11.0]
    assert parsed[3][2] == "-"
    text = table.markdown()
    assert "| c | **12.5 ± 0.5** | 4.0† |" in text and "| d | 11.0 ± 0.0 | - |" in text
    assert "<b>12.5 ± 0.5</b>" in table.html()


def test_latex_tables_have_booktabs_rules_and_one_cell_per_column():
    tex = _table().latex()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex and "{lrr}" in tex
    body = tex[tex.index("\\toprule") + len("\\toprule"): tex.index("\\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith("\\\\")]
    assert len(rows) == 4  # header + 3
    for row in rows:  # unescaped & separate the cells: one fewer than the columns
        assert len(re.findall(r"(?<!\\)&", row)) == 2, row
    assert "a\\_b" in tex and "$\\pm$" in tex and "\\textbf{12.5 $\\pm$ 0.5}" in tex and "50\\% of it" in tex


def test_report_of_real_runs_writes_every_format(finished):
    _, output, _ = finished
    report = output / "report"
    for name in ("report.md", "report.html", "report.tex", "results.csv", "tables/main.csv", "tables/main.tex",
                 "tables/statistics.csv", "tables/efficiency.csv", "tables/diagnostics.csv", "tables/edit_types.csv"):
        assert (report / name).stat().st_size > 0, name
    statistics = list(csv.DictReader((report / "tables" / "statistics.csv").open()))
    assert [row["run"] for row in statistics] == ["image_only", "sum"]
    assert 0 <= float(statistics[1]["p_recall_at_1"]) <= 1 and statistics[0]["p_recall_at_1"] == ""  # the baseline
    low, mean, high = (float(statistics[1][k]) for k in ("recall_at_1_ci_low", "recall_at_1", "recall_at_1_ci_high"))
    assert low <= mean <= high
    efficiency = list(csv.DictReader((report / "tables" / "efficiency.csv").open()))
    assert all(float(row["ms_per_query_batch1_p95"]) >= float(row["ms_per_query_batch1_p50"]) > 0 for row in efficiency)


CHECK_IMAGES = """<script>
window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  document.body.setAttribute("data-images", String(document.images.length));
  document.body.setAttribute("data-broken", JSON.stringify(broken));
});
</script>"""


def test_html_page_opens_in_headless_chromium_with_every_image_and_no_console_error(finished, tmp_path: Path):
    _, output, _ = finished
    page = (output / "report" / "report.html").read_text()
    assert "<script" not in page and 'src="data:image/png;base64,' in page  # self-contained, nothing to run
    checked = tmp_path / "checked.html"  # the page plus a probe that records which images decoded
    checked.write_text(page.replace("</body>", CHECK_IMAGES + "</body>"))
    chromium = chromium_path()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", checked.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', dom.stdout).group(1))
    broken = json.loads(re.search(r"data-broken=\"([^\"]*)\"", dom.stdout).group(1).replace("&quot;", '"'))
    figures = len(list((output / "report").glob("*.png")))  # every figure the report made
    assert images == page.count("<img") == figures >= 4 and broken == []
    shot = tmp_path / "report.png"
    page_run = subprocess.run([chromium, *flags, "--window-size=1200,3000", f"--screenshot={shot}",
                               (output / "report" / "report.html").as_uri()], capture_output=True, text=True,
                               timeout=120)
    assert page_run.returncode == 0 and shot.read_bytes()[:4] == b"\x89PNG"
    console = [line for line in (dom.stderr + page_run.stderr).splitlines() if ":CONSOLE" in line]
    assert console == [], console


def test_a_report_of_runs_over_two_seeds_adds_the_seed_aware_table_and_every_mde(finished, tmp_path: Path):
    from harness.evaluation.results import read_result
    from harness.reporting.report import write_report

    _, output, _ = finished
    results = sorted((read_result(p) for p in (output / "runs").glob("*/result.json")), key=lambda r: r.method)
    twice = results + [r.model_copy(update={"seed": 1}) for r in results]  # seed 1 reads seed 0's rankings
    text = write_report(twice, tmp_path, "two seeds", runs_dir=output / "runs").read_text()
    rows = list(csv.DictReader((tmp_path / "tables" / "seed_statistics.csv").open()))
    assert [row["run"] for row in rows] == ["sum"] and rows[0]["seeds"] == "2"
    query_test = next(r for r in csv.DictReader((tmp_path / "tables" / "statistics.csv").open()) if r["run"] == "sum")
    assert float(rows[0]["delta_recall_at_1"]) == pytest.approx(float(query_test["delta_recall_at_1"]))
    assert float(rows[0]["mde_recall_at_1"]) > 0 and float(query_test["mde_recall_at_1"]) > 0
    assert "## Seed-aware statistics" in text and "MDE" in text.split("## Seed-aware statistics")[0]


def test_a_report_says_which_digits_reproduce_where(finished):
    from harness.evaluation.results import read_result
    from harness.reporting.report import _machine_caveat

    _, output, _ = finished
    result = read_result(next((output / "runs").glob("*/result.json")))
    as_run = lambda train, evaluated: result.model_copy(update={"environment": {  # noqa: E731
        **result.environment, "precision": {"train": train, "eval": evaluated}}})
    assert "depend on the CPU's kernels" in _machine_caveat([as_run("bf16", "bf16")])
    assert "depend on the CPU's kernels" in _machine_caveat([as_run("fp32", "fp32"), as_run("bf16", "fp32")])
    fp32 = _machine_caveat([as_run("fp32", "fp32")])
    assert "depend on the CPU's kernels" not in fp32 and "the portable choice" in fp32
    assert all("bit for bit on the same CPU model" in _machine_caveat([as_run(p, p)]) for p in ("fp32", "bf16"))


def test_a_band_over_seeds_and_queries_holds_the_seeds_spread():
    """Three seeds whose means differ by 4 points: the two-level band is far wider than a band
    over the seed-averaged queries alone; identical seeds give about the query band."""
    from harness.reporting.stats import bootstrap_ci, seed_bootstrap_ci

    rng = np.random.default_rng(0)
    queries = rng.uniform(10, 90, 2000)  # a per-query score in points
    weights = np.full(2000, 1 / 2000)
    spread = np.stack([queries + offset for offset in (-4.0, 0.0, 4.0)])
    low, high = bootstrap_ci(spread.mean(0), weights)
    seed_low, seed_high = seed_bootstrap_ci(spread, weights)
    assert seed_high - seed_low > 2 * (high - low)
    same_low, same_high = seed_bootstrap_ci(np.stack([queries] * 3), weights)
    assert abs((same_high - same_low) - (high - low)) < 0.5
