"""Reference-dependent edit families of the embedded benchmark, version 2: the caption leaves
a value unsaid that only the reference supplies (where "one cell left" lands, which shape is
"left of the circle", what colour "the square" has), so the target is a function of caption
*and* reference that no sum of a caption score and a reference score represents.

The families follow the prototype measurements in issue 17 (relative moves, relational
referents, swaps, attribute copies from a referent named by its shape) plus implicit rules;
each records its natural misreadings, which become the query's intent distractors.
"""

from __future__ import annotations

import numpy as np

from harness.data.synthetic.programs import (
    Fact,
    Family,
    Program,
    _applicable,
    _pick,
    _referent_fact,
    _referent_slot,
    _resolve_referent,
    program,
)
from harness.data.synthetic.scene import (
    CELLS,
    COLOURS,
    DIRECTIONS,
    SHAPES,
    SIZES,
    Edit,
    EditNotApplicable,
    Scene,
    SceneObject,
    apply_edits,
    find,
    neighbour,
)

#: Spatial relations of a referent to its anchor, as the grid direction from the anchor.
RELATIONS: dict[str, str] = {"left of": "left", "right of": "right", "above": "up", "below": "down"}


def _free(scene: Scene, cell: tuple[int, int] | None) -> bool:
    return cell is not None and all(obj.cell != cell for obj in scene)


def _at(scene: Scene, cell: tuple[int, int] | None) -> SceneObject | None:
    return next((obj for obj in scene if obj.cell == cell), None)


def _others(scene: Scene, *objs: SceneObject) -> list[SceneObject]:
    return [obj for obj in scene if obj not in objs]


class RelativeMove(Family):
    """"move the red circle one cell left": the target cell is the subject's cell plus a step."""

    name = "relative_move"

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        subject: SceneObject = _pick(rng, list(reference))
        options = [(d, n) for d in DIRECTIONS for n in (1, 2) if _free(reference, neighbour(subject.cell, d, n))]
        direction, distance = _pick(rng, options)
        return program(self.name, subject=subject.identity, direction=direction, distance=distance)

    @staticmethod
    def _move(scene: Scene, subject: tuple[str, str], direction: str, distance: int) -> list[Edit]:
        cell = neighbour(find(scene, subject).cell, direction, distance)
        if cell is None:
            raise EditNotApplicable("off the grid")
        return [Edit("move", subject, cell)]

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return self._move(reference, prog["subject"], prog["direction"], prog["distance"])

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        lists = []
        for obj in reference:
            for direction in DIRECTIONS:
                for distance in (1, 2):
                    if (obj.identity, direction, distance) == (prog["subject"], prog["direction"], prog["distance"]):
                        continue
                    try:
                        lists.append(self._move(reference, obj.identity, direction, distance))
                    except EditNotApplicable:
                        pass
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        return [(("id", *prog["subject"]), 1.0)]


class MoveBeside(Family):
    """"put the red circle left of the star": the target cell is next to an anchor object."""

    name = "move_beside"

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        subject: SceneObject = _pick(rng, list(reference))
        anchor: SceneObject = _pick(rng, _others(reference, subject))
        relation = _pick(rng, [r for r, d in RELATIONS.items() if _free(reference, neighbour(anchor.cell, d))])
        return program(self.name, subject=subject.identity, relation=relation, **_referent_slot(reference, anchor, rng))

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        anchor = _resolve_referent(reference, prog)
        return [Edit("move", prog["subject"], neighbour(anchor.cell, RELATIONS[prog["relation"]]))]

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        subject = find(reference, prog["subject"])
        anchor = _resolve_referent(reference, prog)
        lists = [[Edit("move", subject.identity, neighbour(anchor.cell, d))]
                 for r, d in RELATIONS.items() if r != prog["relation"]]
        lists += [[Edit("move", anchor.identity, neighbour(subject.cell, d))] for d in RELATIONS.values()]  # reversed
        lists += [[Edit("move", subject.identity, neighbour(other.cell, d))]  # beside another object
                  for other in _others(reference, subject, anchor) for d in RELATIONS.values()]
        return _applicable(reference, [e for e in lists if e[0].new is not None])

    def facts(self, prog: Program) -> list[Fact]:
        return [(("beside", ("id", *prog["subject"]), _referent_fact(prog), prog["relation"]), 1.0)]


#: What a referent edit does to the object it finds, and the slot holding the new value.
ACTIONS: tuple[str, ...] = ("remove", "recolour", "resize", "replace")


class ReferentEdit(Family):
    """"remove the shape left of the circle": the subject is named by where it is."""

    name = "referent_edit"

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        anchor: SceneObject = _pick(rng, list(reference))
        relation = _pick(rng, [r for r, d in RELATIONS.items() if _at(reference, neighbour(anchor.cell, d))])
        subject = _at(reference, neighbour(anchor.cell, RELATIONS[relation]))
        assert subject is not None
        action = _pick(rng, list(ACTIONS))
        edit = _action_edit(rng, reference, subject, action)
        return program(self.name, relation=relation, action=action, value=edit.new,
                       **_referent_slot(reference, anchor, rng))

    def _subject(self, prog: Program, reference: Scene) -> SceneObject:
        anchor = _resolve_referent(reference, prog)
        subject = _at(reference, neighbour(anchor.cell, RELATIONS[prog["relation"]]))
        if subject is None:
            raise EditNotApplicable("no shape there")
        return subject

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return [Edit(prog["action"], self._subject(prog, reference).identity, prog["value"])]

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        subject = self._subject(prog, reference)
        lists = [[Edit(prog["action"], obj.identity, prog["value"])] for obj in _others(reference, subject)]
        if prog["action"] in ("recolour", "replace"):  # the right object, a wrong value
            lists += [[Edit(prog["action"], subject.identity,
                            v)] for v in _values(prog["action"]) if v != prog["value"]]
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        facts: list[Fact] = [(_referent_fact(prog), 1.0)]
        if prog["action"] == "recolour":
            facts.append((("colour", prog["value"]), 1.0))
        elif prog["action"] == "replace":
            facts.append((("shape", prog["value"]), 1.0))
        return facts


def _values(action: str) -> tuple[str, ...]:
    return COLOURS if action == "recolour" else SHAPES


def _action_edit(rng: np.random.Generator, scene: Scene, subject: SceneObject, action: str) -> Edit:
    """A random applicable ``action`` on ``subject`` (remove, recolour, resize or replace)."""
    if action == "remove":
        if len(scene) < 2:
            raise EditNotApplicable("cannot remove the last object")
        return Edit("remove", subject.identity)
    if action == "resize":
        return Edit("resize", subject.identity, SIZES[1 - SIZES.index(subject.size)])
    taken = {obj.identity for obj in scene}
    if action == "recolour":
        options = [c for c in _values(action) if (c, subject.shape) not in taken]
    else:
        options = [s for s in _values(action) if (subject.colour, s) not in taken]
    return Edit(action, subject.identity, _pick(rng, options))


class Swap(Family):
    """"swap the orange star and the blue diamond" (their cells) or "... swap their colours"."""

    name = "swap"

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        if len(reference) < 2:
            raise EditNotApplicable("one object")
        subject: SceneObject = _pick(rng, list(reference))
        other: SceneObject = _pick(rng, _others(reference, subject))
        prog = program(self.name, subject=subject.identity, other=other.identity,
                       attribute=_pick(rng, ["position", "colour"]))
        apply_edits(reference, self.resolve(prog, reference))
        return prog

    @staticmethod
    def _swap(scene: Scene, a: tuple[str, str], b: tuple[str, str], attribute: str) -> list[Edit]:
        if attribute == "position":
            return [Edit("swap", a, b)]
        first, second = find(scene, a), find(scene, b)
        return [Edit("recolour", a, second.colour), Edit("recolour", b, first.colour)]

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return self._swap(reference, prog["subject"], prog["other"], prog["attribute"])

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        pair = {prog["subject"], prog["other"]}
        lists = [self._swap(reference, a.identity, b.identity, prog["attribute"])  # with a third object
                 for a in reference for b in reference if a < b and {a.identity, b.identity} != pair]
        other_attribute = "colour" if prog["attribute"] == "position" else "position"
        lists.append(self._swap(reference, prog["subject"], prog["other"], other_attribute))
        first, second = find(reference, prog["subject"]), find(reference, prog["other"])
        if prog["attribute"] == "position":  # half done: one object moved, the other one dropped or sent elsewhere
            lists += [[Edit("remove", second.identity), Edit("move", first.identity, second.cell)],
                      [Edit("remove", first.identity), Edit("move", second.identity, first.cell)]]
            free = [cell for cell in CELLS if _free(reference, cell)]
            lists += [[Edit("move", second.identity, cell), Edit("move", first.identity, second.cell)] for cell in free]
        else:  # half done: both take one colour, or one takes a third colour
            lists += [[Edit("recolour", first.identity, second.colour)],
                      [Edit("recolour", second.identity, first.colour)]]
            lists += [[Edit("recolour", first.identity, second.colour), Edit("recolour", second.identity, c)]
                      for c in COLOURS if c not in (first.colour, second.colour)]
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        if prog["attribute"] == "colour":  # each identity is gone, its swapped form is unsaid
            return [(("id", *prog["subject"]), -1.0), (("id", *prog["other"]), -1.0)]
        return [(("id", *prog["subject"]), 1.0), (("id", *prog["other"]), 1.0)]


class CopyAttribute(Family):
    """"make the cyan circle the same size as the square": the value is the source's."""

    name = "copy_attribute"

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        subject: SceneObject = _pick(rng, list(reference))
        source: SceneObject = _pick(rng, _others(reference, subject))
        attribute = _pick(rng, ["size", "colour"])
        prog = program(self.name, subject=subject.identity, attribute=attribute,
                       **_referent_slot(reference, source, rng))
        apply_edits(reference, self.resolve(prog, reference))
        return prog

    @staticmethod
    def _copy(subject: SceneObject, source: SceneObject, attribute: str) -> list[Edit]:
        kind = "resize" if attribute == "size" else "recolour"
        return [Edit(kind, subject.identity, getattr(source, attribute))]

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return self._copy(find(reference, prog["subject"]), _resolve_referent(reference, prog), prog["attribute"])

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        subject, source = find(reference, prog["subject"]), _resolve_referent(reference, prog)
        other_attribute = "colour" if prog["attribute"] == "size" else "size"
        lists = [self._copy(source, subject, prog["attribute"]),  # the copy reversed
                 self._copy(subject, source, other_attribute)]
        lists += [self._copy(subject, obj, prog["attribute"]) for obj in _others(reference, subject, source)]
        lists += [self._copy(obj, source,
                             prog["attribute"]) for obj in _others(reference, subject, source)]  # wrong subject
        if prog["attribute"] == "colour":  # the source's colour misjudged
            lists += [[Edit("recolour", subject.identity,
                            c)] for c in COLOURS if c not in (subject.colour, source.colour)]
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        facts: list[Fact] = [(("same", prog["attribute"], ("shape", prog["subject"][1]), _referent_fact(prog)), 1.0)]
        if prog["attribute"] == "colour":
            facts.append((("id", *prog["subject"]), -1.0))
        return facts


class Rule(Family):
    """Implicit rules: "make every shape the colour of the star" or "remove the star and every
    shape of its colour"; which objects change depends on the reference."""

    name = "rule"

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        anchor: SceneObject = _pick(rng, list(reference))
        prog = program(self.name, rule=_pick(rng, ["colour_all", "remove_colour"]),
                       **_referent_slot(reference, anchor, rng))
        apply_edits(reference, self.resolve(prog, reference))
        return prog

    @staticmethod
    def _apply(reference: Scene, anchor: SceneObject, rule: str) -> list[Edit]:
        if rule == "colour_all":
            edits = [Edit("recolour", obj.identity, anchor.colour) for obj in reference if obj.colour != anchor.colour]
            if len(edits) < 2:
                raise EditNotApplicable("fewer than two shapes to recolour")
            return edits
        same = [obj for obj in reference if obj.colour == anchor.colour]
        if len(same) < 2 or len(same) == len(reference):
            raise EditNotApplicable("the rule removes one shape or all")
        return [Edit("remove", obj.identity) for obj in same]

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return self._apply(reference, _resolve_referent(reference, prog), prog["rule"])

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        anchor = _resolve_referent(reference, prog)
        lists: list[list[Edit]] = []
        for obj in _others(reference, anchor):  # the rule read with another object's colour
            try:
                lists.append(self._apply(reference, obj, prog["rule"]))
            except EditNotApplicable:
                pass
        edits = self._apply(reference, anchor, prog["rule"])
        lists += [edits[:i] + edits[i + 1:] for i in range(len(edits))]  # one shape left out
        if prog["rule"] == "remove_colour":
            lists.append([e for e in edits if e.subject != anchor.identity])  # the anchor kept
        else:  # the anchor's colour misjudged
            lists += [[Edit("recolour", obj.identity, c) for obj in reference if obj.colour != c]
                      for c in COLOURS if c != anchor.colour]
        return _applicable(reference, [e for e in lists if e])

    def facts(self, prog: Program) -> list[Fact]:
        if prog["rule"] == "colour_all":
            return [(("one_colour",), 1.0), (_referent_fact(prog), 1.0)]
        return [(_referent_fact(prog), -1.0)]


REFERENCE_FAMILIES: tuple[Family, ...] = (RelativeMove(), MoveBeside(), ReferentEdit(), Swap(), CopyAttribute(), Rule())

