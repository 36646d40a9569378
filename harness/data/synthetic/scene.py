"""Scene graphs and edits of the embedded benchmark.

A scene is a set of objects on a 3x3 grid; each object has a shape, a colour, a size and a
cell. Within a scene (colour, shape) is unique and each cell holds at most one object, so
"the red circle" always names exactly one object. An edit (add, remove, recolour, resize,
move, replace) turns one scene into another; a compound edit is two edits on different
objects. Everything here is pure data and deterministic given a ``numpy`` Generator.

    >>> rng = np.random.default_rng(0)
    >>> scene = random_scene(rng, num_objects=2)
    >>> edit = random_edit(rng, scene)
    >>> target = apply_edits(scene, [edit])
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "star")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange", "cyan", "black")
SIZES: tuple[str, ...] = ("small", "large")
GRID = 3
CELLS: tuple[tuple[int, int], ...] = tuple((row, col) for row in range(GRID) for col in range(GRID))
ROW_NAMES = ("top", "middle", "bottom")
COL_NAMES = ("left", "centre", "right")

EditType = Literal["add", "remove", "recolour", "resize", "move", "replace"]
EDIT_TYPES: tuple[str, ...] = ("add", "remove", "recolour", "resize", "move", "replace")
#: Edit-type labels of a query: the single edit types plus "compound" (two edits).
QUERY_EDIT_TYPES: tuple[str, ...] = (*EDIT_TYPES, "compound")


@dataclass(frozen=True, order=True)
class SceneObject:
    """One object of a scene."""

    cell: tuple[int, int]
    shape: str
    colour: str
    size: str

    @property
    def identity(self) -> tuple[str, str]:
        """(colour, shape): what a caption uses to name this object."""
        return (self.colour, self.shape)

    def to_json(self) -> dict[str, object]:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "cell": list(self.cell)}


Scene = tuple[SceneObject, ...]
"""A scene graph: its objects, sorted, so equal scenes are equal tuples."""


def make_scene(objects: list[SceneObject] | tuple[SceneObject, ...]) -> Scene:
    """Canonical form of a set of objects (sorted tuple)."""
    return tuple(sorted(objects))


def is_valid(scene: Scene) -> bool:
    """True when cells and (colour, shape) pairs are unique and the scene is not empty."""
    if not scene:
        return False
    cells = {obj.cell for obj in scene}
    identities = {obj.identity for obj in scene}
    return len(cells) == len(scene) == len(identities)


def scene_key(scene: Scene) -> str:
    """A stable string that identifies a scene graph (used for uniqueness checks)."""
    return ";".join(f"{o.cell[0]}{o.cell[1]}:{o.size}:{o.colour}:{o.shape}" for o in scene)


def describe(scene: Scene) -> str:
    """A plain scene description ("a small red circle in the top left, ...")."""
    parts = [f"a {o.size} {o.colour} {o.shape} in the {cell_name(o.cell)}" for o in scene]
    return ", ".join(parts)


def cell_name(cell: tuple[int, int]) -> str:
    """Human name of a grid cell ("top left", "middle", "bottom centre")."""
    row, col = cell
    if (row, col) == (1, 1):
        return "middle"
    return f"{ROW_NAMES[row]} {COL_NAMES[col]}"


@dataclass(frozen=True)
class Edit:
    """One edit. ``subject`` is the (colour, shape) it acts on; ``new`` the added object, the
    new attribute value (a colour, size, cell or shape) or, for a ``swap`` (generator version 2
    only), the (colour, shape) of the object it exchanges cells with."""

    type: str
    subject: tuple[str, str] | None = None
    new: SceneObject | str | tuple[int, int] | None = None

    def to_json(self) -> dict[str, object]:
        value: object = self.new
        if self.type == "swap":
            colour, shape = _identity(self.new)
            value = {"colour": colour, "shape": shape}
        elif isinstance(self.new, SceneObject):
            value = self.new.to_json()
        elif isinstance(self.new, tuple):
            value = list(self.new)
        subject = None if self.subject is None else {"colour": self.subject[0], "shape": self.subject[1]}
        return {"type": self.type, "subject": subject, "new": value}


class EditNotApplicable(ValueError):
    """The edit cannot be applied to this scene (missing subject, occupied cell, ...)."""


def _identity(value: object) -> tuple[str, str]:
    """A swap's ``new``: the other object's (colour, shape)."""
    assert isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value)
    return (str(value[0]), str(value[1]))


def _find(scene: Scene, subject: tuple[str, str] | None) -> SceneObject:
    for obj in scene:
        if obj.identity == subject:
            return obj
    raise EditNotApplicable(f"no {subject} in scene")


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The scene after ``edit``; raises EditNotApplicable when it would be invalid or a no-op."""
    objects = list(scene)
    if edit.type == "add":
        assert isinstance(edit.new, SceneObject)
        objects.append(edit.new)
    else:
        old = _find(scene, edit.subject)
        objects.remove(old)
        if edit.type == "recolour":
            new = replace(old, colour=str(edit.new))
        elif edit.type == "resize":
            new = replace(old, size=str(edit.new))
        elif edit.type == "move":
            assert isinstance(edit.new, tuple)
            new = replace(old, cell=edit.new)
        elif edit.type == "replace":
            new = replace(old, shape=str(edit.new))
        elif edit.type == "remove":
            new = None
        elif edit.type == "swap":  # the subject and the other object exchange cells
            other = _find(scene, _identity(edit.new))
            objects.remove(other)
            objects.append(replace(other, cell=old.cell))
            new = replace(old, cell=other.cell)
        else:
            raise ValueError(f"unknown edit type {edit.type!r}")
        if new is not None:
            if new == old:
                raise EditNotApplicable("edit changes nothing")
            objects.append(new)
    result = make_scene(objects)
    if not is_valid(result):
        raise EditNotApplicable("edit makes the scene invalid")
    return result


def apply_edits(scene: Scene, edits: list[Edit] | tuple[Edit, ...]) -> Scene:
    """Apply edits in order."""
    for edit in edits:
        scene = apply_edit(scene, edit)
    return scene


def edited_identity(edit: Edit) -> tuple[str, str]:
    """(colour, shape) of the object an edit leaves behind (for compound-edit bookkeeping)."""
    if edit.type == "add":
        assert isinstance(edit.new, SceneObject)
        return edit.new.identity
    assert edit.subject is not None
    if edit.type == "recolour":
        return (str(edit.new), edit.subject[1])
    if edit.type == "replace":
        return (edit.subject[0], str(edit.new))
    return edit.subject


#: Grid steps of the four directions (row, column).
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}


def neighbour(cell: tuple[int, int], direction: str, steps: int = 1) -> tuple[int, int] | None:
    """The cell ``steps`` cells from ``cell`` in ``direction``; None off the grid."""
    d_row, d_col = DIRECTIONS[direction]
    row, col = cell[0] + steps * d_row, cell[1] + steps * d_col
    return (row, col) if 0 <= row < GRID and 0 <= col < GRID else None


def find(scene: Scene, identity: tuple[str, str]) -> SceneObject:
    """The object of ``scene`` with this (colour, shape); EditNotApplicable when absent."""
    return _find(scene, identity)


def random_object(rng: np.random.Generator, cell: tuple[int, int]) -> SceneObject:
    return SceneObject(
        cell=cell,
        shape=SHAPES[rng.integers(len(SHAPES))],
        colour=COLOURS[rng.integers(len(COLOURS))],
        size=SIZES[rng.integers(len(SIZES))],
    )


def random_scene(rng: np.random.Generator, num_objects: int) -> Scene:
    """A valid random scene with ``num_objects`` objects in distinct cells."""
    while True:
        cells = rng.choice(len(CELLS), size=num_objects, replace=False)
        scene = make_scene([random_object(rng, CELLS[int(c)]) for c in cells])
        if is_valid(scene):
            return scene


def _empty_cells(scene: Scene) -> list[tuple[int, int]]:
    used = {obj.cell for obj in scene}
    return [cell for cell in CELLS if cell not in used]


def _pick(rng: np.random.Generator, values: list) -> object:
    return values[int(rng.integers(len(values)))]


def random_edit_of_type(rng: np.random.Generator, scene: Scene, edit_type: str) -> Edit:
    """A random applicable edit of the given type; raises EditNotApplicable if none exists."""
    if edit_type == "add":
        empty = _empty_cells(scene)
        if not empty:
            raise EditNotApplicable("no empty cell")
        taken = {obj.identity for obj in scene}
        for _ in range(50):
            obj = random_object(rng, _pick(rng, empty))  # type: ignore[arg-type]
            if obj.identity not in taken:
                return Edit("add", None, obj)
        raise EditNotApplicable("no free identity")
    if edit_type == "remove" and len(scene) < 2:
        raise EditNotApplicable("cannot remove the last object")
    subject: SceneObject = _pick(rng, list(scene))  # type: ignore[assignment]
    taken = {obj.identity for obj in scene}
    if edit_type == "remove":
        return Edit("remove", subject.identity)
    if edit_type == "recolour":
        options = [c for c in COLOURS if (c, subject.shape) not in taken]
        return Edit("recolour", subject.identity, _pick(rng, options)) if options else _no(edit_type)
    if edit_type == "resize":
        return Edit("resize", subject.identity, SIZES[1 - SIZES.index(subject.size)])
    if edit_type == "move":
        options = _empty_cells(scene)
        return Edit("move", subject.identity, _pick(rng, options)) if options else _no(edit_type)
    if edit_type == "replace":
        options = [s for s in SHAPES if (subject.colour, s) not in taken]
        return Edit("replace", subject.identity, _pick(rng, options)) if options else _no(edit_type)
    raise ValueError(f"unknown edit type {edit_type!r}")


def _no(edit_type: str) -> Edit:
    raise EditNotApplicable(f"no applicable {edit_type} edit")


def random_edit(rng: np.random.Generator, scene: Scene, exclude: tuple[str, str] | None = None) -> Edit:
    """A random applicable single edit whose subject is not ``exclude``."""
    for _ in range(100):
        edit_type = EDIT_TYPES[int(rng.integers(len(EDIT_TYPES)))]
        try:
            edit = random_edit_of_type(rng, scene, edit_type)
        except EditNotApplicable:
            continue
        if exclude is not None and edit.subject == exclude:
            continue
        return edit
    raise EditNotApplicable("no applicable edit found")


def wrong_argument_edits(scene: Scene, edit: Edit) -> list[Edit]:
    """Edits of ``scene`` that do what ``edit`` does but with another argument (or to the same
    object in another way). Each result is one edit away from both ``scene`` and
    ``apply_edit(scene, edit)``: the hardest distractors, which force reading the caption."""
    taken = {obj.identity for obj in scene}
    empty = _empty_cells(scene)
    variants: list[Edit] = []
    if edit.type == "add":
        assert isinstance(edit.new, SceneObject)
        new = edit.new
        variants += [Edit("add", None, replace(new, colour=c)) for c in COLOURS if c != new.colour]
        variants += [Edit("add", None, replace(new, shape=s)) for s in SHAPES if s != new.shape]
        variants += [Edit("add", None, replace(new, size=z)) for z in SIZES if z != new.size]
        variants += [Edit("add", None, replace(new, cell=c)) for c in empty if c != new.cell]
        variants = [v for v in variants if isinstance(v.new, SceneObject) and v.new.identity not in taken]
        return variants
    subject = _find(scene, edit.subject)
    same_object = [
        *(Edit("recolour", subject.identity, c) for c in COLOURS if c != subject.colour),
        *(Edit("resize", subject.identity, z) for z in SIZES if z != subject.size),
        *(Edit("move", subject.identity, c) for c in empty),
        *(Edit("replace", subject.identity, s) for s in SHAPES if s != subject.shape),
    ]
    if edit.type == "remove":
        return same_object
    variants = [v for v in same_object if v.type == edit.type and v.new != edit.new]
    if len(scene) > 1:
        variants.append(Edit("remove", subject.identity))
    return variants


def object_from_json(data: dict) -> SceneObject:
    return SceneObject(cell=(int(data["cell"][0]), int(data["cell"][1])), shape=str(data["shape"]),
                       colour=str(data["colour"]), size=str(data["size"]))


def scene_from_json(objects: list[dict]) -> Scene:
    """Inverse of ``[obj.to_json() for obj in scene]`` (the scene_graphs.json entries)."""
    return make_scene([object_from_json(o) for o in objects])


def edit_from_json(data: dict) -> Edit:
    """Inverse of ``Edit.to_json``."""
    subject = None if data["subject"] is None else (str(data["subject"]["colour"]), str(data["subject"]["shape"]))
    new = data["new"]
    if data["type"] == "swap":
        new = (str(new["colour"]), str(new["shape"]))
    elif isinstance(new, dict):
        new = object_from_json(new)
    elif isinstance(new, list):
        new = (int(new[0]), int(new[1]))
    return Edit(str(data["type"]), subject, new)
