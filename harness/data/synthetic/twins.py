"""Version 3's joint-reading families: queries that come in mirror pairs on one reference, each
query's target the other's *twin*.

A query needs a joint reading when no scorer of the additive form a(caption, x) + b(reference, x)
can rank its target above some image of its group. Version 3 certifies that by construction:
the group holds a twin, an image that says everything the caption literally says (the same
caption-side facts) and keeps as much of the reference (the same objects, the same occupied
cells, the same displacement), and whose role is balanced: the twin is the target of a second
query on the same reference, the mirror query, which swaps the roles. "Put the circle directly
left of the star" (the circle moves) is mirrored by "put the star directly right of the circle"
(the star moves); each target satisfies both captions literally. For the pair, an additive
scorer prefers one image for both queries whenever its caption terms tie, so it solves at most
one of the two: at most half of the certified queries (docs/datasets.md gives the argument).

Pair families (both programs drawn together from one reference):

- ``move_beside``: "put A directly <rel> B" / "put B directly <inverse rel> A";
- ``swap`` (position): "swap A and B" / "swap C and D", the two pairs as far apart;
- ``swap`` (colour): "swap the colours of the A and the B" / "... C and D", named by shape;
- ``copy_attribute``: "make A the same size (colour) as B" / "make B the same size (colour) as A";
- ``rule`` (colour_all): "make every shape the colour of the A" / "... of the C", every colour
  distinct so both recolour as many shapes.

Objects named by colour would give the answer away where the edit changes colours (after "swap
the colours of the red circle and the blue star" the caption's own words say "a blue circle"),
so those pairs name objects by shape alone (shapes unique in the reference).

    >>> family = PAIR_FAMILIES["move_beside"]
    >>> first, second = family.draw_pair(rng, reference)
    >>> target = apply_edits(reference, family.resolve(first, reference))   # the second's twin
"""

from __future__ import annotations

import numpy as np

from harness.data.synthetic.programs import Fact, Family, Program, _applicable, _pick, program
from harness.data.synthetic.scene import (
    COLOURS,
    SIZES,
    Edit,
    EditNotApplicable,
    Scene,
    SceneObject,
    apply_edits,
    neighbour,
)

#: Spatial relation words of version 3 (always adjacency: "directly left of") and their grid direction.
RELATIONS: dict[str, str] = {"left of": "left", "right of": "right", "above": "up", "below": "down"}
INVERSE: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
#: How version 3 names an object: "shape" alone (unique shape) or "identity" (colour and shape).
Naming = dict[SceneObject, str]


def _unique_shape(scene: Scene, obj: SceneObject) -> bool:
    return sum(o.shape == obj.shape for o in scene) == 1


def _slot(role: str, obj: SceneObject, naming: str) -> dict[str, object]:
    """Program slots naming ``obj`` as ``role``: its shape alone, or colour and shape."""
    return {f"{role}_shape": obj.shape} if naming == "shape" else {role: obj.identity}


def _naming(rng: np.random.Generator, scene: Scene, objects: list[SceneObject], shape_only: bool) -> Naming:
    """How each object is named in both captions of a pair: by shape alone where ``shape_only``
    (the shape must then be unique), else by shape alone half the time where it is unique."""
    naming = {}
    for obj in objects:
        unique = _unique_shape(scene, obj)
        if shape_only and not unique:
            raise EditNotApplicable("two objects share a shape")
        naming[obj] = "shape" if unique and (shape_only or rng.random() < 0.5) else "identity"
    return naming


def named(scene: Scene, prog: Program, role: str) -> SceneObject:
    """The object a program names as ``role`` (by identity or by its unique shape)."""
    shape = prog.get(f"{role}_shape")
    if shape is None:
        identity = prog[role]
        found = [o for o in scene if o.identity == tuple(identity)]
    else:
        found = [o for o in scene if o.shape == shape]
    if len(found) != 1:
        raise EditNotApplicable(f"{role} names {len(found)} objects")
    return found[0]


def key(prog: Program, role: str) -> tuple[str, ...]:
    """The statement key of a named object ("id", colour, shape) or ("shape", shape)."""
    shape = prog.get(f"{role}_shape")
    return ("shape", shape) if shape is not None else ("id", *prog[role])


def _others(scene: Scene, *objs: SceneObject) -> list[SceneObject]:
    return [o for o in scene if o not in objs]


def _free(scene: Scene, cell: tuple[int, int] | None) -> bool:
    return cell is not None and all(o.cell != cell for o in scene)


class PairFamily(Family):
    """A family whose queries come in mirror pairs (see the module docstring): it draws a pair
    (``draw_pair``) instead of one program; resolving, misreading and stating facts are a
    Family's."""

    variant = ""

    def draw_pair(self, rng: np.random.Generator, reference: Scene) -> tuple[Program, Program]:
        raise NotImplementedError


class MoveBesidePair(PairFamily):
    """"put A directly left of B" (A moves) and "put B directly right of A" (B moves)."""

    name, variant = "move_beside", "move_beside"

    def draw_pair(self, rng: np.random.Generator, reference: Scene) -> tuple[Program, Program]:
        a, b = (_pick(rng, list(reference)) for _ in range(2))
        if a == b:
            raise EditNotApplicable("one object")
        relations = [r for r, d in RELATIONS.items()
                     if _free(reference, neighbour(b.cell, d)) and _free(reference, neighbour(a.cell,
                                                                                               RELATIONS[INVERSE[r]]))]
        relation = _pick(rng, relations)
        naming = _naming(rng, reference, [a, b], shape_only=False)
        first = program(self.name, **_slot("subject", a, naming[a]), relation=relation, wording="adjacent",
                        **_slot("anchor", b, naming[b]))
        second = program(self.name, **_slot("subject", b, naming[b]), relation=INVERSE[relation], wording="adjacent",
                         **_slot("anchor", a, naming[a]))
        return first, second

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        subject, anchor = named(reference, prog, "subject"), named(reference, prog, "anchor")
        return [Edit("move", subject.identity, neighbour(anchor.cell, RELATIONS[prog["relation"]]))]

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        """Another side of the anchor, beside another object, or another object moved beside it."""
        subject, anchor = named(reference, prog, "subject"), named(reference, prog, "anchor")
        lists = [[Edit("move", subject.identity, neighbour(anchor.cell, d))] for r, d in RELATIONS.items()
                 if r != prog["relation"]]
        lists += [[Edit("move", subject.identity, neighbour(other.cell, d))]
                  for other in _others(reference, subject, anchor) for d in RELATIONS.values()]
        lists += [[Edit("move", other.identity, neighbour(anchor.cell, d))]
                  for other in _others(reference, subject, anchor) for d in RELATIONS.values()]
        return _applicable(reference, [e for e in lists if e[0].new is not None])

    def facts(self, prog: Program) -> list[Fact]:
        return [(("beside", key(prog, "subject"), key(prog, "anchor"), prog["relation"]), 1.0)]


class SwapPair(PairFamily):
    """"swap A and B" / "swap C and D" (cells, the pairs equally far apart), or their colours
    (objects named by shape alone, two colours changed in each)."""

    name = "swap"

    def __init__(self, attribute: str):
        self.attribute = attribute
        self.variant = f"swap/{attribute}"

    def draw_pair(self, rng: np.random.Generator, reference: Scene) -> tuple[Program, Program]:
        if len(reference) < 4:
            raise EditNotApplicable("two pairs need four objects")
        order = [reference[int(i)] for i in rng.permutation(len(reference))]
        first = (order[0], order[1])
        second = next(((c, d) for c, d in zip(order[2::2], order[3::2], strict=False) if self._alike(first, (c, d))),
                      None)
        if second is None:
            raise EditNotApplicable("no second pair like the first")
        naming = _naming(rng, reference, [*first, *second], shape_only=self.attribute == "colour")
        return tuple(program(self.name, **_slot("subject", a, naming[a]), **_slot("other", b, naming[b]),
                             attribute=self.attribute) for a, b in (first, second))  # type: ignore[return-value]

    def _alike(self, first: tuple[SceneObject, SceneObject], second: tuple[SceneObject, SceneObject]) -> bool:
        """Two pairs an additive reference term cannot tell apart: as far apart (cells) or both
        of two different colours (colours)."""
        if self.attribute == "colour":
            return first[0].colour != first[1].colour and second[0].colour != second[1].colour
        (a, b), (c, d) = first, second
        distance = (a.cell[0] - b.cell[0]) ** 2 + (a.cell[1] - b.cell[1]) ** 2
        return distance == (c.cell[0] - d.cell[0]) ** 2 + (c.cell[1] - d.cell[1]) ** 2

    def _swap(self, a: SceneObject, b: SceneObject, attribute: str) -> list[Edit]:
        if attribute == "position":
            return [Edit("swap", a.identity, b.identity)]
        return [Edit("recolour", a.identity, b.colour), Edit("recolour", b.identity, a.colour)]

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return self._swap(named(reference, prog, "subject"), named(reference, prog, "other"), prog["attribute"])

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        """A third object swapped, the other attribute swapped, or the swap half done."""
        a, b = named(reference, prog, "subject"), named(reference, prog, "other")
        lists = [self._swap(x, y, prog["attribute"]) for x in reference for y in reference
                 if x < y and {x, y} != {a, b}]
        lists.append(self._swap(a, b, "colour" if prog["attribute"] == "position" else "position"))
        if prog["attribute"] == "position":
            lists += [[Edit("move", a.identity, cell)] for cell in _free_cells(reference)]
            lists += [[Edit("move", b.identity, cell)] for cell in _free_cells(reference)]
        else:
            lists += [[Edit("recolour", a.identity, b.colour)], [Edit("recolour", b.identity, a.colour)]]
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        return [((key(prog, "subject")), 1.0), ((key(prog, "other")), 1.0)]


class CopyPair(PairFamily):
    """"make A the same size as B" (A takes B's size) and "make B the same size as A"; colours
    likewise, named by shape alone."""

    name = "copy_attribute"

    def __init__(self, attribute: str):
        self.attribute = attribute
        self.variant = f"copy_attribute/{attribute}"

    def draw_pair(self, rng: np.random.Generator, reference: Scene) -> tuple[Program, Program]:
        a, b = (_pick(rng, list(reference)) for _ in range(2))
        if a == b or getattr(a, self.attribute) == getattr(b, self.attribute):
            raise EditNotApplicable("nothing to copy")
        naming = _naming(rng, reference, [a, b], shape_only=self.attribute == "colour")
        return tuple(program(self.name, **_slot("subject", x, naming[x]), attribute=self.attribute,
                             **_slot("anchor", y, naming[y])) for x, y in ((a, b), (b, a)))  # type: ignore[return-value]

    @staticmethod
    def _copy(subject: SceneObject, source: SceneObject, attribute: str) -> list[Edit]:
        return [Edit("resize" if attribute == "size" else "recolour", subject.identity, getattr(source, attribute))]

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return self._copy(named(reference, prog, "subject"), named(reference, prog, "anchor"), prog["attribute"])

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        """The other attribute copied, another source or subject, a misjudged value."""
        subject, source = named(reference, prog, "subject"), named(reference, prog, "anchor")
        other_attribute = "colour" if prog["attribute"] == "size" else "size"
        lists = [self._copy(subject, source, other_attribute)]
        lists += [self._copy(subject, obj, prog["attribute"]) for obj in _others(reference, subject, source)]
        lists += [self._copy(obj, source, prog["attribute"]) for obj in _others(reference, subject, source)]
        values = COLOURS if prog["attribute"] == "colour" else SIZES
        kind = "recolour" if prog["attribute"] == "colour" else "resize"
        lists += [[Edit(kind, subject.identity, v)] for v in values
                  if v not in (getattr(subject, prog["attribute"]), getattr(source, prog["attribute"]))]
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        return [(("same", prog["attribute"], key(prog, "subject"), key(prog, "anchor")), 1.0)]


class ColourRulePair(PairFamily):
    """"make every shape the colour of the A" / "... of the C": every colour of the reference
    distinct, so both recolour all shapes but their anchor."""

    name, variant = "rule", "rule/colour_all"

    def draw_pair(self, rng: np.random.Generator, reference: Scene) -> tuple[Program, Program]:
        if len(reference) < 3 or len({o.colour for o in reference}) != len(reference):
            raise EditNotApplicable("the rule needs three shapes of distinct colours")
        a, c = (_pick(rng, list(reference)) for _ in range(2))
        if a == c:
            raise EditNotApplicable("one anchor")
        naming = _naming(rng, reference, [a, c], shape_only=True)
        return tuple(program(self.name, rule="colour_all", **_slot("anchor", x, naming[x]))
                     for x in (a, c))  # type: ignore[return-value]

    @staticmethod
    def _apply(reference: Scene, anchor: SceneObject) -> list[Edit]:
        return [Edit("recolour", o.identity, anchor.colour) for o in reference if o.colour != anchor.colour]

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return self._apply(reference, named(reference, prog, "anchor"))

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        """One shape left out, or a colour no shape has."""
        anchor = named(reference, prog, "anchor")
        edits = self._apply(reference, anchor)
        lists = [edits[:i] + edits[i + 1:] for i in range(len(edits))]
        lists += [[Edit("recolour", o.identity, colour) for o in reference]
                  for colour in COLOURS if colour not in {o.colour for o in reference}]
        return _applicable(reference, [e for e in lists if e])

    def facts(self, prog: Program) -> list[Fact]:
        return [(("one_colour",), 1.0), (key(prog, "anchor"), 1.0)]


def _free_cells(scene: Scene) -> list[tuple[int, int]]:
    from harness.data.synthetic.scene import CELLS

    return [cell for cell in CELLS if _free(scene, cell)]


PAIR_FAMILIES: tuple[PairFamily, ...] = (MoveBesidePair(), SwapPair("position"), SwapPair("colour"),
                                         CopyPair("size"), CopyPair("colour"), ColourRulePair())


def pair_family(prog: Program) -> PairFamily | None:
    """The pair family of a version 3 program (None for the families whose queries come alone)."""
    variant = {"swap": f"swap/{prog.get('attribute')}", "copy_attribute": f"copy_attribute/{prog.get('attribute')}",
               "rule": f"rule/{prog.get('rule')}", "move_beside": "move_beside"}.get(prog.family)
    return next((f for f in PAIR_FAMILIES if f.variant == variant), None)


def twin_profile(reference: Scene, image: Scene) -> tuple[int, int, int, int]:
    """What an additive reference term can see of an image: objects kept (by identity), exact
    objects kept, occupied cells kept, squared displacement of the objects both hold."""
    mine = {o.identity: o for o in reference}
    kept = [(mine[o.identity], o) for o in image if o.identity in mine]
    displacement = sum((a.cell[0] - b.cell[0]) ** 2 + (a.cell[1] - b.cell[1]) ** 2 for a, b in kept)
    cells = len({o.cell for o in reference} & {o.cell for o in image})
    return len(kept), len(set(reference) & set(image)), cells, displacement


def holds(fact: tuple, scene: Scene) -> bool:
    """Whether a caption fact of this module holds in one image."""
    from harness.data.synthetic.adversary import statements

    return fact in statements(scene)


def is_twin(prog: Program, family: PairFamily, reference: Scene, target: Scene, twin: Scene) -> bool:
    """The twin conditions: every literal fact of the caption holds in both images, and the two
    keep the same reference-side profile (``twin_profile``) and object count."""
    facts = [fact for fact, weight in family.facts(prog) if weight > 0]
    if not all(holds(fact, target) and holds(fact, twin) for fact in facts):
        return False
    return twin_profile(reference, target) == twin_profile(reference, twin) and len(target) == len(twin)


def draw_twins(rng: np.random.Generator, family: PairFamily, reference: Scene
               ) -> tuple[tuple[Program, Program], tuple[list[Edit], list[Edit]], tuple[Scene, Scene]]:
    """A mirror pair on ``reference``: both programs, their edits and targets (each the other's
    twin); EditNotApplicable when the draw fails the twin conditions."""
    programs = family.draw_pair(rng, reference)
    edits = tuple(family.resolve(p, reference) for p in programs)
    targets = tuple(apply_edits(reference, e) for e in edits)
    if targets[0] == targets[1]:
        raise EditNotApplicable("the two targets coincide")
    for prog, (target, twin) in zip(programs, (targets, targets[::-1]), strict=True):
        if not is_twin(prog, family, reference, target, twin):
            raise EditNotApplicable("not a twin")
    return programs, edits, targets  # type: ignore[return-value]
