"""The mlflow UI as a researcher opens it: `mlflow ui` on a finished experiment's store, the page
the run's closing line names, read in headless Chromium (Debian's, driven by Playwright)."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import chromium_path
from .mlflow_server import mlflow_server


def test_the_experiment_page_lists_the_nested_runs_with_metric_and_method_columns(finished, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    chromium = chromium_path()
    _, output, stdout = finished
    url = re.search(r"then open (http://127\.0\.0\.1:5000/\S+)", stdout).group(1)
    with mlflow_server("ui", output / "mlflow.db") as base, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 4000, "height": 900})
            page.goto(url.replace("http://127.0.0.1:5000", base))  # wide: the grid renders only columns in view
            page.get_by_text("sum seed=0").wait_for(timeout=60_000)
            page.get_by_role("columnheader", name="recall_at_1").first.wait_for(timeout=30_000)
            headers = {h.strip() for h in page.get_by_role("columnheader").all_inner_texts()}
            body = page.inner_text("body")
            page.screenshot(path=str(tmp_path / "experiment_page.png"))  # what the note describes
        finally:
            browser.close()
    # the training-runs table, not the GenAI overview; both nested runs listed with metric and tag columns
    assert "Model training" in body and "No data available" not in body
    assert "sum seed=0" in body and "image_only seed=0" in body
    assert {"method", "family", "seed", "recall_at_1", "recall_subset_at_1"} <= headers, headers
    assert "Two reference methods on a tiny embedded benchmark." in body  # the YAML's description
