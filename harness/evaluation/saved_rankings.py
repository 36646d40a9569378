"""Re-scoring: metrics from saved rankings and the annotations alone, with no model (`harness score`).

A rankings file (``rankings.jsonl.gz``, one JSON object per query, in evaluation order):

    {"pairid": 12, "top": [best, ..., 50th image name], "target_rank": 3,
     "subset_rank": 0, "subset_top": [set members but the reference, best first],
     "edit_type": "recolour", "category": "dress"}

``top`` already reflects the run's protocol (the reference removed or not, FashionIQ's
category gallery). ``target_rank`` and ``subset_rank`` are what the run computed; scoring
ignores them and finds the target in ``top`` / ``subset_top`` again, so a ranking edited or
written elsewhere (a CIRR or CIRCO submission file) is scored the same way.

    metrics, by_category = score(entries, split, eval_config)
    metrics, by_category = score_files([Path("recall.json"), ...], "cirr", root, "val")  # merged by pair id
    differing, unchecked = differences(metrics, expected)   # against a result.json's metrics
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import HarnessError
from harness.data.datasets import DATASETS, read_split
from harness.data.triplet import CIRSplit
from harness.evaluation.intent import rescored
from harness.evaluation.metrics import ABSENT, metrics_from_ranks
from harness.evaluation.protocol import PROTOCOLS, EvalConfig
from harness.evaluation.results import read_rankings
from harness.evaluation.submission import read_submission

Metrics = tuple[dict[str, float], dict[str, dict[str, float]]]


def score(entries: Iterable[dict[str, Any]], split: CIRSplit, config: EvalConfig, file: str = "rankings") -> Metrics:
    """(metrics, metrics per category) of ``entries`` against ``split``'s annotations."""
    by_pairid = {t.pairid: t for t in split.triplets}
    entries = list(entries)
    if not entries:
        raise HarnessError("no rankings to score", file=file, fix="give the rankings of a finished run")
    _check_entries(entries, by_pairid, split, file)
    triplets = [by_pairid[int(e["pairid"])] for e in entries]
    if any(t.target is None for t in triplets):
        raise HarnessError(f"the {split.split} split has no targets to score against", file=file,
                           fix="score a validation split; test splits are scored by their servers")
    ranks = subset = None
    if all("top" in e for e in entries):
        depth = min(len(e["top"]) for e in entries)
        too_deep = [k for k in (*config.ks, *config.map_ks) if k > depth]
        if too_deep:
            raise HarnessError(f"the rankings keep the top {depth}; K = {too_deep} cannot be scored", file=file,
                               fix="lower the K values or re-run the evaluation with a larger eval.save_top")
        ranks = torch.tensor([_position(e["top"], t.target) for e, t in zip(entries, triplets, strict=True)])
    if config.subset_ks and all("subset_top" in e for e in entries):
        subset = torch.tensor([_position(e["subset_top"], t.target) for e, t in zip(entries, triplets, strict=True)])
    if ranks is None and subset is None:
        raise HarnessError("the rankings have neither 'top' nor 'subset_top' lists", file=file,
                           fix="give a rankings.jsonl.gz or a submission file")
    top_names = [e["top"] for e in entries] if ranks is not None else None
    metrics, by_category = metrics_from_ranks(config, triplets, ranks, subset, top_names, bool(split.galleries))
    if ranks is not None:
        metrics |= rescored(split, triplets, entries)  # the embedded benchmark v2's group metrics
    return metrics, by_category


def _check_entries(entries: list[dict[str, Any]], by_pairid: dict[int, Any], split: CIRSplit, file: str) -> None:
    """Each entry a query of ``split``, ranked once, its lists image names without repeats."""
    seen: set[int] = set()
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry.get("pairid"), int) or isinstance(entry["pairid"], bool):
            raise HarnessError("the entry has no integer 'pairid'", file=file, field=f"entry {number}",
                               fix="give the rankings of a finished run or a CIRR / CIRCO submission file")
        pairid = entry["pairid"]
        if pairid not in by_pairid:
            raise HarnessError(f"pair id {pairid} is not a query of the {split.dataset}/{split.split} annotations",
                               file=file, fix="score against the split the rankings were made on")
        if pairid in seen:
            raise HarnessError(f"pair id {pairid} is ranked twice", file=file, fix="keep one ranking per query")
        seen.add(pairid)
        _check_unique(entry, pairid, file)


def _check_unique(entry: dict[str, Any], pairid: int, file: str) -> None:
    """A ranking lists each image once: a repeated one would count twice in mAP (CIRCO's scorer
    refuses such submissions) and hide a candidate from the top K."""
    for field in ("top", "subset_top"):
        ranked = entry.get(field)
        if ranked is not None and not (isinstance(ranked, list) and all(isinstance(name, str) for name in ranked)):
            raise HarnessError(f"pair id {pairid}: {field!r} is not a list of image names", file=file,
                               fix="give the rankings of a finished run or a CIRR / CIRCO submission file")
        if ranked is not None and len(set(ranked)) != len(ranked):
            repeated = next(name for name in ranked if ranked.count(name) > 1)
            raise HarnessError(f"pair id {pairid} lists image {repeated!r} twice in its {field!r} ranking",
                               file=file, fix="rank each image once (as the test servers require)")


def _position(ranked: list[str], name: str | None) -> int:
    """0-based position of ``name`` in ``ranked``; ``ABSENT`` (a miss at every K) when it is not there."""
    try:
        return ranked.index(name)  # type: ignore[arg-type]
    except ValueError:
        return ABSENT


def score_files(sources: list[Path], dataset: str | None, root: Path | None, split: str | None,
                protocol: str | None = None) -> Metrics:
    """(metrics, metrics per category) of rankings or submission files (merged by pair id) that
    rank ``split`` of ``dataset`` at ``root``, under ``protocol`` (default: the dataset's)."""
    if not (dataset and root and split):
        raise HarnessError("scoring files needs --dataset, --root and --split", field="--dataset",
                           fix="name what the files rank, or give a run folder instead")
    if dataset not in DATASETS:
        raise HarnessError(f"unknown dataset {dataset!r}", field="--dataset", fix=f"use one of {', '.join(DATASETS)}")
    if protocol is not None and protocol not in PROTOCOLS:
        raise HarnessError(f"unknown protocol {protocol!r}", field="--protocol", fix="use one of "
                                                                                     f"{', '.join(PROTOCOLS)}")
    merged: dict[int, dict] = {}
    for source in sources:
        if not source.is_file():
            raise HarnessError("file not found", file=source, fix="give a rankings or submission file")
        entries = read_rankings(source) if source.name.endswith(".gz") else read_submission(source)
        for entry in entries:
            merged.setdefault(int(entry["pairid"]), {}).update(entry)
    loaded, _ = read_split(dataset, root, split)
    _, config = EvalConfig(protocol=protocol).resolved(dataset)  # type: ignore[arg-type]
    return score(list(merged.values()), loaded, config, file=str(sources[0]))


def differences(metrics: dict[str, float], expected: dict[str, float]) -> tuple[list[str], list[str]]:
    """(metrics that differ from ``expected`` by more than 1e-6, metrics of ``expected`` that
    the rankings keep too little to re-check)."""
    differing = [key for key, value in metrics.items() if abs(expected.get(key, float("nan")) - value) > 1e-6]
    return differing, sorted(set(expected) - set(metrics))
