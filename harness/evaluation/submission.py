"""Test-server submission files from a run's rankings, validated before they are written.

    CIRR test1:  {"version": "rc2", "metric": "recall", "<pairid>": [50 image names], ...}
                 {"version": "rc2", "metric": "recall_subset", "<pairid>": [3 set members], ...}
    CIRCO:       {"<query id>": [50 unique COCO image ids (integers)], ...}

(the formats of CIRR's demo_files and CIRCO's submission_examples). Every query of the split
must be ranked, names unique and in the gallery, the reference absent from CIRR's lists.
``read_submission`` turns such a file back into rankings entries for ``harness.evaluation.saved_rankings``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError
from harness.core.files import atomic_write_text
from harness.data.triplet import CIRSplit

TOP = 50
SUBSET_TOP = 3


def _ranked(entries: list[dict[str, Any]], split: CIRSplit, file: str) -> dict[int, dict[str, Any]]:
    by_pairid = {int(e["pairid"]): e for e in entries}
    missing = [t.pairid for t in split.triplets if t.pairid not in by_pairid]
    if missing:
        raise HarnessError(f"{len(missing)} queries of {split.dataset}/{split.split} have no ranking (first: "
                           f"{missing[0]})",
                           file=file, fix="evaluate the whole split (no eval.max_queries) and write the files again")
    return by_pairid


def _check_list(names: list[str], *, length: int, allowed: set[str], forbidden: str | None, what: str,
                file: str) -> None:
    if len(names) < length:
        raise HarnessError(f"{what}: {len(names)} images ranked, {length} needed", file=file,
                           fix=f"evaluate with eval.save_top >= {length}")
    head = names[:length]
    if len(set(head)) != length:
        raise HarnessError(f"{what}: an image is listed twice", file=file, fix="rankings must not repeat images")
    stray = [n for n in head if n not in allowed]
    if stray:
        raise HarnessError(f"{what}: {stray[0]!r} is not a candidate of this query", file=file,
                           fix="rank gallery images (set members for recall_subset) only")
    if forbidden is not None and forbidden in head:
        raise HarnessError(f"{what}: the reference {forbidden!r} is listed", file=file,
                           fix="evaluate with eval.remove_reference: true, as CIRR requires")


def cirr_submission(entries: list[dict[str, Any]], split: CIRSplit, file: str = "rankings") -> tuple[dict, dict]:
    """(recall, recall_subset) submissions of a CIRR split, validated."""
    by_pairid = _ranked(entries, split, file)
    gallery = set(split.gallery)
    recall: dict[str, Any] = {"version": "rc2", "metric": "recall"}
    subset: dict[str, Any] = {"version": "rc2", "metric": "recall_subset"}
    for t in split.triplets:
        entry = by_pairid[t.pairid]
        _check_list(entry["top"], length=TOP, allowed=gallery, forbidden=t.reference, what=f"pair {t.pairid}",
                    file=file)
        recall[str(t.pairid)] = entry["top"][:TOP]
        members = set(t.subset) - {t.reference}
        ordered = entry.get("subset_top", [])
        _check_list(ordered, length=SUBSET_TOP, allowed=members, forbidden=t.reference,
                    what=f"pair {t.pairid} (recall_subset)", file=file)
        subset[str(t.pairid)] = ordered[:SUBSET_TOP]
    return recall, subset


def circo_submission(entries: list[dict[str, Any]], split: CIRSplit, file: str = "rankings") -> dict[str, list[int]]:
    """The CIRCO submission of a split (query id -> 50 COCO ids), validated."""
    by_pairid = _ranked(entries, split, file)
    gallery = set(split.gallery)
    result = {}
    for t in split.triplets:
        top = by_pairid[t.pairid]["top"]
        _check_list(top, length=TOP, allowed=gallery, forbidden=None, what=f"query {t.pairid}", file=file)
        result[str(t.pairid)] = [int(name) for name in top[:TOP]]
    return result


def write_submissions(entries: list[dict[str, Any]], split: CIRSplit, out: Path, file: str = "rankings") -> list[Path]:
    """Validate, then write the split's submission file(s) into ``out`` (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    if split.dataset == "cirr" or (split.dataset == "synthetic" and all(t.subset for t in split.triplets)):
        recall, subset = cirr_submission(entries, split, file)
        files = {out / f"{split.split}_pred_ranks_recall.json": recall,
                 out / f"{split.split}_pred_ranks_recall_subset.json": subset}
    elif split.dataset == "circo":
        files = {out / f"submission_{split.split}.json": circo_submission(entries, split, file)}
    else:
        raise HarnessError(f"{split.dataset} has no test server submission format", file=file,
                           fix="submission files exist for cirr and circo")
    for path, payload in files.items():
        atomic_write_text(path, json.dumps(payload))
    return list(files)


def read_submission(path: Path) -> list[dict[str, Any]]:
    """Rankings entries from a CIRR (recall or recall_subset) or CIRCO submission file."""
    from harness.data.cirr import read_json

    payload = read_json(path, what="submission file")
    if not isinstance(payload, dict):
        raise HarnessError("expected a JSON object", file=path, fix="give a CIRR or CIRCO submission file")
    metric = payload.get("metric")
    entries = []
    for key, ranked in payload.items():
        if key in ("version", "metric"):
            continue
        if not key.isdigit() or not isinstance(ranked, list):
            raise HarnessError(f"entry {key!r} is not a query id with a list", file=path, fix="restore the file")
        names = [str(name) for name in ranked]
        entries.append({"pairid": int(key), "subset_top": names} if metric == "recall_subset"
                       else {"pairid": int(key), "top": names})
    return entries
