"""A finished run's folder read back (config.yaml, result.json), with one-line errors.

    config = read_run_config(run_dir)
    result = read_run_result(run_dir)

A run folder is the harness's own output, but it may have been copied, edited or cut short:
a missing or malformed file is a HarnessError naming it, never a traceback.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.config import RunConfig, validate_model
from harness.errors import HarnessError
from harness.results import RunResult, read_result

FIX = "give a finished run's folder: <output>/<experiment>/runs/<run id>"


def read_run_config(run_dir: Path) -> RunConfig:
    path = _required(run_dir, "config.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise HarnessError(f"not YAML ({type(error).__name__})", file=path, fix="re-run the run, or restore the file") from None
    return validate_model(RunConfig, data, file=str(path))


def read_run_result(run_dir: Path) -> RunResult:
    """The folder's result.json (an older schema upgraded), or a HarnessError naming it."""
    return read_result(_required(run_dir, "result.json"))


def _required(run_dir: Path, name: str) -> Path:
    path = Path(run_dir) / name
    if not path.is_file():
        raise HarnessError(f"no {name} here", file=run_dir, fix=FIX)
    return path
