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

    def __init__(self, problem: str, *, file: str | Path | None = None, field: str | None = None, fix: str | None = None):
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


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
