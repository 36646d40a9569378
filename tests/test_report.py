"""Generated findings: which differences exceed the seed-to-seed spread."""

from __future__ import annotations

import numpy as np
import pytest

from harness.evaluation.results import RunResult
from harness.reporting.report import findings


def _result(label: str, method: str, seed: int, r1: float) -> RunResult:
    return RunResult(run_id=f"{label}-{seed}", experiment="x", label=label, method=method, dataset="d", split="val",
                     seed=seed, metrics={"recall_at_1": r1, "recall_subset_at_1": 50.0}, num_queries=1, num_gallery=1,
                     protocol={}, parameters={"total": 1, "trainable": 1}, train={}, timings={}, config={},
                     environment={}, created_at="now")


def test_methods_with_one_setting_each_are_ranked_with_resolved_gaps():
    results = [_result(label, label, seed, value)
               for label, values in {"a": (10.0, 12.0), "b": (5.0, 5.2), "c": (4.6, 5.4)}.items()
               for seed, value in enumerate(values)]
    line = next(line for line in findings(results) if line.startswith("- R@1"))
    # a (11.0 +- 1.4) clears b (5.1 +- 0.1) and c; b and c overlap
    assert line.startswith("- R@1, best first: a 11.0 ± 1.4 > b 5.1 ± 0.1 ≈ c 5.0 ± 0.6.")
    assert "2 of 3 pairs differ by more than the seed spread; not resolved: b vs c." in line
    fewer = [_result(label, label, seed, value)
             for label, values in {"a": (10.0, 12.0), "b": (9.0, 11.0), "c": (4.0, 4.2)}.items()
             for seed, value in enumerate(values)]
    line = next(line for line in findings(fewer) if line.startswith("- R@1"))
    assert line.endswith("2 of 3 pairs differ by more than the seed spread; not resolved: a vs b.")


def test_method_under_study_is_compared_with_every_other_method():
    results = [_result(f"lvlm(n={n})", "lvlm", seed, 9.0 + n) for n in (1, 2) for seed in (0, 1)]
    results += [_result("sum", "sum", seed, 12.0 + seed) for seed in (0, 1)]
    text = "\n".join(findings(results))
    assert "R@1: lvlm ranges 10.0-11.0 over its 2 settings" in text
    assert "below sum (12.5 ± 0.7) by 1.5" in text


def test_plots_of_methods_with_one_setting_each_draw_every_method(tmp_path):
    import warnings

    from harness.reporting import plots
    from harness.reporting.data import load_groups

    results = [_result(label, label, seed, 10.0 + seed) for label in ("a", "b") for seed in (0, 1)]
    for r in results:
        r.metrics.update({"recall_at_5": 20.0, "recall_at_10": 30.0, "recall_at_50": 60.0})
        r.timings["ms_per_query_batch1_p50"] = 1.0 if r.label == "a" else 2.0
        r.metrics_by_edit_type.update({"add": {"recall_at_1": 5.0}, "move": {"recall_at_1": 7.0}})
    groups = load_groups(results, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stems = [plots.pareto(groups, "recall_at_1", tmp_path), plots.by_edit_type(groups, "recall_at_1", tmp_path)]
    assert not [w for w in caught if "No artists" in str(w.message)]  # an empty plot warns so
    for stem in stems:
        assert (tmp_path / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    assert plots.pareto_front([(1.0, 10.0), (2.0, 9.0), (2.0, 12.0), (3.0, 12.0)]) == [0, 2]


def test_published_numbers_get_their_own_labelled_table(tmp_path):
    from harness.reporting.report import write_report

    results = [_result("a", "a", seed, 10.0) for seed in (0, 1)]
    for r in results:
        r.timings["encode_and_score_ms_per_query"] = 1.0
    path = write_report(results, tmp_path, "t", published=[
        {"method": "X (paper)", "source": "Table 1", "metrics": {"recall_at_1": 53.64, "dress/recall_at_10": 50.42}}])
    text = path.read_text()
    assert "| method | R@1 | dress/recall_at_10 | source |" in text
    assert "| X (paper) | 53.64 | 50.42 | Table 1 |" in text
    assert text.index("Published numbers (not measured here)") > text.index("| a | 0,1 |")  # after the measured table
    assert "No per-query statistics" in text  # hand-made results have no rankings to test over


def test_an_ablation_over_a_two_key_grid_names_each_row_by_its_grid_point():
    from harness.reporting.data import load_groups
    from harness.reporting.sections import ablation_table

    results = []
    for steps in (1000, 300):
        for pool in (1, 10):
            label = f"train.max_steps={steps}, method.params.pool_size={pool}"
            config = {"train": {"max_steps": steps}, "method": {"name": "lvlm", "params": {"pool_size": pool}}}
            results += [_result(label, "lvlm", seed, steps / 100 + pool).model_copy(update={"config": config})
                        for seed in (0, 1)]
    table = ablation_table(load_groups(results, None), "lvlm", "train.max_steps", ["recall_at_1"])
    assert table.header[:3] == ["max steps", "run", "R@1"]
    assert [(row[0].text, row[1].text) for row in table.rows] == [
        ("300", "train.max_steps=300, method.params.pool_size=1"),
        ("300", "train.max_steps=300, method.params.pool_size=10"),
        ("1000", "train.max_steps=1000, method.params.pool_size=1"),
        ("1000", "train.max_steps=1000, method.params.pool_size=10")]
    one_key = [r for r in results if r.label.endswith("pool_size=1")]
    assert ablation_table(load_groups(one_key, None), "lvlm", "train.max_steps", ["recall_at_1"]).header[:2] == [
        "max steps", "R@1"]  # a one-key grid keeps its short table


def test_the_regime_gate_fails_a_floor_run_and_a_caption_blind_one(finished, tmp_path):
    """Gate (c) fails runs at the floor (the tiny runs), gate (b) a run that ranks as image_only
    does (it never reads the caption), gate (a) a run whose probe misses shapes; the report prints
    the gate before any comparison and calls the claim not testable."""
    import shutil

    from harness.evaluation.results import read_result
    from harness.reporting.data import load_groups
    from harness.reporting.gate import regime_gate
    from harness.reporting.report import write_report

    _, output, _ = finished
    results = {r.method: r for r in (read_result(p) for p in (output / "runs").glob("*/result.json"))}
    runs = tmp_path / "runs"
    shutil.copytree(output / "runs", runs)
    blind = results["image_only"]
    shutil.copytree(runs / blind.run_id, runs / "blind0000000")
    copy = blind.model_copy(update={"run_id": "blind0000000", "label": "caption_blind", "method": "sum"})
    checks = {c.letter: c for c in regime_gate(load_groups([blind, copy], runs), "recall_at_1")}
    assert checks["b"].passed is False and "caption_blind" in checks["b"].detail
    assert checks["c"].passed is False and blind.metrics["recall_at_1"] < 15
    seeing = {"cell": 100.0, "shape": 99.0, "colour": 100.0, "size": 100.0}
    sighted = [r.model_copy(update={"method_statistics": {**r.method_statistics, "perception": seeing}})
               for r in (blind, copy)]
    assert regime_gate(load_groups(sighted, runs), "recall_at_1")[0].passed is True
    shapeless = {**seeing, "shape": 20.0}
    half_blind = [r.model_copy(update={"method_statistics": {**r.method_statistics, "perception": shapeless}})
                  for r in sighted]
    perception = regime_gate(load_groups(half_blind, runs), "recall_at_1")[0]
    assert perception.passed is False and "caption_blind" in perception.detail
    text = write_report([blind, copy], tmp_path / "report", "gate", runs_dir=runs).read_text()
    gate = text.split("## Regime gate")[1].split("## ")[0]
    assert "(b) caption use: **fails**" in gate and "not testable here: gate" in gate
    assert text.index("## Regime gate") < text.index("## Main results")


def test_the_main_table_has_a_chance_row_a_run_must_clear(finished, tmp_path):
    """A random ranking's expected R@K (K of the gallery less the reference) and Rs@K (K of the
    five set members less the reference): Rs@1 20 %, so 26 % reads as barely above chance."""
    from harness.evaluation.results import read_result
    from harness.reporting.data import load_groups
    from harness.reporting.sections import main_table

    _, output, _ = finished
    results = [read_result(p) for p in sorted((output / "runs").glob("*/result.json"))]
    table = main_table(load_groups(results, output / "runs"))
    header = [h for h in table.header]
    chance = next(row for row in table.rows if row[0].text == "chance (a random ranking)")
    values = {name: cell.value for name, cell in zip(header, chance)}
    assert values["R@1"] == 100.0 / (results[0].num_gallery - 1)
    assert values["Rs@1"] == pytest.approx(20.0) and values["Rs@2"] == pytest.approx(40.0)
    assert "Row 'chance'" in table.caption
    assert all(cell.mark == "" for cell in chance)  # never marked best


def test_runs_evaluated_differently_never_share_a_row(finished):
    """A smoke run (eval.max_queries) beside a full run of the same method and seed: two rows,
    each labelled with what it was measured on, in the printed table, the report's groups and
    results.csv, never one row averaged over 'seeds 0,0'."""
    from harness.evaluation.results import read_result
    from harness.reporting.data import load_groups
    from harness.reporting.report import csv_text
    from harness.reporting.tables import results_table

    _, output, _ = finished
    full = next(read_result(p) for p in sorted((output / "runs").glob("*/result.json")))
    smoke = full.model_copy(update={"run_id": "smoke", "num_queries": 16, "metrics": {
        k: v + 10 for k, v in full.metrics.items()}})
    other_split = full.model_copy(update={"run_id": "test", "split": "test"})
    labels = [g.label for g in load_groups([full, smoke, other_split], None)]
    assert labels == [f"{full.label} [val, {full.num_queries} queries]", f"{full.label} [val, 16 queries]",
                      f"{full.label} [test, {full.num_queries} queries]"]
    table = results_table([full, smoke])
    assert "| 0 |" in table and "0,0" not in table and f"{full.label} [16 queries]" in table
    assert f"{full.label} [16 queries]" in csv_text([full, smoke])
    assert [g.label for g in load_groups([full, full.model_copy(update={"seed": 1})], None)] == [full.label]


def test_a_report_of_runs_from_uncommitted_code_is_refused_unless_allowed(finished, tmp_path, monkeypatch):
    """A run made from a tree with uncommitted changes: `harness report` refuses in one line naming
    --allow-dirty and writes nothing; with it, the report says so at its top. `harness run`
    keeps its runs and says why the report was not written."""
    import json
    import shutil

    from typer.testing import CliRunner

    from harness.cli import app
    from harness.reporting import build

    _, output, _ = finished
    copy = tmp_path / "tiny"
    shutil.copytree(output, copy)
    for index, result_file in enumerate(sorted((copy / "runs").glob("*/result.json"))):  # whatever tree ran them
        data = json.loads(result_file.read_text())
        data["environment"]["git_commit"] = "0123abc+dirty" if index == 0 else "0123abc"
        result_file.write_text(json.dumps(data))
    result_file = sorted((copy / "runs").glob("*/result.json"))[0]
    data = json.loads(result_file.read_text())
    monkeypatch.setenv("CIR_HARNESS_ALLOW_DIRTY", "0")
    monkeypatch.setattr(build, "git_commit", lambda: "0123abc")  # the code writing the report: clean
    out = tmp_path / "report"
    refused = CliRunner().invoke(app, ["report", str(copy), "--out", str(out)])
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, refused.output
    assert "--allow-dirty" in refused.stderr and "1 of 2 runs" in refused.stderr and "0123abc+dirty" in refused.stderr
    assert not out.exists()
    allowed = CliRunner().invoke(app, ["report", str(copy), "--out", str(out), "--allow-dirty"])
    assert allowed.exit_code == 0, allowed.output
    setup = (out / "report.md").read_text().split("\n\n")[2]
    assert setup.startswith("**Written from uncommitted code (--allow-dirty)**: 1 of 2 runs")
    monkeypatch.setattr(build, "git_commit", lambda: "4567def+dirty")  # and the report's own code
    said: list[str] = []
    from harness.experiments.runner import write_report_or_say_why

    data["environment"]["git_commit"] = "0123abc"
    result_file.write_text(json.dumps(data))
    assert write_report_or_say_why(copy, False, said.append) is None
    assert "the code writing the report has uncommitted changes (4567def+dirty)" in said[0]
    assert "--allow-dirty" in said[0]


def test_figure_5_is_read_against_uniform_attention_with_an_interval_over_seeds(finished):
    """A prompt whose caption share stands above the uniform reference in every seed is read
    'above uniform' (t-interval over the seeds' means, checked by hand); one at the reference
    is 'not resolved', however non-zero its share."""
    from scipy import stats

    from harness.evaluation.results import read_result
    from harness.reporting.attention import attention_table
    from harness.reporting.data import load_groups

    _, output, _ = finished
    base = read_result(next((output / "runs").glob("*/result.json")))
    rng = np.random.default_rng(0)
    results, gaps = [], []
    for label, lift in (("looks", 0.2), ("uniform", 0.0)):
        for seed in range(3):
            uniform = rng.uniform(0.2, 0.4, 16)
            observed = uniform + lift + rng.normal(0, 0.05, 16)
            gaps += [(observed - uniform).mean()] if label == "looks" else []
            shares = {"soft_prompt": {"caption": observed.tolist()}}
            reference = {"soft_prompt": {"caption": uniform.tolist()}}
            results.append(base.model_copy(update={"label": label, "seed": seed, "method_statistics": {
                "attention_share_per_query": shares, "attention_share_uniform_per_query": reference}}))
    table = attention_table(load_groups(results, None))
    rows = {row[0]: row for row in table.csv_rows}
    expected = stats.t.interval(0.95, 2, loc=np.mean(gaps), scale=np.std(gaps, ddof=1) / np.sqrt(3))
    assert rows["looks"][5] == pytest.approx(np.mean(gaps)) and rows["looks"][6] == pytest.approx(expected[0])
    assert rows["looks"][8] == "above uniform" and rows["uniform"][8] == "not resolved"
    assert rows["uniform"][3] > 0.1  # a non-zero share that says nothing


def test_prompt_specificity_is_mutual_information_against_a_permutation_null():
    """Prompts chosen by edit family carry log2(4) = 2 bits about it and beat every shuffle;
    prompts drawn at random carry a little (the plug-in bias) that the null shares."""
    from harness.reporting.specificity import mutual_information, permutation_test

    families = np.repeat(np.array(["add", "remove", "recolour", "move"]), 16)
    by_family = np.repeat(np.arange(4), 16)
    assert mutual_information(by_family, families) == pytest.approx(2.0)
    observed, null, p = permutation_test(by_family, families, permutations=500)
    assert observed == pytest.approx(2.0) and null < 0.5 and p == pytest.approx(1 / 501)
    random = np.random.default_rng(1).integers(0, 10, 64)
    observed, null, p = permutation_test(random, families, permutations=500)
    assert observed > 0 and p > 0.05 and abs(observed - null) < 0.3
