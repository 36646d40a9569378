"""The main job on the default embedded benchmark meets the foundation issue's bars (slow)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.runner import run_experiment

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_reference_methods_show_what_the_benchmark_rewards(tmp_path: Path):
    results = run_experiment(REPO / "ablations" / "reference.yaml", output=tmp_path, progress=False, echo=lambda *_: None)
    recall = {r.method: r.metrics["recall_at_1"] for r in results}
    assert recall["image_only"] < 20  # looking like the reference is not enough (hard negatives)
    assert recall["text_only"] < 5  # matching the words is not enough
    assert recall["sum"] > max(recall["image_only"], recall["text_only"])
    assert (tmp_path / "reference" / "mlflow.db").is_file()


@pytest.mark.slow
def test_pool_size_main_job_ranks_cir_lvlm_above_image_only_and_text_only(tmp_path: Path):
    results = run_experiment(REPO / "ablations" / "pool_size.yaml", output=tmp_path, progress=False, echo=lambda *_: None,
                             overrides=[f"report.dir={tmp_path / 'reports'}"])
    by_method: dict[str, list[float]] = {}
    for r in results:
        by_method.setdefault(r.method, []).append(r.metrics["recall_at_1"])
    lvlm = sum(by_method["cir_lvlm"]) / len(by_method["cir_lvlm"])
    assert lvlm > max(by_method["image_only"]) and lvlm > max(by_method["text_only"])
    assert (tmp_path / "reports" / "pool_size" / "recall_vs_pool_size.png").is_file()
