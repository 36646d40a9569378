"""Shared fixtures: a private cache, a tiny generated benchmark, the shared/ fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.data.synthetic.generate import SyntheticConfig, write_benchmark

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
TINY = SyntheticConfig(seed=3, num_train=192, num_val=64, num_test=16)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep generated benchmarks out of the user's cache."""
    import os

    os.environ["CIR_HARNESS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small embedded benchmark on disk (192 train / 64 val / 16 test queries)."""
    return write_benchmark(TINY, tmp_path_factory.mktemp("bench") / "synthetic", workers=1, progress=False)


@pytest.fixture(scope="session")
def cirr_fixtures() -> Path:
    path = SHARED_FIXTURES / "cirr"
    if not path.is_dir():
        pytest.skip(f"shared fixtures not found at {path}")
    return path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
