"""Submission files (CIRR, CIRCO) and `harness score`: re-scoring without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.data.cirr import read_cirr_split
from harness.data.datasets import dataset_root
from harness.evaluation.protocol import EvalConfig
from harness.evaluation.results import read_result
from harness.evaluation.saved_rankings import score
from harness.evaluation.submission import circo_submission, cirr_submission, read_submission
from harness.experiments.config import RunConfig

from .conftest import FIXTURES

#: The evaluation's own diagnostics of the embedded benchmark: no protocol metric, so not scored.
DIAGNOSTICS = ("intent_fidelity", "visual_retention")


def _run_dirs(output: Path) -> list[Path]:
    return sorted(p.parent for p in (output / "runs").glob("*/result.json"))


def _metric_lines(text: str) -> dict[str, float]:
    metric_lines = [line for line in text.splitlines() if line.startswith(("recall", "avg", "map", "top1_"))]
    return {line.split()[0]: float(line.split()[1]) for line in metric_lines}


def test_score_reproduces_the_metrics_the_evaluation_wrote(finished):
    _, output, _ = finished
    for run_dir in _run_dirs(output):
        result = CliRunner().invoke(app, ["score", str(run_dir)])
        assert result.exit_code == 0, result.output
        assert "matches result.json" in result.stdout
        written = read_result(run_dir / "result.json").metrics
        printed = _metric_lines(result.stdout)
        # R@1 within the group needs each query's target or a group member in its top 50; else it is not re-checked
        assert set(written) - set(DIAGNOSTICS) - set(printed) <= {"recall_group_at_1", "group_auc"}
        assert printed == pytest.approx({k: round(v, 2) for k, v in written.items() if k in printed}, abs=0.006)


def test_submission_files_round_trip_through_score(finished, tmp_path: Path):
    _, output, _ = finished
    run_dir = _run_dirs(output)[0]
    result = CliRunner().invoke(app, ["submit", str(run_dir), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    recall, subset = tmp_path / "val_pred_ranks_recall.json", tmp_path / "val_pred_ranks_recall_subset.json"
    payload = json.loads(recall.read_text())
    assert payload["version"] == "rc2" and payload["metric"] == "recall"
    assert all(len(v) == 50 and len(set(v)) == 50 for k, v in payload.items() if k not in ("version", "metric"))
    assert all(len(v) == 3 for k, v in json.loads(subset.read_text()).items() if k not in ("version", "metric"))
    config = RunConfig.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text()))
    root = dataset_root(config.dataset, progress=False)
    scored = CliRunner().invoke(app, ["score", str(recall), str(subset), "--dataset", "synthetic", "--root", str(root),
                                      "--split", "val"])
    assert scored.exit_code == 0, scored.output
    written = read_result(run_dir / "result.json").metrics
    printed = _metric_lines(scored.stdout)
    # R@1 within the group needs each query's target or a group member in its top 50; else it is not re-checked
    assert set(written) - set(DIAGNOSTICS) - set(printed) <= {"recall_group_at_1", "group_auc"}
    assert printed == pytest.approx({k: round(v, 2) for k, v in written.items() if k in printed}, abs=0.006)


def test_official_cirr_demo_files_pass_validation_and_are_rewritten_identically():
    source = FIXTURES / "cirr"
    split, _ = read_cirr_split(source, "test1")  # annotations only: the images are absent
    demo = source / "demo_files"
    merged: dict[int, dict] = {}
    for name in ("test1_pred_ranks_recall.json", "test1_pred_ranks_recall_subset.json"):
        for entry in read_submission(demo / name):
            merged.setdefault(entry["pairid"], {}).update(entry)
    sample = {t.pairid for t in split.triplets}
    entries = [entry for pairid, entry in merged.items() if pairid in sample]  # the fixture holds a sample of test1
    recall, subset = cirr_submission(entries, split)
    original = json.loads((demo / "test1_pred_ranks_recall.json").read_text())
    assert recall == {k: v for k, v in original.items() if k in ("version", "metric") or int(k) in sample}
    assert subset["metric"] == "recall_subset" and len(subset) == len(sample) + 2


def test_invalid_rankings_are_refused_before_writing():
    source = FIXTURES / "cirr"
    from harness.core.errors import HarnessError

    split, _ = read_cirr_split(source, "test1")
    triplet = split.triplets[0]
    others = [name for name in split.gallery if name != triplet.reference]
    good = {"pairid": triplet.pairid, "top": others[:50],
            "subset_top": [m for m in triplet.subset if m != triplet.reference]}
    rest = [{"pairid": t.pairid, "top": [n for n in split.gallery if n != t.reference][:50],
             "subset_top": [m for m in t.subset if m != t.reference]} for t in split.triplets[1:]]
    cirr_submission([good, *rest], split)  # valid
    with pytest.raises(HarnessError, match="the reference"):
        cirr_submission([{**good, "top": [triplet.reference, *others[:49]]}, *rest], split)
    with pytest.raises(HarnessError, match="listed twice"):
        cirr_submission([{**good, "top": [others[0], *others[:49]]}, *rest], split)
    with pytest.raises(HarnessError, match="have no ranking"):
        cirr_submission(rest, split)


def test_circo_submission_example_is_read_and_scored(tmp_path: Path):
    from harness.data.circo import read_circo_split

    from .circo_format import write_circo_annotations, write_circo_submission

    queries = write_circo_annotations(tmp_path)["val"]
    write_circo_submission(tmp_path / "submission_val.json", queries)
    split, _ = read_circo_split(tmp_path, "val")  # no images folder: annotations only
    entries = read_submission(tmp_path / "submission_val.json")
    assert len(entries) == 40 and all(len(e["top"]) == 50 for e in entries)
    _, config = EvalConfig().resolved("circo")
    metrics, _ = score(entries, split, config)
    assert set(metrics) == {"recall_at_5", "recall_at_10", "recall_at_25", "recall_at_50",
                            "map_at_5", "map_at_10", "map_at_25", "map_at_50"}
    assert all(0 <= v <= 100 for v in metrics.values())
    # our writer emits the same format: query id -> 50 unique integer ids
    split.gallery.extend({n for e in entries for n in e["top"]} - set(split.gallery))
    rewritten = circo_submission(entries, split)
    original = json.loads((tmp_path / "submission_val.json").read_text())
    assert rewritten == original


def test_soft_recall_reads_cirrs_target_soft_scores():
    source = FIXTURES / "cirr"
    split, _ = read_cirr_split(source, "val")
    scored = [t for t in split.triplets if 0.5 in dict(t.soft_targets).values()]
    assert scored, "the fixture has queries with a partly correct (0.5) label"
    query = scored[0]
    soft = dict(query.soft_targets)
    ordered = sorted(soft, key=lambda name: soft[name])  # the 0.5 image first, the target after it
    filler = [n for n in split.gallery if n not in soft and n != query.reference]
    entries = [{"pairid": query.pairid, "top": [*ordered, *filler][:50]}]
    one = type(split)(split.dataset, split.split, split.root, [query], split.gallery, split.images)
    hard, _ = score(entries, one, EvalConfig(ks=[1, 50], subset_ks=[]))
    soft_metrics, _ = score(entries, one, EvalConfig(ks=[1, 50], subset_ks=[], target_field="soft"))
    assert hard["recall_at_1"] == 0.0 and soft_metrics["recall_at_1"] == pytest.approx(50.0)  # half credit
    assert soft_metrics["recall_at_50"] == pytest.approx(100.0) and hard["recall_at_50"] == 100.0
