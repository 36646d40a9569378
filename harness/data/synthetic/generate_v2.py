"""Queries of the embedded benchmark, version 2: reference-dependent families, balanced and
recorded distractors, diverse phrasings and a per-query certificate.

Per query: a reference of 2 or more objects (so small scenes never run out), a family drawn
(``reference_share`` of them from the reference-dependent families, the rest from the
classic ones, uniformly within each), its program, target and caption; then the image group:

- intent distractors: the family's misreadings of the caption applied to the reference;
- retention distractors: the target with one more change the caption did not ask for (an
  untouched object altered or removed, or an object added);
- topped-up members: random single edits of the target, only where the two kinds run short.

Train queries hold a CIRR-style set of 6 (reference, target, 2 + 2 distractors); val/test1
groups hold ``group_size`` images, the set of 6 among them. Every member's kind is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.synthetic.additive import certify
from harness.data.synthetic.families import CLASSIC_FAMILIES, Family
from harness.data.synthetic.phrasing import render
from harness.data.synthetic.programs import Program
from harness.data.synthetic.query import SPLIT_DIRS, SPLITS, Query, SceneRegistry
from harness.data.synthetic.reference_families import REFERENCE_FAMILIES
from harness.data.synthetic.scene import (
    CELLS,
    COLOURS,
    SHAPES,
    SIZES,
    Edit,
    EditNotApplicable,
    Scene,
    SceneObject,
    apply_edits,
    random_edit,
    random_scene,
)

GENERATOR_VERSION = 2
SET_SIZE = 6


@dataclass
class Drawn:
    """A query before naming: its program, caption and the scenes of its group by kind."""

    family: str
    program: Program
    edits: list[Edit]
    caption: str
    held_out: bool
    scenes: list[Scene]  # reference, target, then the distractors
    kinds: list[str]
    facts: list


def pick_family(rng: np.random.Generator, reference_share: float) -> Family:
    pool = REFERENCE_FAMILIES if rng.random() < reference_share else CLASSIC_FAMILIES
    return pool[int(rng.integers(len(pool)))]


def _distinct(rng: np.random.Generator, base: Scene, edit_lists: list[list[Edit]], fresh, taken: list[Scene],
              wanted: int) -> list[Scene]:
    """Up to ``wanted`` scenes made by applying ``edit_lists`` (in random order, each only when
    needed) to ``base``, new to ``fresh`` and to ``taken``."""
    chosen: list[Scene] = []
    for index in rng.permutation(len(edit_lists)):
        if len(chosen) == wanted:
            break
        try:
            scene = apply_edits(base, edit_lists[int(index)])
        except EditNotApplicable:
            continue
        if fresh(scene, *taken, *chosen):
            chosen.append(scene)
    return chosen


def retention_edits(reference: Scene, target: Scene, rng: np.random.Generator) -> list[list[Edit]]:
    """One change the caption did not ask for: an untouched object altered or removed, or an
    object added in a free cell."""
    untouched = [obj for obj in target if obj in reference]
    edits: list[list[Edit]] = []
    for obj in untouched:
        edits += [[Edit("recolour", obj.identity, c)] for c in COLOURS if c != obj.colour]
        edits += [[Edit("resize", obj.identity, z)] for z in SIZES if z != obj.size]
        edits += [[Edit("replace", obj.identity, s)] for s in SHAPES if s != obj.shape]
        edits += [[Edit("move", obj.identity, cell)] for cell in CELLS if cell not in {o.cell for o in target}]
        edits.append([Edit("remove", obj.identity)])
    free = [cell for cell in CELLS if cell not in {o.cell for o in target}]
    for _ in range(4 if free else 0):
        cell = free[int(rng.integers(len(free)))]
        new = SceneObject(cell, SHAPES[int(rng.integers(len(SHAPES)))], COLOURS[int(rng.integers(len(COLOURS)))],
                          SIZES[int(rng.integers(len(SIZES)))])
        edits.append([Edit("add", None, new)])
    return edits


def draw_query(rng: np.random.Generator, config, evaluation: bool, fresh) -> Drawn:
    """One query and its group (see the module docstring); ``fresh(scene, *others)`` says
    whether a scene is new to the benchmark and to ``others``."""
    group = config.group_size if evaluation else SET_SIZE
    n_intent = (group - 1) // 2
    n_retention = group - 2 - n_intent
    family = pick_family(rng, config.reference_share)  # drawn once, so hard-to-apply families keep their share
    while True:
        reference = random_scene(rng, int(rng.integers(2, config.max_objects + 1)))
        try:
            prog = family.draw(rng, reference)
            edits = family.resolve(prog, reference)
            target = apply_edits(reference, edits)
        except EditNotApplicable:
            continue
        if not (fresh(reference) and fresh(target, reference)):
            continue
        base = [reference, target]
        intent = _distinct(rng, reference, family.misreadings(prog, reference), fresh, base, n_intent)
        retention = _distinct(rng, target, retention_edits(reference, target, rng), fresh, base + intent,
                              n_retention + n_intent - len(intent))
        taken = base + intent + retention
        topped: list[Scene] = []
        for _ in range(200):
            if len(taken) + len(topped) == group:
                break
            try:
                scene = apply_edits(target, [random_edit(rng, target)])
            except EditNotApplicable:
                continue
            if fresh(scene, *taken, *topped):
                topped.append(scene)
        if len(taken) + len(topped) < group:
            continue
        held_out = evaluation and bool(rng.random() < config.held_out_share)
        caption, held_out = render(prog, rng, held_out)
        kinds = ["reference", "target", *["intent"] * len(intent), *["retention"] * len(retention),
                 *["topped_up"] * len(topped)]
        return Drawn(family.name, prog, edits, caption, held_out, taken + topped, kinds, family.facts(prog))


def cirr_set(kinds: list[str]) -> list[int]:
    """Indices of the 6 group members of the CIRR-style set: reference, target, the first two
    intent and the first two retention distractors (topped-up ones where those run short)."""
    chosen = [0, 1]
    for kind in ("intent", "retention"):
        chosen += [i for i, k in enumerate(kinds) if k == kind][:2]
    chosen += [i for i in range(len(kinds)) if i not in chosen][: SET_SIZE - len(chosen)]
    return sorted(chosen)


def certificate_of(drawn: list[Drawn], names: list[list[str]]) -> list[dict[str, object]]:
    """Per query of one evaluation split, its gallery being every image of the split (see
    ``harness.data.synthetic.additive``): needs_joint_reading and each learning-free scorer's
    expected R@1 (0-1)."""
    gallery: list[Scene] = []
    column: dict[str, int] = {}
    for query, group_names in zip(drawn, names, strict=True):
        for name, scene in zip(group_names, query.scenes, strict=True):
            column[name] = len(gallery)
            gallery.append(scene)
    result = certify(references=[q.scenes[0] for q in drawn], facts=[q.facts for q in drawn],
                     targets=[column[n[1]] for n in names], expected=[q.scenes[1] for q in drawn],
                     reference_columns=[column[n[0]] for n in names], gallery=gallery)
    scorers = result.scorers()
    return [{"needs_joint_reading": bool(joint),
             "learning_free_r1": {k: round(float(v[i]), 6) for k, v in scorers.items()}}
            for i, joint in enumerate(result.needs_joint_reading)]


def generate_queries_v2(config) -> dict[str, list]:
    """All queries of all splits, version 2 (scene graphs only); deterministic in the seed."""
    rng = np.random.default_rng([config.seed, GENERATOR_VERSION])
    used = SceneRegistry()
    queries: dict[str, list[Query]] = {}
    pairid = 0
    for split in SPLITS:
        drawn: list[Drawn] = []
        names: list[list[str]] = []  # per query, the name of each of its scenes (reference first)
        for set_id in range(config.num_queries(split)):
            query = draw_query(rng, config, split != "train", used.fresh)
            used.add(query.scenes)
            position = np.argsort(rng.permutation(len(query.scenes)))  # scene i is image position[i]
            names.append([f"{SPLIT_DIRS[split]}-{set_id:05d}-img{int(p)}" for p in position])
            drawn.append(query)
        certificates = certificate_of(drawn,
                                      names) if split != "train" else [{"needs_joint_reading": None}] * len(drawn)
        queries[split] = []
        for query, scene_names, certificate in zip(drawn, names, certificates, strict=True):
            order = sorted(range(len(scene_names)), key=lambda i: scene_names[i])
            record = {"family": query.family, "program": query.program.to_json(), "held_out": query.held_out,
                      "group": {scene_names[i]: query.kinds[i] for i in order}, **certificate}
            queries[split].append(Query(
                pairid=pairid, reference=scene_names[0], target=scene_names[1], caption=query.caption,
                edits=query.edits, members=sorted(scene_names[i] for i in cirr_set(query.kinds)),
                images={scene_names[i]: query.scenes[i] for i in order}, record=record))
            pairid += 1
    return queries
