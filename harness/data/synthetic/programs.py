"""Programs and the classic edit families of the embedded benchmark, version 2: what a caption
asks for, how the reference turns it into concrete edits, and how it is misread.

A query's ``Program`` is what its caption says, before the reference is looked at ("move the
orange triangle one cell left"); ``resolve`` reads the reference and gives the concrete
edits ("move the orange triangle to the middle centre"). Families whose target depends on
reference content the caption does not spell out (a relative move, a swap, a referent named
by its position) need a joint reading of caption and reference; the classic families of
version 1 (add, remove, recolour, resize, move, replace and two-step compounds) do not.

Per family:

- ``draw(rng, reference)``: a random applicable program (EditNotApplicable when none);
- ``resolve(program, reference)``: the concrete edits (applied in order by ``apply_edits``);
- ``misreadings(program, reference)``: edit lists that a plausible misreading of the caption
  gives (wrong direction, the other object, the reverse copy, ...): the intent distractors;
- ``facts(program)``: what the caption states about the wanted image that can be checked on
  that image alone (see ``harness.data.synthetic.additive``).

    >>> family = FAMILIES["relative_move"]          # harness.data.synthetic.families
    >>> prog = family.draw(rng, reference)
    >>> target = apply_edits(reference, family.resolve(prog, reference))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.data.synthetic.scene import (
    Edit,
    EditNotApplicable,
    Scene,
    SceneObject,
    apply_edits,
    edited_identity,
    find,
    object_from_json,
    random_edit_of_type,
    wrong_argument_edits,
)

CLASSIC: tuple[str, ...] = ("add", "remove", "recolour", "resize", "move", "replace")
#: Slots holding a (colour, shape), a cell, an added object, or the steps of a compound.
IDENTITY_SLOTS = ("subject", "anchor", "other", "source")
Fact = tuple[tuple[Any, ...], float]
"""A statement about the wanted image (a feature key of ``additive``) and its weight."""


@dataclass(frozen=True)
class Program:
    """What a caption asks for: a family and its slots (JSON-able through ``to_json``)."""

    family: str
    slots: tuple[tuple[str, Any], ...]

    def __getitem__(self, name: str) -> Any:
        return dict(self.slots)[name]

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.slots).get(name, default)

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, **{name: _slot_json(value) for name, value in self.slots}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Program:
        return cls(str(data["family"]), tuple((k, _slot_value(k, v)) for k, v in data.items() if k != "family"))


def program(family: str, **slots: Any) -> Program:
    return Program(family, tuple(slots.items()))


def _slot_json(value: Any) -> Any:
    if isinstance(value, SceneObject):
        return value.to_json()
    if isinstance(value, Program):
        return value.to_json()
    if isinstance(value, tuple):
        return [_slot_json(v) for v in value]
    return value


def _slot_value(name: str, value: Any) -> Any:
    if name == "steps":
        return tuple(Program.from_json(v) for v in value)
    if name == "object":
        return object_from_json(value)
    if name in IDENTITY_SLOTS or name == "cell":
        return tuple(int(v) if name == "cell" else str(v) for v in value)
    return value


def _pick(rng: np.random.Generator, values: list[Any]) -> Any:
    if not values:
        raise EditNotApplicable("nothing to choose from")
    return values[int(rng.integers(len(values)))]


def _applicable(reference: Scene, edit_lists: list[list[Edit]]) -> list[list[Edit]]:
    """The edit lists that apply to ``reference`` (invalid or no-op ones dropped)."""
    kept = []
    for edits in edit_lists:
        try:
            apply_edits(reference, edits)
        except EditNotApplicable:
            continue
        kept.append(edits)
    return kept


def _unique_shape(scene: Scene, shape: str) -> bool:
    return sum(obj.shape == shape for obj in scene) == 1


def _referent_slot(scene: Scene, obj: SceneObject, rng: np.random.Generator) -> dict[str, Any]:
    """Name ``obj`` by its shape alone when that is unambiguous (half the time), else fully."""
    if _unique_shape(scene, obj.shape) and rng.random() < 0.5:
        return {"anchor_shape": obj.shape}
    return {"anchor": obj.identity}


def _resolve_referent(scene: Scene, prog: Program, prefix: str = "anchor") -> SceneObject:
    """The object a program names by ``<prefix>`` (colour and shape) or ``<prefix>_shape``."""
    shape = prog.get(f"{prefix}_shape")
    if shape is None:
        return find(scene, prog[prefix])
    matches = [obj for obj in scene if obj.shape == shape]
    if len(matches) != 1:
        raise EditNotApplicable(f"'the {shape}' names {len(matches)} objects")
    return matches[0]


def _referent_fact(prog: Program, prefix: str = "anchor") -> tuple[Any, ...]:
    shape = prog.get(f"{prefix}_shape")
    return ("shape", shape) if shape is not None else ("id", *prog[prefix])


class Family:
    """One edit family (see the module docstring for the four methods)."""

    name = ""

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        raise NotImplementedError

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        raise NotImplementedError

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        raise NotImplementedError

    def facts(self, prog: Program) -> list[Fact]:
        raise NotImplementedError


# --- the classic families (version 1's edit types) ---------------------------------------

def classic_program(edit: Edit) -> Program:
    """The program of one classic edit (its caption spells out every value)."""
    if edit.type == "add":
        return program("add", object=edit.new)
    value_slot = {"recolour": "colour", "resize": "size", "move": "cell", "replace": "shape"}.get(edit.type)
    slots: dict[str, Any] = {"subject": edit.subject}
    if value_slot is not None:
        slots[value_slot] = edit.new
    return program(edit.type, **slots)


def classic_edit(prog: Program) -> Edit:
    """Inverse of ``classic_program``."""
    if prog.family == "add":
        return Edit("add", None, prog["object"])
    value = next((v for k, v in prog.slots if k != "subject"), None)
    return Edit(prog.family, prog["subject"], value)


def classic_facts(edit: Edit) -> list[Fact]:
    """What a classic edit's caption says of the wanted image."""
    if edit.type == "add":
        assert isinstance(edit.new, SceneObject)
        obj = edit.new
        return [(("obj", obj.cell, obj.shape, obj.colour, obj.size), 1.0)]
    colour, shape = edit.subject or ("", "")
    if edit.type == "remove":
        return [(("id", colour, shape), -1.0)]
    if edit.type == "recolour":
        return [(("id", colour, shape), -1.0), (("id", str(edit.new), shape), 1.0)]
    if edit.type == "replace":
        return [(("id", colour, shape), -1.0), (("id", colour, str(edit.new)), 1.0)]
    if edit.type == "resize":
        return [(("idsize", colour, shape, str(edit.new)), 1.0)]
    return [(("idcell", colour, shape, edit.new), 1.0)]  # move


class Classic(Family):
    """One of version 1's edit types, as a family."""

    def __init__(self, edit_type: str) -> None:
        self.name = edit_type

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        return classic_program(random_edit_of_type(rng, reference, self.name))

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return [classic_edit(prog)]

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        """The edit with a wrong argument, and the same edit on a wrong object."""
        edit = classic_edit(prog)
        lists = [[v] for v in wrong_argument_edits(reference, edit)]
        lists += [[Edit(edit.type, obj.identity, edit.new)] for obj in reference
                  if edit.subject is not None and obj.identity != edit.subject]
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        return classic_facts(classic_edit(prog))


def net_edit_count(reference: Scene, target: Scene) -> int:
    """Objects changed between two scenes: max(|removed or altered|, |added or altered|)."""
    return max(len(set(reference) - set(target)), len(set(target) - set(reference)))


class Compound(Family):
    """Two classic edits of different types on different objects; rejected when they net to
    fewer than two changed objects (a degenerate compound)."""

    name = "compound"

    def draw(self, rng: np.random.Generator, reference: Scene) -> Program:
        first = random_edit_of_type(rng, reference, _pick(rng, list(CLASSIC)))
        middle = apply_edits(reference, [first])
        types = [t for t in CLASSIC if t != first.type and not (t == "add" and first.type == "add")]
        second = random_edit_of_type(rng, middle, _pick(rng, types))
        if second.subject is not None and second.subject == edited_identity(first):
            raise EditNotApplicable("both steps act on one object")
        target = apply_edits(reference, [first, second])
        if net_edit_count(reference, target) < 2:
            raise EditNotApplicable("degenerate compound")
        return program("compound", steps=(classic_program(first), classic_program(second)))

    def resolve(self, prog: Program, reference: Scene) -> list[Edit]:
        return [classic_edit(step) for step in prog["steps"]]

    def misreadings(self, prog: Program, reference: Scene) -> list[list[Edit]]:
        first, second = self.resolve(prog, reference)
        middle = apply_edits(reference, [first])
        lists = [[first], [second]]  # a step left out
        lists += [[first, v] for v in wrong_argument_edits(middle, second)]
        lists += [[v, second] for v in wrong_argument_edits(reference, first)]
        return _applicable(reference, lists)

    def facts(self, prog: Program) -> list[Fact]:
        return [fact for step in prog["steps"] for fact in classic_facts(classic_edit(step))]
