"""Shared fixtures: a private cache, a tiny generated benchmark, the real annotation files in tests/fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.data.synthetic.generate import SyntheticConfig, write_benchmark

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # real annotation files (sources and licences in its README)
TINY = SyntheticConfig(seed=3, num_train=192, num_val=64, num_test=16, version=1)
#: A small version-2 benchmark, large enough for its ceilings to be measured.
V2 = SyntheticConfig(seed=3, num_train=150, num_val=200, num_test=120, version=2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep generated benchmarks out of the user's cache."""
    import os

    os.environ["CIR_HARNESS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    # runs in the calling process: a --jobs worker spends ~6 s CPU importing torch and transformers,
    # more than a tiny run trains; the tests of --jobs itself pass it explicitly
    os.environ["CIR_HARNESS_JOBS"] = "1"
    # a developer's tree is rarely clean while the suite runs: reports are written, marked as from
    # uncommitted code (tests/test_report.py checks the refusal itself with this unset)
    os.environ["CIR_HARNESS_ALLOW_DIRTY"] = "1"
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedded benchmark on disk (192 train / 64 val / 16 test queries)."""
    return write_benchmark(TINY, tmp_path_factory.mktemp("bench") / "synthetic", workers=1, progress=False)


@pytest.fixture(scope="session")
def v2_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small version-2 embedded benchmark on disk (150 train / 200 val / 120 test queries)."""
    return write_benchmark(V2, tmp_path_factory.mktemp("v2") / "synthetic", workers=1, progress=False)


@pytest.fixture(scope="session")
def cirr_fixtures() -> Path:
    return FIXTURES / "cirr"


def skip_unless_ci(reason: str) -> None:
    """Skip a test whose tool is missing on a developer's machine; in CI (CI=true), where
    .ci/run installs the tool, its absence fails the test instead of hiding it."""
    import os

    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"{reason}, but CI must run this test")
    pytest.skip(reason)


def chromium_path() -> str:
    """Debian's Chromium (or another installed one); skipped outside CI when there is none."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    skip_unless_ci("no Chromium on this machine (.ci/run installs Debian's chromium)")
    raise AssertionError("unreachable")


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


#: A tiny CIR-LVLM on a tiny benchmark (the dataset: and method: sections of an experiment).
TINY_LVLM = """
dataset:
  name: synthetic
  synthetic: {seed: 5, num_train: 160, num_val: 40, num_test: 8}
method:
  name: cir_lvlm
  params:
    backbone: {vision_hidden: 32, vision_heads: 2, language_hidden: 32, language_heads: 2}
    connector: {num_queries: 4, heads: 2}
    stage0: {vision_steps: 10, caption_steps: 10, instruct_steps: 10, vision_batch_size: 32, caption_batch_size: 16}
    embed_dim: 16
"""


EXPERIMENT = """
experiment: tiny
description: Two reference methods on a tiny embedded benchmark.
dataset:
  name: synthetic
  synthetic: {seed: 5, num_train: 160, num_val: 40, num_test: 8}
method: {name: sum, params: {start: scratch, embed_dim: 32, vision_hidden: 32, text_hidden: 32, vision_heads: 2,
                             text_heads: 2}}
train: {epochs: 2, batch_size: 32, num_threads: 2}
eval: {batch_size: 64}
grid:
  method.name: [image_only, sum]
seeds: [0]
"""


@pytest.fixture(scope="session")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    folder = tmp_path_factory.mktemp("run")
    config = write_yaml(folder / "tiny.yaml", EXPERIMENT)
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(folder / "out")])
    assert result.exit_code == 0, result.output
    return config, folder / "out" / "tiny", result.stdout
