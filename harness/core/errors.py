"""The one exception type for mistakes a user can fix.

    raise HarnessError("unknown method 'cir_lvml' (did you mean 'cir_lvlm'?)",
                       file="ablations/x.yaml", field="method.name", fix="run `harness list`")

The CLI prints ``str(error)`` on one line and exits with code 2, without a traceback.
"""

from __future__ import annotations

import difflib
import traceback
from collections.abc import Iterable
from pathlib import Path


class HarnessError(Exception):
    """A user-fixable error: names the file, the field, what is wrong and the fix."""

    exit_code = 2

    def __init__(self, problem: str, *, file: str | Path | None = None, field: str | None = None,
                 fix: str | None = None):
        self.problem = problem
        self.file = None if file is None else str(file)
        self.field = field
        self.fix = fix
        super().__init__(self.format())

    def format(self) -> str:
        where = ": ".join(part for part in (self.file, self.field) if part)
        text = f"{where}: {self.problem}" if where else self.problem
        if self.fix:
            text += f"; fix: {self.fix}"
        return " ".join(text.split())  # one line, always


class RunsFailed(HarnessError):
    """Some runs of an experiment failed while the others finished: exit code 1, not 2 (the
    input may be fine; a run broke), with the failures already reported one line each."""

    exit_code = 1


class WorkerError(Exception):
    """A run's exception as it crosses back from a ``--jobs`` worker: its type, one line and its
    traceback (many exceptions, transformers' among them, cannot be unpickled and would break the
    process pool)."""

    def __init__(self, kind: str, message: str, remote_traceback: str):
        super().__init__(kind, message, remote_traceback)
        self.kind, self.message, self.remote_traceback = kind, message, remote_traceback

    @classmethod
    def of(cls, error: BaseException) -> WorkerError:
        """``error`` as a WorkerError (itself when it is one)."""
        if isinstance(error, WorkerError):
            return error
        return cls(type(error).__name__, " ".join(str(error).split()), "".join(traceback.format_exception(error)))

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def as_user_error(error: BaseException) -> HarnessError | None:
    """``error`` as the one-line HarnessError when an unreadable file, a path or an argument caused
    it (the file named where the exception knows it), None when it is not one of those (a bug).
    The CLI's safety net: the readers name their files themselves (harness.core.files)."""
    import json
    import zlib

    if isinstance(error, HarnessError):
        return error
    if type(error).__name__ == "DecompressionBombError":  # PIL, imported only where images are read
        return HarnessError(f"an image too large to decode ({_one_line(error)})",
                            fix="check the image, or raise dataset.max_image_pixels")
    if isinstance(error, OSError) and error.filename is not None:
        return HarnessError(error.strerror or _one_line(error), file=error.filename,
                            fix="check the path and its permissions")
    if isinstance(error, UnicodeDecodeError):
        return HarnessError(f"a file is not UTF-8 text ({_one_line(error)})",
                            fix="restore or re-save the file as UTF-8")
    if isinstance(error, (json.JSONDecodeError, EOFError, zlib.error)):
        return HarnessError(f"a file is truncated or not in its format ({type(error).__name__}: {_one_line(error)})",
                            fix="run again with --debug to see which, then restore or delete it")
    return None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
