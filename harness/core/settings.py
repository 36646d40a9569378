"""Settings files in general: YAML read safely (no key twice, a size limit, ``${VAR}`` from the
environment, ``include:`` of base files), ``--set a.b=value`` overrides, deep merging and
flattening of nested mappings, and pydantic validation errors turned into one line.

    raw = apply_overrides(load_raw(Path("ablations/x.yaml")), ["train.epochs=2"], "ablations/x.yaml")
    experiment = validate_model(ExperimentConfig, raw, file="ablations/x.yaml")
    flatten({"a": {"b": 1}})   # {"a.b": 1}

What an experiment's settings mean is harness.experiments.config's; this module knows no
section of it, so a report (which flattens a run's config) and a run folder reader use it
without importing the training stack. ``Precision`` is the one setting type several sections
share (train, eval, stage 0).
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from harness.core.errors import HarnessError, did_you_mean
from harness.core.files import read_text

#: ``auto``: bf16 autocast where the hardware multiplies bf16 natively (a CUDA GPU with bf16, a
#: CPU with AVX512-BF16 or AMX), else fp32; ``fp32`` and ``bf16`` force one (harness.core.device resolves it).
Precision = Literal["auto", "fp32", "bf16"]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value; an empty mapping is kept as a leaf."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat




#: an experiment file is a few KB; a larger one is a mistake (a 50 MB file took 38 s and 575 MB to load)
MAX_CONFIG_BYTES = 2**20


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (the second one used to win
    silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, included_from: Path | None) -> dict[str, Any]:
    if not path.is_file():
        if included_from is not None:
            raise HarnessError(f"included file {path} not found", file=included_from, field="include",
                               fix="give a path relative to the including file")
        raise HarnessError("config file not found", file=path, fix="check the path")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise HarnessError(f"{path.stat().st_size / 2**20:.1f} MiB is far more than an experiment file holds "
                           f"(the limit is {MAX_CONFIG_BYTES // 2**20} MiB)", file=path, fix="give the experiment's "
                                                                                             "YAML file")
    text = read_text(path, fix="save the file as UTF-8 text")
    try:
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise HarnessError(f"not valid YAML ({getattr(error, 'problem', error)})", file=path, field=where,
                           fix="fix the YAML syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HarnessError("the top level must be a mapping of fields", file=path,
                           fix="start with `experiment: <name>`")
    return _substitute(data, path, "")


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: Path, field: str) -> Any:
    """Replace ``${NAME}`` / ``${NAME:-default}`` in string values by the environment variable
    (paper configs name dataset roots and checkpoint folders this way)."""
    if isinstance(value, dict):
        return {key: _substitute(item, path, f"{field}.{key}" if field else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, path, f"{field}[{i}]") for i, item in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def lookup(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise HarnessError(f"environment variable {name} is not set", file=path, field=field,
                           fix=f"export {name}=..., or write a default into the file: ${{{name}:-value}}")

    return _VARIABLE.sub(lookup, value)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``; nested mappings merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_raw(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The YAML mapping of ``path`` with its includes resolved."""
    path = Path(path)
    data = _read_yaml(path, _chain[-1] if _chain else None)
    includes = data.pop("include", None)
    if includes is None:
        return data
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise HarnessError("include must be a file name or a list of file names", file=path, field="include",
                           fix="write `include: base.yaml`")
    merged: dict[str, Any] = {}
    for name in includes:
        included = (path.parent / name).resolve()
        if included in _chain or included == path.resolve():
            raise HarnessError(f"include cycle through {name}", file=path, field="include", fix="remove the cycle")
        merged = deep_merge(merged, load_raw(included, (*_chain, path.resolve())))
    return deep_merge(merged, data)


def set_path(data: dict[str, Any], path: str, value: Any, *, file: str, field: str) -> None:
    """Set ``a.b.c`` in nested mappings, creating mappings on the way."""
    keys = path.split(".")
    if not all(keys):
        raise HarnessError(f"bad key path '{path}'", file=file, field=field, fix="write key paths like train.epochs")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise HarnessError(f"'{key}' in '{path}' is not a mapping", file=file, field=field,
                               fix="point the key path at a field inside a mapping")
        node = child
    node[keys[-1]] = copy.deepcopy(value)


def apply_overrides(data: dict[str, Any], overrides: list[str], file: str) -> dict[str, Any]:
    """Apply ``--set key.path=value`` overrides (values parsed with yaml.safe_load)."""
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise HarnessError(f"override '{item}' has no '='", file=file, field="--set", fix="write --set "
                                                                                              "train.epochs=2")
        path, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError:
            value = text
        path = path.strip()
        if path.startswith("grid.") and len(path) > len("grid."):  # grid keys are dotted paths themselves
            grid = data.setdefault("grid", {})
            if not isinstance(grid, dict):
                raise HarnessError("grid is not a mapping", file=file, field="--set",
                                   fix="write grid: {path: [values]}")
            grid[path[len("grid."):]] = copy.deepcopy(value)
            continue
        set_path(data, path, value, file=file, field="--set")
    return data






def validate_model(model: type[BaseModel], data: Any, *, file: str, prefix: str = "", context: str | None = None):
    """``model.model_validate(data)`` with pydantic errors turned into one HarnessError."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _as_harness_error(model, error, file, prefix, context) from None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc``, for "did you mean" suggestions."""
    current: Any = model
    for key in loc:
        fields = getattr(current, "model_fields", None)
        if not fields or key not in fields:
            return []
        annotation = fields[key].annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}))


def _as_harness_error(model: type[BaseModel], error: ValidationError, file: str, prefix: str,
                      context: str | None) -> HarnessError:
    problems = []
    first_field = None
    first_fix = None
    for item in error.errors():
        loc = tuple(item["loc"])
        field = ".".join(str(part) for part in (prefix.split(".") if prefix else []) + list(loc))
        kind = item["type"]
        if kind == "extra_forbidden":
            known = _fields_at(model, loc[:-1])
            problem = f"unknown field '{loc[-1]}'{did_you_mean(str(loc[-1]), known)}"
            fix = f"remove it or use one of: {', '.join(known)}" if known else "remove it"
        elif kind == "missing":
            problem = "required field is missing"
            fix = f"add `{loc[-1]}:`"
        else:
            message = item["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            problem = f"{message} (got {item.get('input')!r})"
            fix = "change the value"
        if context:
            problem += f" ({context})"
        problems.append(f"{field}: {problem}" if field else problem)
        if first_field is None:
            first_field, first_fix = field, fix
    if len(problems) == 1:
        message = problems[0].split(": ", 1)[1] if first_field else problems[0]
        return HarnessError(message, file=file, field=first_field or None, fix=first_fix)
    return HarnessError(f"{len(problems)} problems: " + "; ".join(problems), file=file, fix=first_fix)
