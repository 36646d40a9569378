"""What a written embedded benchmark allows without learning, per split and per family, read
back from its files (``scene_graphs.json``, the caption, split and query-edits files):

- ``split_ceilings``: oracle, version 2's best additive grid scorer, caption-only,
  reference-only and the share of queries that need a joint reading (see
  ``harness.data.synthetic.additive``); works on version 1 roots too (classic edits);
- ``split_audit`` (versions 2 and 3, whose queries record their groups): the certified
  joint-reading share, the R@1 of the adversarial additive scorer overall and on the certified
  queries (``harness.data.synthetic.adversary``), and two caption-free scorers: the group medoid
  and the density N1(x) - d(R, x) over the gallery (``harness.data.synthetic.structure``), with
  the best the density reaches over weights of the distance.

    >>> rows = split_ceilings(root, "val")     # [{"family": "all", "oracle": 100.0, ...}, ...]
    >>> audit = split_audit(root, "val")       # [{"family": "all", "certified": 46.0, ...}, ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import HarnessError
from harness.data.cirr import read_json
from harness.data.synthetic.additive import certify
from harness.data.synthetic.adversary import SplitData, adversary_r1
from harness.data.synthetic.families import FAMILIES
from harness.data.synthetic.generate_v3 import DENSITY_WEIGHTS as GROUP_DENSITY_WEIGHTS
from harness.data.synthetic.programs import Program, classic_program, program
from harness.data.synthetic.scene import apply_edits, edit_from_json, scene_from_json
from harness.data.synthetic.structure import density_r1, medoid_r1, one_edit_neighbours

COLUMNS = ("queries", "oracle", "best_additive", "caption_only", "reference_only", "joint_share")


def _program(entry: dict[str, Any]) -> Program:
    """A query's program: recorded by version 2, rebuilt from the classic edits of version 1."""
    if "program" in entry:
        return Program.from_json(entry["program"])
    steps = [classic_program(edit_from_json(e)) for e in entry["edits"]]
    return steps[0] if len(steps) == 1 else program("compound", steps=tuple(steps))


def _facts(prog: Program, version: int) -> list:
    """A program's caption facts: version 3's pair families' for its pair families (which come
    in mirror pairs only), else version 2's family's."""
    if version >= 3:
        from harness.data.synthetic.twins import pair_family

        family = pair_family(prog)
        if family is not None:
            return family.facts(prog)
    return FAMILIES[prog.family].facts(prog)


def _version(root: Path) -> int:
    manifest = root / "synthetic.json"
    return int(read_json(manifest, what="benchmark manifest").get("generator_version", 1)) if manifest.is_file() else 1


def _split_files(root: Path, split: str) -> tuple[Path, dict, list, dict, list[str]]:
    """(query-edits file, scene graphs, query-edits entries, reference per pair id, gallery names)
    of a written split."""
    edits_file = root / f"query_edits.rc2.{split}.json"
    graphs = read_json(root / "scene_graphs.json", what="scene graphs file")
    entries = read_json(edits_file, what="query edits file")
    captions = {e["pairid"]: e["reference"] for e in read_json(root / "captions" / f"cap.rc2.{split}.json",
                                                               what="caption file")}
    names = list(read_json(root / "image_splits" / f"split.rc2.{split}.json", what="image split file"))
    return edits_file, graphs, entries, captions, names


def split_ceilings(root: Path, split: str) -> list[dict[str, Any]]:
    """One row for the whole split, then one per family, sorted by name."""
    edits_file, graphs, entries, captions, names = _split_files(root, split)
    column = {name: i for i, name in enumerate(names)}
    try:
        gallery = [scene_from_json(graphs[name]) for name in names]
        programs = [_program(e) for e in entries]
        references = [gallery[column[captions[e["pairid"]]]] for e in entries]
        expected = [apply_edits(r, [edit_from_json(x) for x in e["edits"]]) for r, e in zip(references, entries)]
        version = _version(root)
        facts = [_facts(p, version) for p in programs]
        targets = [column[e["target"]] for e in entries]
        refs = [column[captions[e["pairid"]]] for e in entries]
    except (KeyError, TypeError, ValueError, IndexError, AssertionError) as error:
        raise HarnessError(f"does not describe this benchmark's images ({type(error).__name__}: {error})",
                           file=edits_file, fix="regenerate the benchmark with `harness data synthetic`") from None
    certificate = certify(references, facts, targets, expected, refs, gallery)
    # version 3 certifies by construction (a twin in the group); earlier versions by the grid
    joint = (np.array([bool(e.get("needs_joint_reading")) for e in entries]) if version >= 3
             else certificate.needs_joint_reading)
    every = np.ones(len(entries), bool)

    def row(name: str, mask: np.ndarray) -> dict[str, Any]:
        return {"family": name, **certificate.ceilings(mask, every), "joint_share": 100 * float(joint[mask].mean())}

    rows = [row("all", every)]
    rows += [row(family, np.array([p.family == family for p in programs])) for family in sorted({p.family
                                                                                                for p in programs})]
    if joint.any() and not joint.all():
        rows += [row("(joint reading)", joint), row("(the rest)", ~joint)]
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


#: The weights of the distance to the reference the density is tried with (1: the audit's form;
#: large: nearest the reference first, most neighbours next); the generator checks its groups
#: against the same ones.
DENSITY_WEIGHTS = GROUP_DENSITY_WEIGHTS
AUDIT_COLUMNS = ("queries", "certified", "adversary", "adversary_certified", "medoid", "density", "density_best")


def read_split_data(root: Path, split: str) -> tuple[SplitData, list[dict[str, Any]]]:
    """The scenes, programs, references, targets and groups of a written split with recorded
    groups (version 2 or 3), and its query-edits entries."""
    edits_file, graphs, entries, captions, names = _split_files(root, split)
    column = {name: i for i, name in enumerate(names)}
    try:
        data = SplitData(gallery=[scene_from_json(graphs[name]) for name in names],
                         programs=[Program.from_json(e["program"]) for e in entries],
                         references=[column[captions[e["pairid"]]] for e in entries],
                         targets=[column[e["target"]] for e in entries],
                         groups=[[column[name] for name in e["group"]] for e in entries])
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise HarnessError(f"does not describe this benchmark's images with their groups ({type(error).__name__}: "
                           f"{error})", file=edits_file,
                           fix="regenerate the benchmark with `harness data synthetic` (version 2 or 3)") from None
    return data, entries


def split_audit(root: Path, split: str) -> list[dict[str, Any]]:
    """One row for the whole split, then one per family (see the module docstring); percent."""
    data, entries = read_split_data(root, split)
    certified = np.array([bool(e.get("needs_joint_reading")) for e in entries])
    adversary = adversary_r1(data)
    medoid = medoid_r1(data.gallery, data.groups, data.references, data.targets)
    neighbours = one_edit_neighbours(data.gallery)
    densities = np.vstack([density_r1(data.gallery, neighbours / weight, data.references, data.targets)
                           for weight in DENSITY_WEIGHTS])
    families = np.array([e.get("family", "") for e in entries])
    rows = []
    for family in ["all", *sorted(set(families))]:
        mask = np.ones(len(entries), bool) if family == "all" else families == family
        on_certified = mask & certified
        rows.append({"family": family, "queries": int(mask.sum()), "certified": 100 * float(certified[mask].mean()),
                     "adversary": 100 * float(adversary[mask].mean()),
                     "adversary_certified": 100 * float(adversary[on_certified].mean()) if on_certified.any() else None,
                     "medoid": 100 * float(medoid[mask].mean()), "density": 100 * float(densities[0, mask].mean()),
                     "density_best": 100 * float(densities[:, mask].mean(axis=1).max())})
    return rows


def format_audit(rows: list[dict[str, Any]]) -> list[str]:
    """Plain-text table lines of ``split_audit`` rows."""
    lines = [f"  {'family':<16} {'queries':>7} {'certified %':>11} {'adversary':>9} {'on certified':>12} "
             f"{'medoid':>6} {'density':>7} {'density (best weight)':>21}"]
    for row in rows:
        on_certified = "-" if row["adversary_certified"] is None else f"{row['adversary_certified']:.1f}"
        lines.append(f"  {row['family']:<16} {row['queries']:>7} {row['certified']:>11.1f} {row['adversary']:>9.1f} "
                     f"{on_certified:>12} {row['medoid']:>6.1f} {row['density']:>7.1f} {row['density_best']:>21.1f}")
    return lines
