"""Passwords never leave the process: URLs that carry credentials are masked wherever the harness
prints, writes or logs them (the study line, the mlflow hint, experiment.json, mlflow params).

    mask("postgresql://ann:s3cret@db:5432/optuna")   # -> "postgresql://ann:***@db:5432/optuna"
    mask_all({"tracking": {"uri": "..."}})            # the same, through dicts, lists and strings
"""

from __future__ import annotations

import re
from typing import Any

#: scheme://user:password@host -- the password is whatever lies between the first ':' after the
#: scheme's '//' and the last '@' before the host
_CREDENTIALS = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<password>[^\s@/]*(?:@[^\s@/]*)*)@")
#: key=value and key: value pairs a connection string may carry (password=..., sslpassword=...)
_PASSWORD_PARAMETER = re.compile(r"(?P<head>(?:^|[?&;\s])[A-Za-z_]*password=)(?P<password>[^&;\s]+)", re.IGNORECASE)
MASK = "***"


def mask(text: str) -> str:
    """``text`` with the password of every URL and every ``password=`` parameter replaced by ***."""
    text = _CREDENTIALS.sub(lambda m: f"{m.group('head')}{MASK}@", text)
    return _PASSWORD_PARAMETER.sub(lambda m: f"{m.group('head')}{MASK}", text)


def mask_all(value: Any) -> Any:
    """``value`` with ``mask`` applied to every string inside it (dicts, lists and tuples)."""
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: mask_all(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mask_all(item) for item in value)
    return value
