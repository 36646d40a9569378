"""Which code a result or a report came from: the harness checkout's commit, and whether the
tree had uncommitted changes then (torch-free, so `harness report` can ask it).

    git_commit()                  # 'a1b2c3...' or 'a1b2c3...+dirty'; None outside a git checkout
    dirty_allowed()               # CIR_HARNESS_ALLOW_DIRTY=1 stands for --allow-dirty
"""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

DIRTY = "+dirty"
ALLOW_DIRTY_ENV = "CIR_HARNESS_ALLOW_DIRTY"


@functools.cache
def git_commit() -> str | None:
    """Commit of the harness checkout, '+dirty' when its code (the harness package or
    pyproject.toml) has uncommitted changes; None outside a git checkout. Generated reports, docs
    and experiment files do not count: `harness run` writes reports/ into the checkout, which
    would otherwise make every later run 'dirty', and a run records its own config."""
    return commit_of(Path(__file__).resolve().parents[1])


def commit_of(root: Path) -> str | None:
    """``git_commit`` of the package folder ``root`` inside a checkout (its parent holds pyproject.toml)."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                ".", "../pyproject.toml"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (DIRTY if dirty else "")


def is_dirty(commit: str | None) -> bool:
    return bool(commit) and str(commit).endswith(DIRTY)


def dirty_allowed() -> bool:
    """Whether the environment allows a report from uncommitted code (the suite sets it: a
    developer's tree is rarely clean while the tests run)."""
    return os.environ.get(ALLOW_DIRTY_ENV, "") not in ("", "0")
