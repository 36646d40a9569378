"""Query subsets an evaluation can be restricted to (``eval.subset_file``): the composition-required
queries `harness subsets` finds (harness.reporting.composition), or a subset a user brings (a
published cleaned subset), as a JSON file keyed by pair id.

    write_subsets(path, {10000: True, 10001: False}, k=10, source="runs/fusion_strategy")
    chosen = read_subset(path)     # {"10000"}: the pair ids (as strings) the file selects
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text, read_json

#: The format tag of a subsets file (what `harness subsets` writes and eval.subset_file reads).
SUBSETS_FORMAT = "cir-harness subsets v1"


def write_subsets(path: Path, flags: dict[Any, bool], k: int, source: str) -> Path:
    """The per-query flags as JSON keyed by pair id (``harness subsets``)."""
    payload = {"format": SUBSETS_FORMAT, "k": k, "source": source, "rule": "composition_required: neither image_only "
               f"nor text_only ranks the target within the top {k} (seed-averaged hit below one half)",
               "queries": {str(pairid): {"composition_required": bool(flag)} for pairid, flag in flags.items()}}
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    return path


def read_subset(path: str | Path) -> set[str]:
    """The pair ids (as strings) a subset file selects: a `harness subsets` file (its
    composition-required queries), a JSON object of pair id -> true / false, or a JSON list of pair
    ids (a published cleaned subset)."""
    fix = "give a file written by `harness subsets`, a JSON list of pair ids, or an object of pair id -> true/false"
    data = read_json(path, fix, "eval.subset_file")
    if isinstance(data, dict) and data.get("format") == SUBSETS_FORMAT:
        queries = data.get("queries")
        if not isinstance(queries, dict) or not all(isinstance(v, dict) for v in queries.values()):
            raise HarnessError("its 'queries' is not an object of pair id -> flags", file=path,
                               field="eval.subset_file", fix=fix)
        return {str(p) for p, v in queries.items() if v.get("composition_required") is True}
    if isinstance(data, dict) and all(isinstance(v, bool) for v in data.values()):
        return {str(p) for p, v in data.items() if v}
    if isinstance(data, list) and all(isinstance(p, (int, str)) and not isinstance(p, bool) for p in data):
        return {str(p) for p in data}
    raise HarnessError("not a subset file", file=path, field="eval.subset_file", fix=fix)
