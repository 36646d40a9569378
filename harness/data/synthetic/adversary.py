"""The strongest additive scorer the harness knows how to write: an adversary for the embedded
benchmark's joint-reading certificate.

An additive scorer never reads caption and reference together: score(x) = a(c, x) + b(R, x).
If one solves a query, the query does not need a joint reading, whatever its certificate says.
This one has perfect perception (it reads scene graphs) and:

- a(c, x): what the caption literally says of the wanted image, read from the query's program
  (every caption parses back to it): the objects it names; the post-conditions it states,
  relational ones included ("the shape left of the circle is now black", "that cell is now
  empty", "the circle is directly left of the star", "every shape one colour"), the swapped
  identities of a colour swap between objects named with their colours, an absent anchor;
  version 2's facts; and, learned per family and wording, where each named object tends to be
  (a prior on its row and column: "one cell left" never leaves it in the right column);
- b(R, x): what x keeps of the reference: identities, exact objects, the four one-attribute
  projections, occupied cells, the squared displacement of the objects both hold, and the
  object count (of x, and against R's);
- weights fitted per statement template and channel by softmax regression over each query's
  image group, cross-fitted: a query is scored with weights fitted on the other half of the
  split (halves by reference image, so queries sharing a reference share a half).

Scored over the whole split gallery (the reference left out), ties broken at random.

    result = adversary_r1(split_data)   # per query expected R@1 (0-1)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from harness.data.synthetic.programs import Program
from harness.data.synthetic.scene import DIRECTIONS, Scene, SceneObject, neighbour

#: grid direction of each spatial relation word (as version 2's RELATIONS)
RELATIONS = {"left of": "left", "right of": "right", "above": "up", "below": "down"}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
#: L2 penalty on the fitted weights (per query, on the mean softmax loss)
PENALTY = 1e-3
Statement = tuple[Any, ...]


# ----------------------------------------------------------------- what an image shows


def _keys(obj: SceneObject) -> tuple[Statement, ...]:
    """The ways a caption can name an object: identity, shape, colour, size."""
    return (("id", obj.colour, obj.shape), ("shape", obj.shape), ("colour", obj.colour), ("size", obj.size))


def statements(scene: Scene) -> set[Statement]:
    """Every statement about one image that a caption can make: which objects it holds, where,
    beside what, sharing what, which sides are free; the object count."""
    found: set[Statement] = {("count", len(scene))}
    cells = {obj.cell for obj in scene}
    for obj in scene:
        c, s = obj.colour, obj.shape
        found |= {*_keys(obj), ("obj", obj.cell, s, c, obj.size), ("idcell", c, s, obj.cell),
                  ("idsize", c, s, obj.size)}
        for key in _keys(obj):
            found |= {("row", key, obj.cell[0]), ("col", key, obj.cell[1])}
            for direction in DIRECTIONS:
                cell = neighbour(obj.cell, direction)
                if cell is None:
                    found.add(("edge", key, direction))
                elif cell not in cells:
                    found.add(("free_side", key, direction))
    for a, b in itertools.permutations(scene, 2):
        pairs = list(itertools.product(_keys(a), _keys(b)))
        for relation, direction in RELATIONS.items():
            if a.cell == neighbour(b.cell, direction):
                found |= {("beside", ka, kb, relation) for ka, kb in pairs}
        for attribute in ("size", "colour"):
            if getattr(a, attribute) == getattr(b, attribute):
                found |= {("same", attribute, ka, kb) for ka, kb in pairs}
    if len(scene) > 1 and len({obj.colour for obj in scene}) == 1:
        found.add(("one_colour",))
    return found


# ----------------------------------------------------------------- what a caption says


def _named(prog: Program, role: str) -> Statement | None:
    """The key a program names ``role`` by: ("id", colour, shape) or ("shape", shape)."""
    identity, shape = prog.get(role), prog.get(f"{role}_shape")
    if identity is not None:
        return ("id", *identity)
    return ("shape", shape) if shape is not None else None


def _positions(key: Statement, template: str) -> list[tuple[str, Statement, float]]:
    """A learned prior on where a named object is: one template per row and per column."""
    return ([(f"{template}:row{r}", ("row", key, r), 1.0) for r in range(3)]
            + [(f"{template}:col{c}", ("col", key, c), 1.0) for c in range(3)])


def caption_statements(prog: Program) -> list[tuple[str, Statement, float]]:
    """(template, statement about the wanted image, value) for every literal reading of the
    program; a template's weight is fitted, the value signs it (-1: should be absent)."""
    family = prog.family
    out: list[tuple[str, Statement, float]] = []
    if family == "compound":
        for step in prog["steps"]:
            out += [(f"step:{t}", s, v) for t, s, v in caption_statements(step)]
        return out
    for fact, weight in _version2_facts(prog):
        out.append((f"v2:{family}", fact, weight))
    roles = {role: key for role in ("subject", "other", "anchor") if (key := _named(prog, role)) is not None}
    word = _wording(prog)
    for role, key in roles.items():
        out.append((f"mention:{role}", key, 1.0))
        out += _positions(key, f"pos:{family}:{word}:{role}")
    out += _post_conditions(prog, roles)
    return out


def _wording(prog: Program) -> str:
    """The words of a program that say where or how: direction and distance, relation, variant."""
    parts = [str(prog.get(name)) for name in ("direction", "distance", "relation", "attribute", "rule", "action")
             if prog.get(name) is not None]
    return "/".join(parts) or "-"


def _post_conditions(prog: Program, roles: dict[str, Statement]) -> list[tuple[str, Statement, float]]:
    """What must hold in the wanted image, read literally (see the module docstring)."""
    family, subject, anchor = prog.family, roles.get("subject"), roles.get("anchor")
    out: list[tuple[str, Statement, float]] = []
    if family == "relative_move" and subject is not None:
        out.append(("vacated", ("free_side", subject, OPPOSITE[prog["direction"]]), 1.0))
    if family == "move_beside" and subject is not None and anchor is not None:
        out.append(("relation", ("beside", subject, anchor, prog["relation"]), 1.0))
    if family == "referent_edit" and anchor is not None:
        direction = RELATIONS[prog["relation"]]
        value_key = {"recolour": "colour", "resize": "size", "replace": "shape"}.get(prog["action"])
        if prog["action"] == "remove":
            out.append(("vacated", ("free_side", anchor, direction), 1.0))
        elif value_key is not None:
            out.append(("relation", ("beside", (value_key, prog["value"]), anchor, prog["relation"]), 1.0))
    if family == "swap" and prog.get("attribute") == "colour" and prog.get("subject") and prog.get("other"):
        (c1, s1), (c2, s2) = prog["subject"], prog["other"]
        out += [("post_id", ("id", c2, s1), 1.0), ("post_id", ("id", c1, s2), 1.0)]
    if family == "copy_attribute" and subject is not None and anchor is not None:
        out.append(("same", ("same", prog["attribute"], subject, anchor), 1.0))
    if family == "rule":
        if prog.get("rule") == "colour_all":
            out.append(("rule", ("one_colour",), 1.0))
        elif anchor is not None:
            out.append(("absent", anchor, -1.0))
    return out


def _version2_facts(prog: Program) -> list[tuple[Statement, float]]:
    """Version 2's caption facts of the program (``Family.facts``), where its family has them."""
    from harness.data.synthetic.families import FAMILIES

    family = FAMILIES.get(prog.family)
    try:
        return list(family.facts(prog)) if family is not None else []
    except (KeyError, TypeError):  # a later version's program that version 2's family cannot read
        return []


# ----------------------------------------------------------------- what the reference keeps


def _projections(obj: SceneObject) -> list[Statement]:
    values = (obj.cell, obj.shape, obj.colour, obj.size)
    return [("proj", drop, *values[:drop], *values[drop + 1:]) for drop in range(4)]


REFERENCE_CHANNELS = ("kept_id", "kept_obj", "kept_proj0", "kept_proj1", "kept_proj2", "kept_proj3", "kept_cell",
                      "kept_shape", "kept_colour", "sq_displacement", *(f"count{n}" for n in range(1, 8)),
                      *(f"count_change{d}" for d in range(-3, 4)))


class _Incidence:
    """Sparse per-image vectors whose dot products with a reference's give the reference channels."""

    def __init__(self, gallery: Sequence[Scene]):
        self.spaces: dict[str, dict[Any, int]] = {}
        self.gallery = {name: self._matrix(name, gallery) for name in
                        ("id", "obj", "proj0", "proj1", "proj2", "proj3", "cell", "shape", "colour", "idsq", "idrow",
                         "idcol")}
        self.sizes = np.array([len(scene) for scene in gallery])

    @staticmethod
    def _entries(name: str, scene: Scene) -> list[tuple[Any, float]]:
        if name.startswith("proj"):
            return [(_projections(o)[int(name[-1])], 1.0) for o in scene]
        values = {"id": lambda o: (o.identity, 1.0), "obj": lambda o: (o, 1.0), "cell": lambda o: (o.cell, 1.0),
                  "idsq": lambda o: (o.identity, float(o.cell[0] ** 2 + o.cell[1] ** 2)),
                  "idrow": lambda o: (o.identity, float(o.cell[0])), "idcol": lambda o: (o.identity, float(o.cell[1]))}
        if name in ("shape", "colour"):  # multiset overlap: counted per value
            counts: dict[Any, float] = {}
            for o in scene:
                counts[getattr(o, name)] = counts.get(getattr(o, name), 0.0) + 1.0
            return list(counts.items())
        return [values[name](o) for o in scene]

    def _space(self, name: str) -> dict[Any, int]:
        return self.spaces.setdefault({"idsq": "id", "idrow": "id", "idcol": "id"}.get(name, name), {})

    def _matrix(self, name: str, scenes: Iterable[Scene]) -> sparse.csr_matrix:
        space = self._space(name)
        data, indices, pointers = [], [], [0]
        for scene in scenes:
            for key, value in self._entries(name, scene):
                indices.append(space.setdefault(key, len(space)))
                data.append(value)
            pointers.append(len(indices))
        return sparse.csr_matrix((np.asarray(data, float), indices, pointers))

    def channels(self, reference: Scene) -> np.ndarray:
        """[len(REFERENCE_CHANNELS), images] for one reference over the whole gallery."""
        def dot(name: str, reference_name: str | None = None) -> np.ndarray:
            matrix = self.gallery[name]
            mine = self._matrix(reference_name or name, [reference])
            width = max(matrix.shape[1], mine.shape[1])
            matrix.resize((matrix.shape[0], width))
            mine.resize((1, width))
            return np.asarray((matrix @ mine.T).todense()).ravel()

        kept_id = dot("id")
        displacement = (dot("id", "idsq") + dot("idsq", "id") - 2 * (dot("idrow") + dot("idcol")))
        rows = [kept_id, dot("obj"), dot("proj0"), dot("proj1"), dot("proj2"), dot("proj3"), dot("cell"), dot("shape"),
                dot("colour"), displacement]
        rows += [(self.sizes == n).astype(float) for n in range(1, 8)]
        rows += [(self.sizes - len(reference) == d).astype(float) for d in range(-3, 4)]
        return np.vstack(rows)


# ----------------------------------------------------------------- fitting and scoring


@dataclass
class SplitData:
    """What the adversary and the structure checks read of one written split."""

    gallery: list[Scene]
    programs: list[Program]
    references: list[int]  # gallery columns
    targets: list[int]
    groups: list[list[int]]  # gallery columns of each query's recorded group (reference included)


def _design(data: SplitData) -> tuple[list[np.ndarray], list[str]]:
    """Per query, the features [group members, templates + reference channels] of its group
    (the reference left out, the target first), and the feature names."""
    image_statements = {column: statements(data.gallery[column]) for group in data.groups for column in group}
    incidence = _Incidence(data.gallery)
    readings = [caption_statements(prog) for prog in data.programs]
    templates = sorted({t for reading in readings for t, _, _ in reading})
    index = {t: i for i, t in enumerate(templates)}
    names = templates + list(REFERENCE_CHANNELS)
    designs = []
    for reading, reference, target, group in zip(readings, data.references, data.targets, data.groups, strict=True):
        members = [target] + [m for m in group if m not in (reference, target)]
        caption = np.zeros((len(members), len(templates)))
        for row, member in enumerate(members):
            for template, statement, value in reading:
                if statement in image_statements[member]:
                    caption[row, index[template]] += value
        reference_channels = incidence.channels(data.gallery[reference])[:, members].T
        designs.append(np.hstack([caption, reference_channels]))
    return designs, names


def _fit(designs: list[np.ndarray], width: int) -> np.ndarray:
    """Weights minimising the mean softmax loss of the target (row 0) over each group, plus L2."""
    scale = np.maximum(np.abs(np.vstack(designs)).max(axis=0), 1.0)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = 0.0, np.zeros_like(w)
        for x in designs:
            s = (x / scale) @ w
            s -= s.max()
            p = np.exp(s) / np.exp(s).sum()
            total -= np.log(p[0] + 1e-300)
            grad -= (x[0] - p @ x) / scale
        n = len(designs)
        return total / n + PENALTY * float(w @ w), grad / n + 2 * PENALTY * w

    found = minimize(loss, np.zeros(width), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return found.x / scale


def _query_vector(reading: list[tuple[str, Statement, float]], weights: dict[str, float],
                  space: dict[Statement, int]) -> sparse.csr_matrix:
    values: dict[int, float] = {}
    for template, statement, value in reading:
        if statement in space and template in weights:
            values[space[statement]] = values.get(space[statement], 0.0) + weights[template] * value
    return sparse.csr_matrix((list(values.values()), (np.zeros(len(values), int), list(values))), shape=(1, len(space)))


def adversary_r1(data: SplitData, folds: int = 2, seed: int = 0) -> np.ndarray:
    """Per query, the adversary's expected R@1 (0-1) over the whole gallery, each query scored
    with weights fitted on the other folds (folds by reference image)."""
    designs, names = _design(data)
    readings = [caption_statements(prog) for prog in data.programs]
    space: dict[Statement, int] = {}
    rows = [[space.setdefault(s, len(space)) for s in statements(scene)] for scene in data.gallery]
    pointers = np.cumsum([0, *(len(r) for r in rows)])
    gallery = sparse.csr_matrix((np.ones(int(pointers[-1])), np.concatenate([np.asarray(r, int) for r in rows]),
                                 pointers), shape=(len(rows), len(space)))
    incidence = _Incidence(data.gallery)
    rng = np.random.default_rng(seed)
    fold_of_reference = {r: int(rng.integers(folds)) for r in sorted(set(data.references))}
    fold = np.array([fold_of_reference[r] for r in data.references])
    templates = len(names) - len(REFERENCE_CHANNELS)
    hits = np.zeros(len(designs))
    for held in range(folds):
        weights = _fit([d for d, f in zip(designs, fold, strict=True) if f != held], len(names))
        caption_weights = dict(zip(names[:templates], weights[:templates], strict=True))
        for q in np.flatnonzero(fold == held):
            caption = np.asarray((gallery @ _query_vector(readings[q], caption_weights, space).T).todense()).ravel()
            reference = weights[templates:] @ incidence.channels(data.gallery[data.references[q]])
            scores = caption + reference
            scores[data.references[q]] = -np.inf
            best = scores.max()
            hits[q] = 1.0 / np.sum(np.isclose(scores, best)) if np.isclose(scores[data.targets[q]], best) else 0.0
    return hits

