"""Seed-level inference (harness.reporting.seed_level) holds its error rate and its printed MDE
means what it says, on simulated experiments with run-level variance; the pre-registered analysis
(harness.reporting.analysis) words its verdicts from those tests and is checked before training."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from harness.core.errors import HarnessError
from harness.reporting.seed_level import holm_adjusted, seed_level_test

QUERIES, SEEDS, EXPERIMENTS = 1000, 5, 1000


def _experiment_values(rng: np.random.Generator, run_sd: float, effect: float, count: int) -> np.ndarray:
    """[count, 2 arms, SEEDS] R@1 values (%) of simulated experiments: each query has its own
    difficulty (shared by every run), each run a shift of its hit rate (run-level variance, sd
    ``run_sd`` points), arm b a planted ``effect`` in points; hits are Bernoulli per query."""
    difficulty = rng.beta(0.6, 4.0, size=QUERIES)  # mean rate about 13 %, heavy spread, as R@1 here
    shifts = rng.normal(0.0, run_sd / 100, size=(count, 2, SEEDS))
    shifts[:, 1] += effect / 100
    rates = np.clip(difficulty[None, None, None, :] + shifts[..., None], 0.0, 1.0)
    hits = rng.random(rates.shape, dtype=np.float32) < rates
    return 100.0 * hits.mean(axis=-1)


def _rejections(values: np.ndarray, paired: bool) -> tuple[float, float]:
    """(share of experiments whose test rejects at 0.05, mean printed MDE)."""
    tests = [seed_level_test(v[0], v[1], paired=paired) for v in values]
    return float(np.mean([t.p < 0.05 for t in tests])), float(np.mean([t.mde for t in tests]))


@pytest.mark.parametrize("run_sd", [0.0, 0.3, 1.0])
def test_the_seed_level_test_holds_its_error_rate_and_its_mde_is_its_power(run_sd: float):
    """Under a planted null, 1,000 experiments of 5 seeds per arm: type-I error within 2-7 % for
    no, small and large run-level variance; at a planted effect equal to the mean printed MDE the
    power is 80 % within 20 % (64-96 %). About 3 s per variance on the 2-core machine."""
    rng = np.random.default_rng(int(run_sd * 10) + 1)
    start = time.perf_counter()
    for paired in (True, False):
        type_one, mde = _rejections(_experiment_values(rng, run_sd, 0.0, EXPERIMENTS), paired)
        assert 0.02 <= type_one <= 0.07, (paired, type_one)
        power, _ = _rejections(_experiment_values(rng, run_sd, mde, EXPERIMENTS), paired)
        assert 0.64 <= power <= 0.96, (paired, mde, power)
    assert time.perf_counter() - start < 120


def test_holm_widens_the_mde_and_tost_needs_the_interval_inside_the_margin():
    a, b = [10.0, 10.4, 9.8, 10.1, 10.2], [10.1, 10.5, 9.9, 10.0, 10.4]
    one, six = seed_level_test(a, b, paired=True), seed_level_test(a, b, paired=True, comparisons=6)
    assert six.mde > 1.2 * one.mde  # alpha / 6 instead of alpha
    assert seed_level_test(a, b, paired=True, margin=1.0).tost_p < 0.05  # a tight difference: equivalent at +-1
    assert seed_level_test(a, b, paired=True, margin=0.05).tost_p > 0.05  # not at +-0.05
    assert holm_adjusted([0.01, 0.04, float("nan")])[:2] == pytest.approx([0.02, 0.04])
    assert math.isnan(seed_level_test([3.0], [4.0], paired=True).p)  # one seed: no variance to test against


def test_a_contrast_naming_no_run_is_refused_before_training(tmp_path: Path):
    from harness.experiments.executor import plan_experiment

    from .conftest import EXPERIMENT, write_yaml

    text = EXPERIMENT + "analysis: {contrasts: [{a: image_only, b: summ}]}\n"
    with pytest.raises(HarnessError) as error:
        plan_experiment(write_yaml(tmp_path / "x.yaml", text))
    assert error.value.field == "analysis.contrasts.0.b" and "did you mean 'sum'" in str(error.value)
    plan = plan_experiment(write_yaml(tmp_path / "y.yaml", EXPERIMENT + "analysis: {contrasts: [{a: image_only, "
                                                                          "b: sum}], margin: 1.0}\n"))
    assert plan.experiment.analysis is not None and plan.experiment.analysis.margin == 1.0
    interaction = EXPERIMENT + ("analysis: {contrasts: [{a: image_only, b: sum, minus: {a: image_only, "
                                "b: text_onli}}]}\n")
    with pytest.raises(HarnessError) as error:
        plan_experiment(write_yaml(tmp_path / "z.yaml", interaction))
    assert error.value.field == "analysis.contrasts.0.minus.b"


def test_the_report_leads_with_the_preregistered_contrasts_and_the_gate_decides_testability(finished, tmp_path):
    """Five seeds per arm, planted R@1 values: the table's difference and interval are the
    per-seed paired t-test's (checked against a hand computation); the tiny runs sit at the floor,
    so gate (c) fails and the verdict is "not testable here"; 3 seeds make it "not confirmatory"."""
    import csv
    import shutil

    from scipy import stats

    from harness.evaluation.results import read_result
    from harness.reporting.analysis import AnalysisConfig
    from harness.reporting.report import write_report

    _, output, _ = finished
    base = {r.method: r for r in (read_result(p) for p in (output / "runs").glob("*/result.json"))}
    runs = tmp_path / "runs"
    shutil.copytree(output / "runs", runs)
    planted = {"image_only": [4.0, 4.5, 3.5, 4.2, 3.8], "sum": [6.0, 6.1, 5.2, 6.5, 5.9]}
    results = []
    for method, values in planted.items():
        for seed, value in enumerate(values):
            results.append(base[method].model_copy(update={"seed": seed, "metrics": {
                **base[method].metrics, "recall_at_1": value}}))
    analysis = AnalysisConfig(contrasts=[{"a": "image_only", "b": "sum"}], margin=0.5)
    text = write_report(results, tmp_path / "report", "planted", runs_dir=runs, analysis=analysis).read_text()
    assert text.index("## Pre-registered analysis") < text.index("Everything below is exploratory") < text.index(
        "## Main results")
    with open(tmp_path / "report" / "tables" / "preregistered.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    differences = np.subtract(planted["sum"], planted["image_only"])
    expected = stats.ttest_rel(planted["sum"], planted["image_only"])
    assert float(row["difference"]) == pytest.approx(differences.mean())
    assert float(row["p"]) == pytest.approx(expected.pvalue)
    assert float(row["low"]) == pytest.approx(expected.confidence_interval().low)
    assert row["verdict"].startswith("not testable here: gate (") and "c" in row["verdict"].split(")")[0]
    fewer = [r for r in results if r.seed < 3]
    few = write_report(fewer, tmp_path / "few", "few", runs_dir=runs, analysis=analysis, formats=["csv"])
    with open(few.parent / "tables" / "preregistered.csv", newline="") as handle:
        assert int(next(csv.DictReader(handle))["seeds_a"]) == 3
    # emphasis follows inference: nothing bold in the exploratory tables, nor a verdict behind a failed gate;
    # with the gate passed and five seeds the decided verdict alone is bold, with three it is not
    main = text[text.index("## Main results"):]
    assert "**" not in main.split("\n\n##")[0] and "<u>" not in text
    from harness.reporting.analysis import analysis_table, verdicts
    from harness.reporting.data import load_groups

    assert "| **not testable" not in text  # the verdict cell behind the failed gate is plain
    passed = verdicts(load_groups(results, runs), analysis, gate=[])
    assert passed[0].confirmatory and "| **sum above image_only" in analysis_table(passed, analysis).markdown()
    undecided = verdicts(load_groups(fewer, runs), analysis, gate=[])
    assert not undecided[0].confirmatory and "**" not in analysis_table(undecided, analysis).markdown()


def test_a_declared_trend_is_the_slope_on_log_n_over_every_run_and_joins_the_holm_family(finished, tmp_path):
    """Three arms N = 1, 10, 40 with five seeds each, R@1 planted at 3 + 0.5 log N plus noise:
    the trend row's slope interval holds 0.5, it is called increasing (behind the failed gate),
    and a flat planting is not."""
    import copy
    import csv
    import math
    import shutil

    from harness.evaluation.results import read_result
    from harness.reporting.analysis import AnalysisConfig
    from harness.reporting.report import write_report
    from harness.reporting.seed_level import trend_test

    flat = trend_test([0.0, 0.0, 1.0, 1.0, 2.0, 2.0], [5.0, 5.2, 5.1, 4.9, 5.0, 5.1], seeds_per_arm=2)
    assert flat.p > 0.5 and flat.low < 0 < flat.high
    _, output, _ = finished
    template = read_result(next((output / "runs").glob("*/result.json")))
    runs = tmp_path / "runs"
    shutil.copytree(output / "runs", runs)
    rng = np.random.default_rng(3)
    results = []
    for n in (1, 10, 40):
        config = copy.deepcopy(template.config)
        config["method"]["params"]["pool_size"] = n
        for seed in range(5):
            value = 3 + 0.5 * math.log(n) + rng.normal(0, 0.1)
            results.append(template.model_copy(update={"label": f"N={n}", "seed": seed, "config": config,
                                                       "metrics": {**template.metrics, "recall_at_1": value}}))
    analysis = AnalysisConfig(contrasts=[{"a": "N=1", "b": "N=10"}], trend="method.params.pool_size")
    write_report(results, tmp_path / "report", "trend", runs_dir=runs, analysis=analysis, formats=["csv"])
    with open(tmp_path / "report" / "tables" / "preregistered.csv", newline="") as handle:
        rows = {row["a"]: row for row in csv.DictReader(handle)}
    trend = rows["trend"]
    assert trend["b"] == "log pool_size" and float(trend["low"]) < 0.5 < float(trend["high"])
    assert "the test alone: not confirmatory" not in trend["verdict"] and "increasing with log pool_size" in trend[
        "verdict"]
    assert float(rows["N=1"]["p_holm"]) >= float(rows["N=1"]["p"])  # one Holm family of two tests


def test_an_interaction_is_the_paired_test_of_the_difference_of_differences(finished, tmp_path):
    """Four arms on five shared seeds, the pool's gain planted at +0.1 R@1 at 300 steps and +2.0
    at 3,000: the interaction (gain at 300) − (gain at 3,000) is the per-seed difference of
    differences, tested paired (checked against scipy), and called below; arms on other seeds
    are refused."""
    from scipy import stats

    from harness.evaluation.results import read_result
    from harness.reporting.analysis import AnalysisConfig, verdicts
    from harness.reporting.data import load_groups

    _, output, _ = finished
    template = read_result(next((output / "runs").glob("*/result.json")))
    rng = np.random.default_rng(5)
    base = {"N=1 short": 3.0, "N=10 short": 3.1, "N=1 long": 4.0, "N=10 long": 6.0}
    values = {label: [mean + rng.normal(0, 0.2) for _ in range(5)] for label, mean in base.items()}
    results = [template.model_copy(update={"label": label, "seed": seed, "metrics": {
        **template.metrics, "recall_at_1": value}}) for label, seeds in values.items()
        for seed, value in enumerate(seeds)]
    analysis = AnalysisConfig(contrasts=[{"a": "N=1 short", "b": "N=10 short",
                                          "minus": {"a": "N=1 long", "b": "N=10 long"}}], margin=0.5)
    [found] = verdicts(load_groups(results, None), analysis, gate=[])
    gains = np.subtract(values["N=10 short"], values["N=1 short"]) - np.subtract(values["N=10 long"],
                                                                                   values["N=1 long"])
    assert found.test.difference == pytest.approx(gains.mean()) and found.test.paired
    assert found.test.p == pytest.approx(stats.ttest_1samp(gains, 0.0).pvalue)
    assert found.words.startswith("(N=10 short − N=1 short) below (N=10 long − N=1 long)") and found.confirmatory
    shifted = [r.model_copy(update={"seed": r.seed + 1}) if r.label == "N=10 long" else r for r in results]
    with pytest.raises(HarnessError, match="different seeds"):
        verdicts(load_groups(shifted, None), analysis, gate=[])


def test_a_main_effect_averages_the_factors_difference_over_the_other_factors_cells(finished, tmp_path):
    """A 2 x 3 grid (task prompt x soft prompt pool / universal / off) on five shared seeds, the task
    prompt planted at +1.0 R@1 in every cell: its main effect is, per seed, the mean of the three
    cells' differences, tested paired (checked against scipy); a level the grid never ran is refused
    when the experiment is read, before any training."""
    import copy

    from scipy import stats

    from harness.evaluation.results import read_result
    from harness.reporting.analysis import AnalysisConfig, verdicts
    from harness.reporting.data import load_groups

    _, output, _ = finished
    template = read_result(next((output / "runs").glob("*/result.json")))
    rng = np.random.default_rng(7)
    results, cells = [], {}
    for soft, base in (("pool", 3.0), ("universal", 4.0), ("off", 2.0)):
        for task in (False, True):
            config = copy.deepcopy(template.config)
            config["method"]["params"].update(task_prompt=task, soft_prompt=soft)
            cells[(soft, task)] = [base + (1.0 if task else 0.0) + rng.normal(0, 0.2) for _ in range(5)]
            results += [template.model_copy(update={"label": f"{soft}, task {task}", "seed": seed, "config": config,
                                                    "metrics": {**template.metrics, "recall_at_1": value}})
                        for seed, value in enumerate(cells[(soft, task)])]
    analysis = AnalysisConfig(contrasts=[{"factor": "method.params.task_prompt", "a": False, "b": True}],
                              margin=0.5)
    [found] = verdicts(load_groups(results, None), analysis, gate=[])
    per_seed = np.mean([np.subtract(cells[(soft, True)], cells[(soft, False)])
                        for soft in ("pool", "universal", "off")], axis=0)
    assert found.test.difference == pytest.approx(per_seed.mean()) and found.test.paired
    assert found.test.p == pytest.approx(stats.ttest_1samp(per_seed, 0.0).pvalue)
    assert found.words.startswith("task_prompt=true (main effect) above task_prompt=false") and found.confirmatory


def test_a_main_effect_at_a_level_no_run_sets_is_refused_before_training(tmp_path: Path):
    from typer.testing import CliRunner

    from harness.cli import app

    from .conftest import EXPERIMENT, write_yaml

    text = EXPERIMENT + "analysis:\n  contrasts:\n    - {factor: train.lr, a: 0.001, b: 0.01}\n"
    config = write_yaml(tmp_path / "x.yaml", text)
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "analysis.contrasts.0.a" in result.stderr and "train.lr" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_method_by_subset_interaction_tests_the_gain_on_one_subset_against_the_other(finished, tmp_path):
    """b's gain over a planted at +2.0 on the joint-reading queries and +0.2 on the rest, five shared
    seeds: the contrast with ``between`` is, per seed, the difference of the two gains, tested paired
    (checked against scipy); ``minus`` and ``between`` together are refused."""
    from scipy import stats

    from harness.evaluation.results import read_result
    from harness.reporting.analysis import AnalysisConfig, verdicts
    from harness.reporting.data import load_groups

    _, output, _ = finished
    template = read_result(next((output / "runs").glob("*/result.json")))
    rng = np.random.default_rng(11)
    planted = {"a": (3.0, 5.0), "b": (5.0, 5.2)}  # (joint, rest)
    values = {(arm, seed): (joint + rng.normal(0, 0.2), rest + rng.normal(0, 0.2))
              for arm, (joint, rest) in planted.items() for seed in range(5)}
    results = [template.model_copy(update={"label": arm, "seed": seed, "metrics": {
        **template.metrics, "recall_joint_at_1": joint, "recall_rest_at_1": rest}})
        for (arm, seed), (joint, rest) in values.items()]
    between = ["recall_joint_at_1", "recall_rest_at_1"]
    analysis = AnalysisConfig(contrasts=[{"a": "a", "b": "b", "between": between}], margin=0.5)
    [found] = verdicts(load_groups(results, None), analysis, gate=[])
    gains = np.array([(values[("b", s)][0] - values[("a", s)][0]) - (values[("b", s)][1] - values[("a", s)][1])
                      for s in range(5)])
    assert found.test.difference == pytest.approx(gains.mean()) and found.test.paired
    assert found.test.p == pytest.approx(stats.ttest_1samp(gains, 0.0).pvalue)
    assert found.words.startswith("(b − a) on R@1 joint above (b − a) on R@1 rest") and found.confirmatory
    with pytest.raises(ValueError, match="not both"):
        AnalysisConfig(contrasts=[{"a": "a", "b": "b", "between": between, "minus": {"a": "a", "b": "b"}}])
