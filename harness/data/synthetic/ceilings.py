"""Learning-free ceilings of a written embedded benchmark, per split and per family, read
back from its files (``scene_graphs.json``, the caption, split and query-edits files):
oracle, best additive, caption-only, reference-only and the share of queries that need a
joint reading (see ``harness.data.synthetic.additive`` for the scorer). Works on version 1
roots too, whose queries are classic edits.

    >>> rows = split_ceilings(root, "val")     # [{"family": "all", "oracle": 100.0, ...}, ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import HarnessError
from harness.data.cirr import read_json
from harness.data.synthetic.additive import certify
from harness.data.synthetic.families import FAMILIES
from harness.data.synthetic.programs import Program, classic_program, program
from harness.data.synthetic.scene import apply_edits, edit_from_json, scene_from_json

COLUMNS = ("queries", "oracle", "best_additive", "caption_only", "reference_only", "joint_share")


def _program(entry: dict[str, Any]) -> Program:
    """A query's program: recorded by version 2, rebuilt from the classic edits of version 1."""
    if "program" in entry:
        return Program.from_json(entry["program"])
    steps = [classic_program(edit_from_json(e)) for e in entry["edits"]]
    return steps[0] if len(steps) == 1 else program("compound", steps=tuple(steps))


def split_ceilings(root: Path, split: str) -> list[dict[str, Any]]:
    """One row for the whole split, then one per family, sorted by name."""
    edits_file = root / f"query_edits.rc2.{split}.json"
    graphs = read_json(root / "scene_graphs.json", what="scene graphs file")
    entries = read_json(edits_file, what="query edits file")
    captions = {e["pairid"]: e["reference"] for e in read_json(root / "captions" / f"cap.rc2.{split}.json",
                                                               what="caption file")}
    names = list(read_json(root / "image_splits" / f"split.rc2.{split}.json", what="image split file"))
    column = {name: i for i, name in enumerate(names)}
    try:
        gallery = [scene_from_json(graphs[name]) for name in names]
        programs = [_program(e) for e in entries]
        references = [gallery[column[captions[e["pairid"]]]] for e in entries]
        expected = [apply_edits(r, [edit_from_json(x) for x in e["edits"]]) for r, e in zip(references, entries)]
        facts = [FAMILIES[p.family].facts(p) for p in programs]
        targets = [column[e["target"]] for e in entries]
        refs = [column[captions[e["pairid"]]] for e in entries]
    except (KeyError, TypeError, ValueError, IndexError, AssertionError) as error:
        raise HarnessError(f"does not describe this benchmark's images ({type(error).__name__}: {error})",
                           file=edits_file, fix="regenerate the benchmark with `harness data synthetic`") from None
    certificate = certify(references, facts, targets, expected, refs, gallery)
    every = np.ones(len(entries), bool)
    rows = [{"family": "all", **certificate.ceilings()}]
    for family in sorted({p.family for p in programs}):
        mask = np.array([p.family == family for p in programs])
        rows.append({"family": family, **certificate.ceilings(mask, every)})
    joint = certificate.needs_joint_reading
    if joint.any() and not joint.all():
        rows += [{"family": "(joint reading)", **certificate.ceilings(joint, every)},
                 {"family": "(the rest)", **certificate.ceilings(~joint, every)}]
    return rows


def format_rows(rows: list[dict[str, Any]]) -> list[str]:
    """Plain-text table lines, R@1 in percent."""
    header = (f"  {'family':<16} {'queries':>7} {'oracle':>7} {'additive':>8} {'caption':>8} {'reference':>9} "
              f"{'joint %':>7}")
    lines = [header]
    for row in rows:
        lines.append(f"  {row['family']:<16} {row['queries']:>7} {row['oracle']:>7.1f} {row['best_additive']:>8.1f} "
                     f"{row['caption_only']:>8.1f} {row['reference_only']:>9.1f} {row['joint_share']:>7.1f}")
    return lines
