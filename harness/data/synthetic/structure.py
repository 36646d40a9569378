"""Caption-free structure of the embedded benchmark's groups: does the shape of a group, or of
the gallery around a reference, point at the target without reading the caption?

An independent audit of version 2 found that it does: every retention distractor was one edit
from the target, so the target was the medoid of its group in every val group, and a score
that counts an image's one-edit neighbours in the gallery and subtracts its distance to the
reference ranked the target first for 58 % of val queries. Both scorers are here, so that
`harness data check` prints them for any written benchmark:

    distance = scene_distance(a, b)                  # fewest single edits from scene a to scene b
    neighbours = one_edit_neighbours(gallery)        # per gallery image, images one edit away
    medoid_r1(gallery, groups, references, targets)  # expected R@1 of the group medoid
    density_r1(gallery, neighbours, references, targets)   # expected R@1 of N1(x) - d(R, x)

An edit is one of the benchmark's single edits: add or remove an object, or change one
attribute (cell, shape, colour, size) of one. Ties are broken at random: R@1 is the expectation.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from harness.data.synthetic.scene import Scene, SceneObject

ATTRIBUTES = ("cell", "shape", "colour", "size")


def _cost(a: SceneObject, b: SceneObject) -> int:
    """Edits that turn object a into object b: one per differing attribute, at most 2 (remove + add)."""
    return min(2, (a.cell != b.cell) + (a.shape != b.shape) + (a.colour != b.colour) + (a.size != b.size))


def scene_distance(a: Scene, b: Scene) -> int:
    """The fewest single edits from ``a`` to ``b`` (a minimum-cost matching of their objects;
    an object left unmatched is one add or one remove). Symmetric, and remembered: generating
    the benchmark asks for each pair about three times, and spent half its time here."""
    return _distance(*((a, b) if hash(a) <= hash(b) else (b, a)))


@functools.lru_cache(maxsize=2**18)
def _distance(a: Scene, b: Scene) -> int:
    """``scene_distance``: pairing x with y costs ``_cost`` instead of the 2 of removing x and
    adding y, so the distance is every unshared object once, less the largest total saving of a
    matching (``_largest_saving``, exact; faster than a general assignment solver at a few objects)."""
    shared = set(a) & set(b)
    left, right = [o for o in a if o not in shared], [o for o in b if o not in shared]
    if not left or not right:
        return len(left) + len(right)
    savings = [[2 - _cost(x, y) for y in right] for x in left]
    return len(left) + len(right) - _largest_saving(savings)


def _largest_saving(savings: list[list[int]]) -> int:
    """The largest sum of ``savings[row][column]`` over rows matched to distinct columns (a row may
    stay unmatched): a dynamic programme over the set of columns taken, row by row."""
    best = {0: 0}  # columns taken (bit mask) -> the largest saving reaching it
    for row in savings:
        reached = dict(best)
        for taken, value in best.items():
            for column, saving in enumerate(row):
                if saving and not taken >> column & 1:
                    key = taken | 1 << column
                    if reached.get(key, -1) < value + saving:
                        reached[key] = value + saving
        best = reached
    return max(best.values())


def _changes(scene: Scene) -> list[tuple]:
    """Keys two scenes share exactly when one attribute of one object is all that differs: the
    scene with that attribute left open."""
    keys = []
    for index, obj in enumerate(scene):
        rest = scene[:index] + scene[index + 1:]
        for position, name in enumerate(ATTRIBUTES):
            values: list[object] = [obj.cell, obj.shape, obj.colour, obj.size]
            values[position] = None
            keys.append((name, rest, tuple(values)))
    return keys


def _smaller(scene: Scene) -> list[Scene]:
    """The scenes one remove away."""
    return [scene[:index] + scene[index + 1:] for index in range(len(scene))]


def one_edit_neighbours(gallery: Sequence[Scene]) -> np.ndarray:
    """Per gallery image, how many other gallery images are one edit from it: one attribute of
    one object changed, or one object added or removed."""
    changes = [_changes(scene) for scene in gallery]
    change_counts = Counter(key for keys in changes for key in keys)
    present = set(gallery)
    supersets = Counter(smaller for scene in gallery for smaller in _smaller(scene))
    totals = [sum(change_counts[key] - 1 for key in keys)  # scenes one attribute change away
              + sum(smaller in present for smaller in _smaller(scene))  # ... one remove away
              + supersets[scene]  # ... one add away
              for scene, keys in zip(gallery, changes, strict=True)]
    return np.asarray(totals)


def _expected_hit(scores: np.ndarray, target: int, excluded: int | None) -> float:
    """1/t when the target is among the t best of ``scores`` (``excluded`` never ranked), else 0."""
    scores = scores.astype(float).copy()
    if excluded is not None:
        scores[excluded] = -np.inf
    best = scores.max()
    return 1.0 / int((scores == best).sum()) if scores[target] == best else 0.0


def medoid_r1(gallery: Sequence[Scene], groups: Sequence[Sequence[int]], references: Sequence[int],
              targets: Sequence[int]) -> np.ndarray:
    """Per query, the expected R@1 of ranking its group's members (the reference left out) by
    their summed distance to the other members, smallest first: no caption, no reference."""
    hits = []
    for group, reference, target in zip(groups, references, targets, strict=True):
        members = [m for m in group if m != reference]
        distance = np.array([[scene_distance(gallery[a], gallery[b]) for b in members] for a in members])
        hits.append(_expected_hit(-distance.sum(axis=1), members.index(target), None))
    return np.asarray(hits)


def _object_incidence(gallery: Sequence[Scene]) -> sparse.csr_matrix:
    """[images, distinct objects]: 1 where the image holds the object (cell, shape, colour and size)."""
    objects: dict[SceneObject, int] = {}
    columns = [objects.setdefault(o, len(objects)) for scene in gallery for o in scene]
    pointers = np.cumsum([0, *(len(scene) for scene in gallery)])
    return sparse.csr_matrix((np.ones(len(columns)), columns, pointers), shape=(len(gallery), len(objects)))


def density_r1(gallery: Sequence[Scene], neighbours: np.ndarray, references: Sequence[int],
               targets: Sequence[int]) -> np.ndarray:
    """Per query, the expected R@1 over the whole gallery (the reference left out) of the
    caption-free score N1(x) - d(R, x): an image's one-edit neighbours minus its distance to
    the reference. d is computed exactly wherever the score could reach the best (a lower bound
    max(|R|, |x|) - |R & x| prunes the rest)."""
    incidence = _object_incidence(gallery)
    sizes = np.array([len(scene) for scene in gallery])
    hits = []
    for reference, target in zip(references, targets, strict=True):
        shared = np.asarray(incidence @ incidence[reference].T.toarray()).ravel()
        lower = np.maximum(sizes, sizes[reference]) - shared
        upper = (neighbours - lower).astype(float)
        upper[reference] = -np.inf
        order = np.argsort(-upper, kind="stable")
        scores = np.full(len(gallery), -np.inf)
        best = -np.inf
        for column in order:
            if upper[column] < best:
                break
            scores[column] = neighbours[column] - scene_distance(gallery[reference], gallery[column])
            best = max(best, scores[column])
        if scores[target] == -np.inf:  # pruned: below the best, so not first
            hits.append(0.0)
            continue
        hits.append(_expected_hit(scores, target, reference))
    return np.asarray(hits)
