"""The confinement rule (harness.core.paths.Confiner): what a data file says stays inside the root, the
user's folder links are followed, an image file's own link may not escape; answers equal Path.resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.core.paths import Confiner


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
                                      "in_dir/a.png", "in_dir/link_in.png", "dev/missing.png", "dev", ".", "dev/..",
                                      "out_dir/secret.png", "out_dir/missing.png"])
def test_accepted_paths_resolve_as_path_resolve_does(tree: Path, relative: str):
    """Folder links are the user's arrangement (image folders on shared storage): followed anywhere."""
    assert Confiner(tree)(relative, file="split.json", field="x") == (tree / relative).resolve()


@pytest.mark.parametrize("relative", ["../outside/secret.png", "dev/../../outside/secret.png", "dev/../.."])
def test_data_file_paths_that_climb_out_are_refused(tree: Path, relative: str):
    with pytest.raises(HarnessError, match="climbs out"):
        Confiner(tree)(relative, file="split.json", field="x")


def test_an_image_file_linking_out_of_the_dataset_is_refused(tree: Path):
    with pytest.raises(HarnessError, match="symbolic link out of the dataset"):
        Confiner(tree)("dev/link_out.png", file="split.json", field="x")


def test_a_file_link_inside_a_linked_folder_may_point_within_that_folder(tree: Path):
    outside = tree.parent / "outside"
    (outside / "alias.png").symlink_to(outside / "secret.png")
    assert Confiner(tree)("out_dir/alias.png", file="f", field="x") == (outside / "secret.png").resolve()


def test_one_confiner_answers_many_paths_of_one_directory_alike(tree: Path):
    confine = Confiner(tree)
    first = [confine(r, file="f", field="x") for r in ("dev/a.png", "dev/link_in.png", "dev/missing.png")]
    assert first == [(tree / r).resolve() for r in ("dev/a.png", "dev/link_in.png", "dev/missing.png")]
    with pytest.raises(HarnessError, match="link out of the dataset"):
        confine("dev/link_out.png", file="f", field="x")  # a cached directory does not let a link through


def test_a_staged_directory_replaces_the_old_one_only_when_complete(tmp_path: Path):
    from harness.core.files import staged_directory
    from harness.core.paths import cached_directory

    target = tmp_path / "entry"
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with staged_directory(target) as staging:
            (staging / "a.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "first"  # the complete old entry stays
    with staged_directory(target) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]  # no staging or old folder left
    built: list[Path] = []
    for _ in range(2):  # the second call finds the marker and builds nothing
        cached_directory(tmp_path / "cached", "done.json",
                         lambda out: (built.append(out), (out / "done.json").write_text("{}")))
    assert len(built) == 1 and (tmp_path / "cached" / "done.json").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_get_the_mode_the_umask_gives(tmp_path: Path, umask: int):
    """A checkpoint or stage-0 cache written through safetensors (0.8 stages its own file at
    0600) or mkstemp is readable by whoever the user's umask lets read a new file."""
    import os

    import torch
    from safetensors.torch import save_file

    from harness.core.files import atomic_write_text, staged_directory, staged_file

    before = os.umask(umask)
    try:
        with staged_directory(tmp_path / "checkpoint") as staging:
            (staging / "vision").mkdir()
            save_file({"w": torch.zeros(2)}, str(staging / "vision" / "model.safetensors"))
        with staged_file(tmp_path / "cache.safetensors") as staging:
            save_file({"w": torch.zeros(2)}, str(staging))
        atomic_write_text(tmp_path / "result.json", "{}")
    finally:
        os.umask(before)
    for path in (tmp_path / "checkpoint" / "vision" / "model.safetensors", tmp_path / "cache.safetensors",
                 tmp_path / "result.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_only_uncommitted_code_makes_a_checkout_dirty(tmp_path: Path):
    """A report written into the checkout (harness run's reports/) leaves the commit clean; a
    change to the package or to pyproject.toml makes it '+dirty'."""
    import subprocess

    from harness.core.source import commit_of

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    for relative in ("harness/x.py", "pyproject.toml", "reports/r.md"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    clean = commit_of(tmp_path / "harness")
    assert clean and not clean.endswith("+dirty")
    (tmp_path / "reports" / "r.md").write_text("rewritten\n")
    assert commit_of(tmp_path / "harness") == clean
    (tmp_path / "pyproject.toml").write_text("b\n")
    assert commit_of(tmp_path / "harness") == clean + "+dirty"
    git("checkout", "pyproject.toml")
    (tmp_path / "harness" / "x.py").write_text("b\n")
    assert commit_of(tmp_path / "harness") == clean + "+dirty"
