"""Queries of the embedded benchmark, version 3: a joint-reading certificate by construction
(mirror pairs whose targets are each other's twins, ``harness.data.synthetic.twins``) and
groups in which no caption-free structure points at the target.

Per draw: with probability ``twin_share`` a mirror pair (two queries on one reference, one
group), else a single query from the families that need no twin (a one-cell relative move, an
edit of the shape beside another, the classic edits and their compounds). Groups of
evaluation splits (``group_size`` images):

- the reference and the target (a pair: both targets);
- intent distractors: the captions' misreadings applied to the reference, topped up with other
  single edits of the reference where they run short ("topped_up");
- retention distractors: one unrequested change on top of a member one edit from the
  reference, spread over those members in random order (the targets, the intent distractors,
  the topped-up ones), so the target is no hub: it has as many near neighbours as any of them.

Training queries keep a CIRR-style set of 6 (a pair shares one). Each query records its family,
program, phrasing, group (member -> kind: target, twin, intent, retention, topped_up),
``needs_joint_reading`` (it has a twin), its twin and mirror, and version 2's learning-free R@1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.data.synthetic.additive import certify
from harness.data.synthetic.families import CLASSIC_FAMILIES
from harness.data.synthetic.generate_v2 import retention_edits
from harness.data.synthetic.phrasing import render
from harness.data.synthetic.programs import Family, Program, _applicable
from harness.data.synthetic.query import SPLIT_DIRS, SPLITS, Query, SceneRegistry
from harness.data.synthetic.reference_families import RELATIONS as LOOSE_RELATIONS
from harness.data.synthetic.reference_families import ReferentEdit, RelativeMove
from harness.data.synthetic.scene import (
    CELLS,
    Edit,
    EditNotApplicable,
    Scene,
    SceneObject,
    apply_edits,
    find,
    neighbour,
    random_edit,
    random_scene,
)
from harness.data.synthetic.structure import scene_distance
from harness.data.synthetic.twins import PAIR_FAMILIES, PairFamily, draw_twins

GENERATOR_VERSION = 3
SET_SIZE = 6
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


class OneCellMove(RelativeMove):
    """"move the red circle one cell left" (one cell only: "two cells left" names the edge, a
    position the caption alone gives away). Its misreadings add the subject moved the same way
    from another start, so the caption's literal facts (a free cell behind it, not at the far
    edge) hold in them too."""

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        prog = super().draw(rng, reference)
        if prog["distance"] != 1:
            raise EditNotApplicable("version 3 moves one cell")
        return prog

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        lists = [e for e in super().misreadings(prog, reference) if e[0].new is not None]
        subject = find(reference, prog["subject"])
        target = neighbour(subject.cell, prog["direction"])
        for cell in CELLS:
            behind = neighbour(cell, OPPOSITE[prog["direction"]])
            if cell in (target, subject.cell) or behind is None:
                continue
            if all(o.cell != cell for o in reference) and all(o.cell != behind or o == subject for o in reference):
                lists.append([Edit("move", subject.identity, cell)])
        return _applicable(reference, lists)


class SideReferentEdit(ReferentEdit):
    """"remove the shape left of the circle", drawn only where that side holds one shape (no
    second one further along), with misreadings that reach the caption's post-condition by
    another edit (the circle moved beside another shape of the named colour, size or kind;
    the shape there moved away)."""

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        prog = super().draw(rng, reference)
        anchor = self._anchor(prog, reference)
        beyond = neighbour(anchor.cell, LOOSE_RELATIONS[prog["relation"]], 2)
        if beyond is not None and any(o.cell == beyond for o in reference):
            raise EditNotApplicable("two shapes on the named side")
        return prog

    @staticmethod
    def _anchor(prog: Program, reference: Scene) -> SceneObject:
        from harness.data.synthetic.programs import _resolve_referent

        return _resolve_referent(reference, prog)

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        lists = list(super().misreadings(prog, reference))
        anchor, subject = self._anchor(prog, reference), self._subject(prog, reference)
        direction = LOOSE_RELATIONS[prog["relation"]]
        free = [c for c in CELLS if all(o.cell != c for o in reference)]
        if prog["action"] == "remove":  # the side emptied by moving a shape away
            lists += [[Edit("move", subject.identity, c)] for c in free if c != neighbour(anchor.cell, direction)]
            lists += [[Edit("move", anchor.identity, c)] for c in free
                      if neighbour(c, direction) is None or neighbour(c, direction) in free]
        else:  # the anchor moved beside another shape that has the named value
            attribute = {"recolour": "colour", "resize": "size", "replace": "shape"}[prog["action"]]
            for other in reference:
                if other in (anchor, subject) or getattr(other, attribute) != prog["value"]:
                    continue
                cell = neighbour(other.cell, OPPOSITE[direction])
                if cell in free:
                    lists.append([Edit("move", anchor.identity, cell)])
        return _applicable(reference, lists)


SINGLE_REFERENCE_FAMILIES: tuple[Family, ...] = (OneCellMove(), SideReferentEdit())


@dataclass
class Drawn:
    """One group of version 3 before naming: its queries (one, or a mirror pair) and scenes."""

    families: list[str]
    programs: list[Program]
    edits: list[list[Edit]]
    captions: list[str]
    held_out: list[bool]
    facts: list[list]
    scenes: list[Scene]  # reference, the target(s), then the distractors
    kinds: list[str]  # reference, target, (target of the mirror), intent, retention, topped_up

    @property
    def paired(self) -> bool:
        return len(self.programs) == 2


def _draw_queries(rng: np.random.Generator, config) -> tuple[PairFamily | Family, Scene, list[Program],
                                                              list[list[Edit]], list[Scene]]:
    """A family, a reference and its query (or mirror pair): programs, edits and targets."""
    paired = rng.random() < config.twin_share
    if paired:
        family: PairFamily | Family = PAIR_FAMILIES[int(rng.integers(len(PAIR_FAMILIES)))]
    else:
        pool = SINGLE_REFERENCE_FAMILIES if rng.random() < config.reference_share else CLASSIC_FAMILIES
        family = pool[int(rng.integers(len(pool)))]
    while True:
        reference = random_scene(rng, int(rng.integers(2, config.max_objects + 1)))
        try:
            if isinstance(family, PairFamily):
                programs, edits, targets = draw_twins(rng, family, reference)
                return family, reference, list(programs), list(edits), list(targets)
            prog = family.draw(rng, reference)
            edits = family.resolve(prog, reference)
            return family, reference, [prog], [edits], [apply_edits(reference, edits)]
        except EditNotApplicable:
            continue


def _no_star(targets: list[Scene], centres: list[Scene], candidate: Scene) -> bool:
    """Whether ``candidate`` may join the centres (the members one edit or so from the reference)
    without making a target the middle of a star: no target may have more one-edit neighbours
    among the centres than the best-connected other centre. A clique (recolours of one object to
    several colours) keeps its members alike; a star (an object removed, and that object
    recoloured, resized or moved in the other members) would single the target out."""
    members = [*centres, candidate]

    def degree(scene: Scene) -> int:
        return sum(scene_distance(scene, other) == 1 for other in members if other is not scene)

    others = [degree(m) for m in members if not any(m is t for t in targets)]
    return all(degree(t) <= max(others, default=0) for t in targets)


def _centres(rng: np.random.Generator, reference: Scene, targets: list[Scene], misreadings: list[list[Edit]],
             wanted: int, fresh) -> tuple[list[Scene], list[Scene]]:
    """(intent distractors, topped-up members): the misreadings applied to the reference, then
    other single edits of it, in random order, each kept only when it is new and makes no star."""
    chosen: list[Scene] = []
    intent: list[Scene] = []
    for index in rng.permutation(len(misreadings)):
        if len(chosen) == wanted:
            break
        try:
            scene = apply_edits(reference, misreadings[int(index)])
        except EditNotApplicable:
            continue
        if fresh(scene, reference, *targets, *chosen) and _no_star(targets, [*targets, *chosen], scene):
            chosen.append(scene)
            intent.append(scene)
    topped: list[Scene] = []
    for _ in range(200):
        if len(chosen) == wanted:
            break
        try:
            scene = apply_edits(reference, [random_edit(rng, reference)])
        except EditNotApplicable:
            continue
        if fresh(scene, reference, *targets, *chosen) and _no_star(targets, [*targets, *chosen], scene):
            chosen.append(scene)
            topped.append(scene)
    return intent, topped


def _leaf(rng: np.random.Generator, reference: Scene, centre: Scene, other_centres: list[Scene], fresh,
          taken: list[Scene]) -> Scene | None:
    """A retention distractor of ``centre``: one unrequested change on top of it that leaves it
    two edits or more from every other centre, so it adds a near neighbour to its centre alone."""
    edits = retention_edits(reference, centre, rng)
    for index in rng.permutation(len(edits)):
        try:
            scene = apply_edits(centre, edits[int(index)])
        except EditNotApplicable:
            continue
        if fresh(scene, *taken) and all(scene_distance(scene, other) >= 2 for other in other_centres):
            return scene
    return None


#: Tries at spreading a group's retention distractors before its reference is drawn again.
SPREAD_TRIES = 8


def _group(rng: np.random.Generator, family, reference: Scene, programs: list[Program], targets: list[Scene],
           size: int, fresh) -> tuple[list[Scene], list[str]] | None:
    """The group's scenes and kinds (see the module docstring), or None when it cannot be filled
    without singling a target out (``singled_out``)."""
    base = [reference, *targets]
    n_intent = (size - len(base)) // 2
    misreadings = [e for prog in programs for e in family.misreadings(prog, reference)]
    intent, topped = _centres(rng, reference, targets, misreadings, n_intent, fresh)
    if len(intent) + len(topped) < n_intent:
        return None
    centres = [*targets, *intent, *topped]
    for _ in range(SPREAD_TRIES):
        retention = _spread(rng, reference, centres, size - len(base) - n_intent, fresh, base + intent + topped)
        if retention is None:
            return None
        scenes = base + intent + topped + retention
        if size <= SET_SIZE or not singled_out(scenes, range(1, len(base))):
            kinds = ["reference", *(["target"] * len(targets)), *["intent"] * len(intent),
                     *["topped_up"] * len(topped), *["retention"] * len(retention)]
            return scenes, kinds
    return None


def _spread(rng: np.random.Generator, reference: Scene, centres: list[Scene], count: int, fresh,
            taken: list[Scene]) -> list[Scene] | None:
    """``count`` retention distractors, one per centre in a random order of the centres."""
    retention: list[Scene] = []
    order = [centres[int(i)] for i in rng.permutation(len(centres))]
    for index in range(count):
        centre = order[index % len(order)]
        found = _leaf(rng, reference, centre, [c for c in centres if c is not centre], fresh, taken + retention)
        if found is None:
            return None
        retention.append(found)
    return retention


#: Weights of the distance to the reference in the density scores a group is checked against
#: (as ``harness.data.synthetic.ceilings.DENSITY_WEIGHTS``).
DENSITY_WEIGHTS = (1.0, 4.0, 16.0, 1e4)


def singled_out(scenes: list[Scene], targets) -> bool:
    """Whether a caption-free structure of the group (the reference first) names a target alone:
    the unique medoid of the members, or the unique best of a density score (one-edit neighbours
    in the group minus a weight times the distance to the reference). Ties are allowed: they
    leave the target one of several."""
    distance = np.array([[scene_distance(a, b) for b in scenes] for a in scenes])
    members = np.arange(1, len(scenes))
    neighbours = (distance[members] == 1).sum(axis=1)
    scores = [distance[np.ix_(members, members)].sum(axis=1) * -1.0,
              *(neighbours - weight * distance[0, members] for weight in DENSITY_WEIGHTS)]
    for score in scores:
        best = score.max()
        for target in targets:
            if score[int(target) - 1] == best and (score == best).sum() == 1:
                return True
    return False


def draw_group(rng: np.random.Generator, config, evaluation: bool, fresh) -> Drawn:
    """One query or mirror pair with its group (see the module docstring); ``fresh(scene,
    *others)`` says whether a scene is new to the benchmark and to ``others``."""
    size = config.group_size if evaluation else SET_SIZE
    while True:
        family, reference, programs, edits, targets = _draw_queries(rng, config)
        if not all(fresh(scene, *others) for scene, others in ((reference, ()), *((t, (reference,)) for t in targets))):
            continue
        if len(targets) == 2 and not fresh(targets[1], targets[0]):
            continue
        found = _group(rng, family, reference, programs, targets, size, fresh)
        if found is None:
            continue
        scenes, kinds = found
        captions, held = [], []
        for prog in programs:
            caption, held_out = render(prog, rng, evaluation and bool(rng.random() < config.held_out_share))
            captions.append(caption)
            held.append(held_out)
        facts = [family.facts(prog) for prog in programs]
        return Drawn([family.name] * len(programs), programs, edits, captions, held, facts, scenes, kinds)


def _set_of_six(kinds: list[str], target: int, twin: int | None) -> list[int]:
    """The CIRR-style set: reference, target, twin, then intent and retention members in turn."""
    chosen = [0, target] + ([twin] if twin is not None else [])
    for kind in ("intent", "retention", "intent", "retention", "topped_up", "intent", "retention"):
        if len(chosen) == SET_SIZE:
            break
        chosen += [i for i, k in enumerate(kinds) if k == kind and i not in chosen][:1]
    chosen += [i for i in range(len(kinds)) if i not in chosen][: SET_SIZE - len(chosen)]
    return sorted(chosen)


def _certificates(drawn: list[Drawn], names: list[list[str]]) -> list[dict[str, object]]:
    """Version 2's learning-free R@1 per query of one evaluation split (its gallery: every image
    of the split), for the reports' "perfect perception, no learning" rows."""
    gallery: list[Scene] = []
    column: dict[str, int] = {}
    for group, group_names in zip(drawn, names, strict=True):
        for name, scene in zip(group_names, group.scenes, strict=True):
            column[name] = len(gallery)
            gallery.append(scene)
    references, facts, targets, expected, reference_columns = [], [], [], [], []
    for group, group_names in zip(drawn, names, strict=True):
        for index, prog_facts in enumerate(group.facts):
            references.append(group.scenes[0])
            facts.append(prog_facts)
            targets.append(column[group_names[1 + index]])
            expected.append(group.scenes[1 + index])
            reference_columns.append(column[group_names[0]])
    scorers = certify(references, facts, targets, expected, reference_columns, gallery).scorers()
    return [{"learning_free_r1": {k: round(float(v[i]), 6) for k, v in scorers.items()}}
            for i in range(len(references))]


def _queries_of(group: Drawn, names: list[str], first_pairid: int, certificates: list[dict[str, object]]
                ) -> list[Query]:
    """The queries of one group (a mirror pair's second query writes no images of its own)."""
    queries = []
    order = sorted(range(len(names)), key=lambda i: names[i])
    for index, prog in enumerate(group.programs):
        target = 1 + index
        twin = (2 - index) if group.paired else None
        kinds = {names[i]: ("twin" if i == twin else "target" if i == target else group.kinds[i]) for i in order}
        record = {"family": group.families[index], "program": prog.to_json(), "held_out": group.held_out[index],
                  "group": kinds, "needs_joint_reading": group.paired,
                  **({"twin": names[twin], "mirror": first_pairid + 1 - index} if twin is not None else {}),
                  **certificates[index]}
        queries.append(Query(pairid=first_pairid + index, reference=names[0], target=names[target],
                             caption=group.captions[index], edits=group.edits[index],
                             members=sorted(names[i] for i in _set_of_six(group.kinds, target, twin)),
                             images={names[i]: group.scenes[i] for i in order} if index == 0 else {}, record=record))
    return queries


def generate_queries_v3(config) -> dict[str, list[Query]]:
    """All queries of all splits, version 3 (scene graphs only); deterministic in the seed."""
    rng = np.random.default_rng([config.seed, GENERATOR_VERSION])
    used = SceneRegistry()
    queries: dict[str, list[Query]] = {}
    pairid = 0
    for split in SPLITS:
        groups: list[Drawn] = []
        names: list[list[str]] = []
        count = 0
        while count < config.num_queries(split):
            group = draw_group(rng, config, split != "train", used.fresh)
            if count + len(group.programs) > config.num_queries(split):
                continue  # the last slot takes a single query
            used.add(group.scenes)
            position = np.argsort(rng.permutation(len(group.scenes)))
            names.append([f"{SPLIT_DIRS[split]}-{len(groups):05d}-img{int(p)}" for p in position])
            groups.append(group)
            count += len(group.programs)
        certificates = (_certificates(groups, names) if split != "train"
                        else [{"learning_free_r1": None}] * count)
        queries[split] = []
        at = 0
        for group, group_names in zip(groups, names, strict=True):
            queries[split] += _queries_of(group, group_names, pairid, certificates[at:at + len(group.programs)])
            pairid += len(group.programs)
            at += len(group.programs)
    return queries

