"""The composition gap (harness.reporting.composition) on the real CIRR annotation fixtures with
planted rankings: which queries one modality solves, each run's recall on the rest (against a
brute-force count), and a subset file that round-trips through `harness subsets` and
eval.subset_file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.core.errors import HarnessError
from harness.data.cirr import read_cirr_split
from harness.evaluation.protocol import EvalConfig
from harness.evaluation.results import write_rankings
from harness.evaluation.subsets import read_subset
from harness.reporting.composition import composition_table, unimodal_flags
from harness.reporting.data import load_groups

K = 10


def _planted(cirr_fixtures: Path, finished, tmp_path: Path):
    """image_only, text_only and sum runs (two seeds each) whose target ranks are drawn at random
    per query, with every fifth query put first by image_only (solved by one modality)."""
    from harness.evaluation.results import read_result

    split, _ = read_cirr_split(cirr_fixtures, "val")
    triplets = split.triplets
    _, output, _ = finished
    template = read_result(next((output / "runs").glob("*/result.json")))
    rng = np.random.default_rng(0)
    ranks: dict[tuple[str, int], list[int]] = {}
    results = []
    for method in ("image_only", "text_only", "sum"):
        for seed in (0, 1):
            drawn = [int(r) for r in rng.integers(10, 60, size=len(triplets))]  # never within the top 10
            if method == "image_only":
                drawn = [0 if row % 5 == 0 else r for row, r in enumerate(drawn)]
            if method == "sum":
                drawn = [int(r) for r in rng.integers(0, 20, size=len(triplets))]
            ranks[method, seed] = drawn
            run_id = f"{method}{seed}".ljust(12, "0")
            (tmp_path / "runs" / run_id).mkdir(parents=True)
            write_rankings(tmp_path / "runs" / run_id / "rankings.jsonl.gz",
                           [{"pairid": t.pairid, "top": [], "target_rank": r} for t, r in zip(triplets, drawn)])
            metrics = {f"recall_at_{k}": 100.0 * np.mean([r < k for r in drawn]) for k in (1, K)}
            results.append(template.model_copy(update={"run_id": run_id, "method": method, "label": method,
                                                       "seed": seed, "metrics": metrics,
                                                       "rankings_file": "rankings.jsonl.gz"}))
            (tmp_path / "runs" / run_id / "result.json").write_text(results[-1].model_dump_json())
    manifest = {"experiment": {"experiment": "planted"}, "runs": [r.run_id for r in results]}
    (tmp_path / "experiment.json").write_text(json.dumps(manifest))
    return triplets, ranks, results


def test_one_modality_solves_what_it_ranks_first_and_the_rest_is_counted_by_hand(cirr_fixtures, finished, tmp_path):
    triplets, ranks, results = _planted(cirr_fixtures, finished, tmp_path)
    groups = load_groups(results, tmp_path / "runs")
    flags = unimodal_flags(groups, K)
    assert flags is not None and len(flags) == len(triplets) == 303
    for row, t in enumerate(triplets):
        assert flags[t.pairid] is (row % 5 != 0)  # image_only put every fifth target first (both seeds)
    table = composition_table(groups, flags, K)
    assert table is not None
    row = next(r for r in table.csv_rows if r[0] == "sum")
    required = [row_ for row_ in range(len(triplets)) if row_ % 5 != 0]
    for position, (k, part) in enumerate([(K, required), (K, None), (1, required), (1, None)]):
        rows = part if part is not None else [r for r in range(len(triplets)) if r % 5 == 0]
        brute = 100.0 * np.mean([(ranks["sum", 0][r] < k) + (ranks["sum", 1][r] < k) for r in rows]) / 2
        assert row[1 + 3 * position] == pytest.approx(brute)
    assert f"{100 * len(required) / 303:.1f} % of the 303 queries" in table.caption


def test_a_subsets_file_round_trips_through_eval_subset_file(cirr_fixtures, finished, tmp_path):
    from harness.evaluation.evaluate import _chosen_queries

    triplets, _, results = _planted(cirr_fixtures, finished, tmp_path)
    path = tmp_path / "flags.json"
    result = CliRunner().invoke(app, ["subsets", str(tmp_path), "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("242 of 303 queries need composition")
    split, _ = read_cirr_split(cirr_fixtures, "val")
    chosen = _chosen_queries(split, EvalConfig(subset_file=str(path)))
    assert [t.pairid for t in chosen] == [t.pairid for row, t in enumerate(triplets) if row % 5 != 0]
    listed = tmp_path / "listed.json"
    listed.write_text(json.dumps([triplets[0].pairid, triplets[3].pairid]))  # a published subset: a list of ids
    assert [t.pairid for t in _chosen_queries(split, EvalConfig(subset_file=str(listed)))] == [
        triplets[0].pairid, triplets[3].pairid]
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps([triplets[0].pairid, 99999999]))
    with pytest.raises(HarnessError, match="1 of the file's 2 pair ids"):
        _chosen_queries(split, EvalConfig(subset_file=str(foreign)))
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "cir-harness subsets v1", "queries": [1, 2]}')
    with pytest.raises(HarnessError, match="eval.subset_file"):
        read_subset(broken)


def test_harness_subsets_writes_the_flags_of_an_experiment_folder(finished, tmp_path):
    """The tiny experiment has no text_only run: one line naming the folder and the fix, exit 2."""
    _, output, _ = finished
    result = CliRunner().invoke(app, ["subsets", str(output)])
    assert result.exit_code == 2 and "image_only and text_only" in result.output and "Traceback" not in result.output


def test_a_declared_reference_experiment_gives_the_gap_to_an_experiment_without_unimodal_runs(
        cirr_fixtures, finished, tmp_path):
    """report.unimodal: the sum runs' report takes its flags from another experiment folder's
    image_only and text_only runs; a folder that is not an experiment is one line naming the field."""
    from harness.reporting.build import _unimodal
    from harness.reporting.report import write_report

    _, _, results = _planted(cirr_fixtures, finished, tmp_path)
    alone = [r for r in results if r.method == "sum"]
    plain = write_report(alone, tmp_path / "plain", "alone", runs_dir=tmp_path / "runs").read_text()
    assert "## Composition gap" not in plain
    text = write_report(alone, tmp_path / "with", "alone", runs_dir=tmp_path / "runs",
                        unimodal=_unimodal(str(tmp_path))).read_text()
    assert "## Composition gap" in text and f"{100 * 242 / 303:.1f} % of the 303 queries" in text
    with pytest.raises(HarnessError) as error:
        _unimodal(str(tmp_path / "runs"))
    assert error.value.field == "report.unimodal"
