"""Files in and out. Every file the harness reads goes through a reader here: a file that is
missing, unreadable, truncated or not in its format is a HarnessError naming it (and the fix),
never a traceback. Every file it writes is written atomically here: to a staging name in the
same folder, then renamed, so a crash never leaves half a file and a reader never sees one.

    data = read_json(path, fix="restore it")            # UTF-8 JSON
    text = read_text(path, fix=...)                     # UTF-8 text
    entries = read_json_lines_gz(path, fix=...)         # rankings.jsonl.gz: one JSON object per line
    tensors = read_safetensors(path, fix=...)           # {name: tensor}
    state = read_torch(path, fix=...)                   # torch.load(weights_only=True)
    atomic_write_text(path, text); atomic_write_bytes(path, data)
    with staged_file(path) as staging: save_file(tensors, staging)     # a writer that wants a path
    with staged_directory(folder) as staging: ...                       # a whole folder at once

Files from users are untrusted: nothing here executes what it reads (JSON, safetensors, and
torch's weights-only unpickler).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError

#: what a broken file of each kind raises while it is read
_UNREADABLE = (OSError, UnicodeDecodeError, ValueError, EOFError, zlib.error)


def _broken(path: Path, what: str, error: BaseException, fix: str, field: str | None) -> HarnessError:
    reason = "not found" if isinstance(error, FileNotFoundError) else \
        f"{what} ({type(error).__name__}: {' '.join(str(error).split())[:200]})"
    return HarnessError(reason, file=path, field=field, fix=fix)


def read_text(path: str | Path, fix: str, field: str | None = None) -> str:
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except _UNREADABLE as error:
        raise _broken(path, "cannot be read as UTF-8 text", error, fix, field) from None


def read_json(path: str | Path, fix: str, field: str | None = None) -> Any:
    path = Path(path)
    text = read_text(path, fix, field)
    try:
        return json.loads(text)
    except ValueError as error:
        raise _broken(path, "not valid JSON", error, fix, field) from None


def read_json_object(path: str | Path, fix: str, field: str | None = None) -> dict[str, Any]:
    """A JSON file whose top level must be an object."""
    data = read_json(path, fix, field)
    if not isinstance(data, dict):
        raise HarnessError(f"a JSON {type(data).__name__} where an object is expected", file=path, field=field, fix=fix)
    return data


def read_json_lines_gz(path: str | Path, fix: str) -> list[dict[str, Any]]:
    """Gzipped JSON lines, each an object (a truncated archive or a bad line names its line)."""
    path = Path(path)
    entries = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            for number, line in enumerate(stream, 1):
                try:
                    entry = json.loads(line)
                except ValueError as error:
                    raise _broken(path, "not valid JSON", error, fix, f"line {number}") from None
                if not isinstance(entry, dict):
                    raise HarnessError("not a JSON object", file=path, field=f"line {number}", fix=fix)
                entries.append(entry)
    except _UNREADABLE as error:
        raise _broken(path, "not a complete gzip file of UTF-8 JSON lines", error, fix, None) from None
    return entries


def read_safetensors(path: str | Path, fix: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own SafetensorError (not exported) besides OSError
        raise _broken(path, "not a complete safetensors file", error, fix, None) from None


def read_torch(path: str | Path, fix: str) -> Any:
    """``torch.load`` with the weights-only unpickler (no code runs from the file)."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, weights_only=True)
    except Exception as error:  # a foreign pickle fails in many ways (KeyError, UnpicklingError, RuntimeError...)
        raise _broken(path, "not a complete torch file of tensors", error, fix, None) from None


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def staged_file(path: Path) -> Iterator[Path]:
    """Write a file atomically: the block writes the staging path it is given (same folder and
    suffix, a unique name), which is renamed onto ``path`` with the mode the user's umask gives
    a new file; on an error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        _usual_mode(staging)  # mkstemp makes 0600
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _usual_mode(path: Path) -> None:
    """Give a written file the mode the user's umask gives a new file: mkstemp and safetensors
    (0.8 stages its own temporary file) create 0600, which a group sharing results cannot read."""
    os.chmod(path, 0o666 & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``staged_file``), flushed to disk before the rename."""
    with staged_file(path) as staging, open(staging, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_directory(directory: Path) -> Iterator[Path]:
    """Write a directory atomically: the block fills a fresh staging folder beside ``directory``,
    which then takes its place (a previous one is moved aside first and removed after, so a
    reader never sees a half-written folder); on an error the staging folder is removed and the
    previous directory is left as it was. Its files get the mode the umask gives (``_usual_mode``)."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
        for written in staging.rglob("*"):
            if written.is_file() and not written.is_symlink():
                _usual_mode(written)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if directory.exists():
        old = directory.parent / f".{directory.name}.old-{os.getpid()}"
        os.replace(directory, old)
        os.replace(staging, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, directory)
