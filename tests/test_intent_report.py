"""What a ranking shows about following intent on the benchmark v2 (harness.evaluation.intent), and
the report sections built from it (harness.reporting.intent_sections)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.data.cirr import load_cirr_split
from harness.data.triplet import CIRSplit
from harness.evaluation.intent import annotate, group_metrics, learning_free, records, rescored
from harness.evaluation.results import RunResult


def _split(root: Path) -> CIRSplit:
    return load_cirr_split(root, "val")


def _rank(split: CIRSplit, top_of: Any) -> dict[str, float]:
    """Annotate rankings whose top-1 per query is ``top_of(record, triplet)``; the group scores
    put that image first and the rest in the group's order."""
    found = records(split)
    assert found is not None
    rankings: list[dict[str, Any]] = []
    for t in split.triplets:
        top = top_of(found[t.pairid], t)
        rankings.append({"pairid": t.pairid, "top": [top], "target_rank": 0 if top == t.target else 1})

    def scores(row: int, names: list[str]) -> list[float]:
        top = rankings[row]["top"][0]
        return [1.0 if name == top else 0.0 for name in names]

    assert annotate(split, split.triplets, rankings, scores)
    return group_metrics(rankings)


def _first(record: dict[str, Any], kind: str) -> str | None:
    return next((name for name, k in record["group"].items() if k == kind), None)


def test_a_perfect_ranking_scores_100_everywhere(v2_benchmark: Path):
    metrics = _rank(_split(v2_benchmark), lambda record, t: t.target)
    for key in ("recall_joint_at_1", "recall_rest_at_1", "recall_group_at_1", "recall_held_out_at_1",
                "recall_seen_at_1"):
        assert metrics[key] == 100.0, key
    assert metrics["top1_intent"] == metrics["top1_retention"] == metrics["top1_elsewhere"] == 0.0


def test_top1_errors_are_told_apart_by_their_recorded_kind(v2_benchmark: Path):
    split = _split(v2_benchmark)
    found = records(split)
    assert found is not None
    with_intent = sum(_first(found[t.pairid], "intent") is not None for t in split.triplets)
    metrics = _rank(split, lambda record, t: _first(record, "intent") or t.target)
    assert metrics["top1_intent"] == pytest.approx(100.0 * with_intent / len(split.triplets))
    assert metrics["recall_group_at_1"] == pytest.approx(100.0 - metrics["top1_intent"])
    outside = _rank(split, lambda record, t: "not-in-any-group")
    assert outside["top1_elsewhere"] == 100.0 and outside["recall_joint_at_1"] == 0.0


def test_joint_and_rest_split_the_queries_as_the_certificate_says(v2_benchmark: Path):
    split = _split(v2_benchmark)
    found = records(split)
    assert found is not None
    joint = {t.pairid for t in split.triplets if found[t.pairid]["needs_joint_reading"]}
    metrics = _rank(split, lambda record, t: t.target if t.pairid in joint else "elsewhere")
    assert metrics["recall_joint_at_1"] == 100.0 and metrics["recall_rest_at_1"] == 0.0
    assert 0 < len(joint) < len(split.triplets)


def test_rescoring_from_top_lists_gives_the_evaluation_s_group_metrics(v2_benchmark: Path):
    split = _split(v2_benchmark)
    found = records(split)
    assert found is not None
    # top-1 an intent distractor where there is one, then the target: group rank 1, else 0
    tops = [[d, t.target] if (d := _first(found[t.pairid], "intent")) else [t.target] for t in split.triplets]
    evaluated = _rank(split, lambda record, t: _first(record, "intent") or t.target)
    again = rescored(split, split.triplets, [{"pairid": t.pairid, "top": top} for t, top in zip(split.triplets, tops)])
    assert again == pytest.approx(evaluated)
    # neither the target nor a group member kept: the group rank is unknown, so R@1 in the group is left out
    lost = rescored(split, split.triplets, [{"pairid": t.pairid, "top": ["x"]} for t in split.triplets])
    assert "recall_group_at_1" not in lost and lost["top1_elsewhere"] == 100.0 and lost["recall_joint_at_1"] == 0.0


def test_learning_free_rows_come_from_the_recorded_certificates(v2_benchmark: Path):
    split = _split(v2_benchmark)
    rows = learning_free(split, split.triplets)
    assert rows["oracle"] == {"recall_at_1": 100.0, "recall_joint_at_1": 100.0, "recall_rest_at_1": 100.0}
    assert rows["best_additive"]["recall_joint_at_1"] <= 40.0 <= 95.0 <= rows["best_additive"]["recall_rest_at_1"]


def test_version_1_splits_have_no_group_records(tiny_benchmark: Path):
    split = load_cirr_split(tiny_benchmark, "val")
    assert records(split) is None
    assert learning_free(split, split.triplets) == {}


def _result(label: str, seed: int, v2: bool) -> RunResult:
    metrics = {"recall_at_1": 10.0 + seed, "recall_subset_at_1": 50.0}
    if v2:
        metrics |= {"recall_joint_at_1": 4.0 + seed, "recall_rest_at_1": 14.0, "recall_group_at_1": 30.0,
                    "recall_held_out_at_1": 8.0, "recall_seen_at_1": 11.0, "top1_intent": 40.0 - seed,
                    "top1_retention": 20.0, "top1_topped_up": 0.0, "top1_elsewhere": 30.0}
    lf = {"oracle": {"recall_at_1": 100.0, "recall_joint_at_1": 100.0, "recall_rest_at_1": 100.0},
          "best_additive": {"recall_at_1": 66.7, "recall_joint_at_1": 22.0, "recall_rest_at_1": 99.8}} if v2 else {}
    return RunResult(run_id=f"{label}-{seed}", experiment="x", label=label, method=label, dataset="synthetic",
                     split="val", seed=seed, metrics=metrics, num_queries=1, num_gallery=1, protocol={},
                     parameters={"total": 1, "trainable": 1}, train={}, timings={"encode_and_score_ms_per_query": 1.0},
                     config={}, environment={}, created_at="now", learning_free=lf)


def test_a_v2_report_has_the_intent_sections_and_the_ceiling_rows(tmp_path: Path):
    from harness.reporting.report import write_report

    results = [_result(label, seed, True) for label in ("sum", "cir_lvlm") for seed in (0, 1)]
    text = write_report(results, tmp_path, "t").read_text()
    main = text[text.index("## Main results"):text.index("## Efficiency")]
    assert "| perfect perception, no learning: additive grid | - | 66.7 |" in main
    intent = text[text.index("## Following intent"):]
    assert "| sum | 10.5 ± 0.7 | 4.5 ± 0.7 | 14.0 ± 0.0 | 30.0 ± 0.0 | 8.0 ± 0.0 | 11.0 ± 0.0 |" in intent
    assert "| perfect perception, no learning: additive grid | 66.7 | 22.0 | 99.8 | - | - | - |" in intent
    assert "## Top-1 errors by kind" in text and "| sum | 10.5 ± 0.7 | 39.5 ± 0.7 | 20.0 ± 0.0 | 0.0 ± 0.0 |" in text
    assert (tmp_path / "top1_kinds.png").read_bytes()[:4] == b"\x89PNG"
    rows = (tmp_path / "tables" / "main.csv").read_text().splitlines()
    assert "\"perfect perception, no learning: oracle (scene graphs)\",-,100.0,-" in rows


def test_a_v1_report_has_no_intent_sections(tmp_path: Path):
    from harness.reporting.report import write_report

    text = write_report([_result("sum", seed, False) for seed in (0, 1)], tmp_path, "t").read_text()
    assert "perfect perception" not in text and "Following intent" not in text and "Top-1 errors" not in text
    assert not (tmp_path / "top1_kinds.png").exists()


def test_stored_results_without_learning_free_rows_still_load(tmp_path: Path):
    data = json.loads(_result("sum", 0, False).model_dump_json())
    del data["learning_free"]  # results written before version 2 existed
    assert RunResult.model_validate(data).learning_free == {}


V2_EXPERIMENT = """
experiment: tiny_v2
dataset:
  name: synthetic
  synthetic: {seed: 5, num_train: 24, num_val: 16, num_test: 4, version: 2}
method: {name: sum, params: {start: scratch, embed_dim: 16, vision_hidden: 16, text_hidden: 16, vision_heads: 2,
                             text_heads: 2}}
train: {max_steps: 2, batch_size: 8, num_threads: 2}
eval: {batch_size: 16}
seeds: [0]
tracking: {enabled: false}
"""


def test_a_v2_run_records_the_group_metrics_and_the_report_shows_them(tmp_path: Path):
    from typer.testing import CliRunner

    from harness.cli import app
    from harness.evaluation.results import read_rankings

    config = tmp_path / "tiny_v2.yaml"
    config.write_text(V2_EXPERIMENT, encoding="utf-8")
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    run_dir = next((tmp_path / "out").rglob("result.json")).parent
    stored = RunResult.model_validate_json((run_dir / "result.json").read_text())
    assert {"recall_joint_at_1", "recall_rest_at_1", "recall_group_at_1", "top1_intent"} <= set(stored.metrics)
    assert stored.learning_free["oracle"]["recall_at_1"] == 100.0
    entries = read_rankings(run_dir / "rankings.jsonl.gz")
    assert all({"needs_joint_reading", "held_out", "group_rank", "top1_kind"} <= set(e) for e in entries)
    shares = sum(stored.metrics[k] for k in ("recall_at_1", "top1_intent", "top1_retention", "top1_topped_up",
                                             "top1_elsewhere"))
    assert shares == pytest.approx(100.0)
    report = next((tmp_path / "out").rglob("report.md")).read_text()
    assert "## Following intent" in report and "perfect perception, no learning: additive grid" in report
    assert "Dataset `synthetic` version 2 (val split" in report


def test_the_group_auc_grades_where_the_target_sits_among_its_group(v2_benchmark: Path):
    """AUC group: 100 when the target is above every other member, 100 (1 - 1/(n-1)) with one member
    above it, and recomputed from saved top lists wherever the target's rank in its group is known."""
    split = _split(v2_benchmark)
    found = records(split)
    assert found is not None
    assert _rank(split, lambda record, t: t.target)["group_auc"] == 100.0
    others = [len(found[t.pairid]["group"]) - 2 for t in split.triplets]  # the reference and the target left out
    with_intent = [t for t in split.triplets if _first(found[t.pairid], "intent")]
    metrics = _rank(split, lambda record, t: _first(record, "intent") or t.target)
    expected = [100.0 * (1 - 1 / n) if _first(found[t.pairid], "intent") else 100.0
                for t, n in zip(split.triplets, others, strict=True)]
    assert with_intent and metrics["group_auc"] == pytest.approx(sum(expected) / len(expected))
    # the target out of a top list whose members are not all in it: its rank is unknown, AUC left out
    unknown = rescored(split, split.triplets, [{"pairid": t.pairid, "top": [_first(found[t.pairid], "intent") or "x"]}
                                                for t in split.triplets])
    assert "group_auc" not in unknown
