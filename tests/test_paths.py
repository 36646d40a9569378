"""Paths from users stay inside their root: the Confiner must answer as resolving every path would."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.paths import Confiner


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "a.png").write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (root / "dev" / "link_out.png").symlink_to(outside / "secret.png")
    (root / "dev" / "link_in.png").symlink_to(root / "dev" / "a.png")
    (root / "out_dir").symlink_to(outside)
    (root / "in_dir").symlink_to(root / "dev")
    return root


@pytest.mark.parametrize("relative", ["dev/a.png", "./dev/a.png", "dev/../dev/a.png", "dev/link_in.png",
                                      "in_dir/a.png", "in_dir/link_in.png", "dev/missing.png", "dev", ".", "dev/.."])
def test_paths_inside_resolve_as_path_resolve_does(tree: Path, relative: str):
    assert Confiner(tree)(relative, file="split.json", field="x") == (tree / relative).resolve()


@pytest.mark.parametrize("relative", ["../outside/secret.png", "dev/../../outside/secret.png", "dev/link_out.png",
                                      "out_dir/secret.png", "dev/../.."])
def test_paths_that_leave_the_root_are_refused(tree: Path, relative: str):
    with pytest.raises(HarnessError, match="climbs out"):
        Confiner(tree)(relative, file="split.json", field="x")


def test_one_confiner_answers_many_paths_of_one_directory_alike(tree: Path):
    confine = Confiner(tree)
    first = [confine(r, file="f", field="x") for r in ("dev/a.png", "dev/link_in.png", "dev/missing.png")]
    assert first == [(tree / r).resolve() for r in ("dev/a.png", "dev/link_in.png", "dev/missing.png")]
    with pytest.raises(HarnessError, match="climbs out"):
        confine("dev/link_out.png", file="f", field="x")  # a cached directory does not let a link through
