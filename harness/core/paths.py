"""Paths: confine users' paths to their root, find the cache directory, and build a cache entry
once under a lock (``file_lock``, ``cached_directory``; the atomic writers are harness.core.files')."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.files import staged_directory

CACHE_ENV = "CIR_HARNESS_CACHE"


def cache_dir() -> Path:
    """The harness cache (generated benchmarks, pretrained backbones, embeddings).

    ``$CIR_HARNESS_CACHE`` when set, else ``~/.cache/cir-harness``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cir-harness")


def confined(root: Path, relative: str, *, file: str | Path, field: str) -> Path:
    """``root / relative`` resolved under the confinement rule of ``Confiner``."""
    return Confiner(root)(relative, file=file, field=field)


class Confiner:
    """Resolves the image paths a data file lists, under one explicit rule:

    - **what a data file says is confined**: a path written in an annotation or split file may
      not be absolute and may not climb out of the root with ``..`` (checked on the text);
    - **the user's folders are followed**: the directories on the way (``root/train``,
      ``root/dev/12``) may be symbolic links anywhere, because datasets live on shared
      storage and the user arranged those links when naming the root;
    - **a file link may not escape**: an image file that is itself a symbolic link must point
      inside the root or inside the (real) folder that holds it.

    The root and each directory are resolved once, and a file's own name is followed only when
    it is a symbolic link (one lstat): a split file lists tens of thousands of images."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.base = self.root.resolve()
        self._root = os.fspath(self.root)
        self._directories: dict[str, Path] = {}  # as written -> resolved

    def __call__(self, relative: str, *, file: str | Path, field: str) -> Path:
        if os.path.isabs(relative) or relative.startswith(("/", "\\")) or ":" in relative.split("/")[0]:
            raise HarnessError(f"path {relative!r} is absolute", file=file, field=field,
                               fix="use a path relative to the dataset root")
        normal = os.path.normpath(relative)
        if normal == ".." or normal.startswith(".." + os.sep):
            raise HarnessError(f"path {relative!r} climbs out of the dataset root {self.root}", file=file,
                               field=field, fix="keep every path in the data files inside the dataset root")
        if normal == ".":
            return self.base
        directory, name = os.path.split(os.path.join(self._root, normal))
        folder = self._directories.get(directory)
        if folder is None:
            folder = self._directories[directory] = Path(directory).resolve()
        joined = os.path.join(directory, name)
        if not os.path.islink(joined):
            return folder / name
        target = Path(joined).resolve()
        if not (_within(target, self.base) or _within(target, folder)):
            raise HarnessError(f"image {relative!r} is a symbolic link out of the dataset ({target})", file=file,
                               field=field, fix="replace the link by the file, or link the folder that holds it")
        return target


def confine_found(root: Path, paths: dict[str, Path], file: str | Path) -> dict[str, Path]:
    """``paths`` (name -> a file found or named under ``root``) under ``Confiner``'s rule: an image
    file that is a symbolic link out of the dataset is refused, naming it (CIRCO, Shoes and
    FashionIQ find their images by listing folders rather than reading paths from a file)."""
    confine = Confiner(root)
    return {name: confine(os.path.relpath(path, root), file=file, field=name) for name, path in paths.items()}


def _within(path: Path, base: Path) -> bool:
    return path == base or base in path.parents


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created when absent) for the block: concurrent
    processes building one cache entry (``harness run --jobs``, sweep workers) take turns, and
    the later ones find it built. A no-op where ``fcntl`` is missing (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_directory(directory: Path, marker: str, build: Callable[[Path], None]) -> Path:
    """``directory`` once it holds ``marker``: built by ``build(staging)`` when absent, under a
    file lock, so that a process finding another building the same entry waits and then reads it."""
    directory = Path(directory)
    if (directory / marker).is_file():
        return directory
    with file_lock(directory.parent / f".{directory.name}.lock"):
        if not (directory / marker).is_file():
            with staged_directory(directory) as staging:
                build(staging)
    return directory
