"""The composition gap of any dataset: which queries one modality already solves, and how each
run does on the rest.

A query is *solved by one modality* when the `image_only` run (never reads the caption) or the
`text_only` run (never sees the reference) ranks its target within the top k, averaged over
their seeds (solved when the seed-averaged hit is at least one half); the others are
*composition-required*. Published audits of CIRR and FashionIQ found many queries of that first
kind (one reports 83.6 % of CIRR's and 32.2 % of FashionIQ's val queries; its criteria differ in
detail from this rule, which is an assumption: k = 10, the protocols' R@10, by default); on the
embedded benchmark the scene graphs give a second, exact view (the certificate's joint-reading
queries), and the report says how far the two agree.

    flags = unimodal_flags(groups, k=10)        # {pairid: True (composition-required) / False} or None
    table = composition_table(groups, flags, k=10)
    write_subsets(path, flags, k=10, source=...)  # harness.evaluation.subsets: eval.subset_file reads it back
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.reporting.data import Group
from harness.reporting.stats import bootstrap_ci, p_relation, paired_test, weights_for
from harness.reporting.tables import Cell, Table

UNIMODAL = ("image_only", "text_only")


def unimodal_flags(groups: Sequence[Group], k: int = 10) -> dict[Any, bool] | None:
    """Per pair id: True when the query is composition-required (neither unimodal run ranks its
    target within ``k``, seed-averaged), False when one modality solves it; None without both
    unimodal runs, or without their per-query rankings on the same queries."""
    hits = []
    for name in UNIMODAL:
        group = next((g for g in groups if g.method == name), None)
        values = group.per_query(f"recall_at_{k}") if group is not None else None
        if values is None:
            return None
        hits.append(dict(zip(values.pairids, values.values / 100.0, strict=True)))
    common = [pairid for pairid in hits[0] if pairid in hits[1]]
    return {pairid: bool(max(hits[0][pairid], hits[1][pairid]) < 0.5) for pairid in common}


def _certificate(groups: Sequence[Group]) -> dict[Any, bool] | None:
    """The embedded benchmark's joint-reading flag per pair id, from a run's rankings; None elsewhere."""
    for group in groups:
        entries = group.rankings(group.runs[0])
        if entries and all("needs_joint_reading" in e for e in entries):
            return {e["pairid"]: bool(e["needs_joint_reading"]) for e in entries}
    return None


def _on(values, mask: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95 % bootstrap interval of per-query values (in %) over the masked queries."""
    chosen = values[mask]
    if len(chosen) == 0:
        return math.nan, math.nan, math.nan
    weights, _ = weights_for(None, len(chosen))
    low, high = bootstrap_ci(chosen, weights)
    return float(chosen.mean()), low, high


def composition_table(groups: Sequence[Group], flags: dict[Any, bool], k: int = 10) -> Table | None:
    """Each run's R@k and R@1 on the composition-required queries and on the rest, with the paired
    test of its R@1 against the better unimodal run on the composition-required ones."""
    recall_k, recall_1 = f"recall_at_{k}", "recall_at_1"
    per_group = {g.label: (g.per_query(recall_k), g.per_query(recall_1)) for g in groups}
    if any(a is None or b is None for a, b in per_group.values()):
        return None
    pairids = next(iter(per_group.values()))[1].pairids
    mask = np.array([flags.get(p, False) for p in pairids])
    if any(b.pairids != pairids for _, b in per_group.values()) or not mask.any():
        return None
    unimodal = [g for g in groups if g.method in UNIMODAL]
    best = max(unimodal, key=lambda g: float(per_group[g.label][1].values[mask].mean()))
    reference = per_group[best.label][1].values[mask]
    weights, _ = weights_for(None, int(mask.sum()))
    rows, csv_rows = [], []
    for group in groups:
        at_k, at_1 = per_group[group.label]
        cells = [_on(at_k.values, mask), _on(at_k.values, ~mask), _on(at_1.values, mask), _on(at_1.values, ~mask)]
        test = None if group is best else paired_test(at_1.values[mask], reference, weights)
        rows.append([Cell(group.label), *(Cell(f"{m:.1f} [{lo:.1f}, {hi:.1f}]", m) for m, lo, hi in cells),
                     Cell("-" if test is None else f"{test.difference:+.1f} (p {p_relation(test.p_value)})")])
        csv_rows.append([group.label, *(x for c in cells for x in c),
                         *((test.difference, test.p_value) if test else (None, None))])
    return Table(f"Composition gap (R@{k} of image_only or text_only)", ["run", f"R@{k} required", f"R@{k} rest",
                 "R@1 required", "R@1 rest", f"R@1 required − {best.label}"], rows,
                 _caption(groups, flags, mask, k, best.label), name="composition_gap",
                 csv_header=["run", *(f"{m}_{part}_{s}" for m in (f"r{k}", "r1") for part in ("required", "rest")
                                      for s in ("mean", "low", "high")), "difference_vs_best_unimodal", "p"],
                 csv_rows=csv_rows)


def _caption(groups: Sequence[Group], flags: dict[Any, bool], mask: np.ndarray, k: int, best: str) -> str:
    share = 100.0 * mask.mean()
    text = (f"A query is composition-required when neither image_only nor text_only ranks its target within the top "
            f"{k} (seed-averaged hit below one half): {share:.1f} % of the {len(mask)} queries here. R@1 required − "
            f"{best} is the paired sign-flip test on those queries against the better unimodal run. `harness subsets` "
            "writes these flags, and eval.subset_file scores a later experiment on the same queries.")
    certificate = _certificate(groups)
    if certificate is not None:
        common = [p for p in flags if p in certificate]
        agree = 100.0 * np.mean([flags[p] == certificate[p] for p in common]) if common else math.nan
        joint = 100.0 * np.mean([certificate[p] for p in common]) if common else math.nan
        both = sum(flags[p] and certificate[p] for p in common)
        text += (f" The embedded benchmark's certificate calls {joint:.1f} % of these queries joint-reading; the two "
                 f"views agree on {agree:.1f} % of queries ({both} are in both subsets).")
    return text

