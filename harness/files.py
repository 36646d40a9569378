"""Readers for every file the harness reads: a file that is missing, unreadable, truncated or not
in its format is a HarnessError naming it (and the fix), never a traceback.

    data = read_json(path, fix="restore it")            # UTF-8 JSON
    text = read_text(path, fix=...)                     # UTF-8 text
    entries = read_json_lines_gz(path, fix=...)         # rankings.jsonl.gz: one JSON object per line
    tensors = read_safetensors(path, fix=...)           # {name: tensor}
    state = read_torch(path, fix=...)                   # torch.load(weights_only=True)

Files from users are untrusted: nothing here executes what it reads (JSON, safetensors, and
torch's weights-only unpickler).
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

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
