"""The learning-free additive scorer of the embedded benchmark and its ceilings: how far a
model gets that adds a caption score to a reference score, with perfect perception (it reads
the scene graphs), and which queries no such model can solve.

Form (the late-fusion form the ``sum`` method represents), for a query with reference R and
caption facts F (``Family.facts``: weighted statements the caption makes about the wanted
image, each checkable on one image alone, see ``image_features``), over gallery images x:

    score(x) = alpha * sum_f w_f [f holds in x]  -  beta * |R (sym. diff.) x|  +  gamma * |ids(R) & ids(x)|

where |R (sym. diff.) x| counts the object features in one scene only (each object's
(cell, shape, colour, size) and its four projections that drop one attribute, so an object
one attribute away is nearer than one two attributes away) and ids are the (colour, shape) pairs.
Grid: alpha in {0, 1}, beta in {0} and 2^-6 ... 2^1, gamma in {0, 1/4, 1/2, 1} (all-zero left out);
dyadic values keep sums of small integers exact, so ties are real ties. The reference image itself
is never ranked; R@1 is the expectation under random tie-breaking.

- ``needs_joint_reading``: no grid point ranks the target strictly first;
- best additive: the grid point with alpha = 1 of highest mean R@1 over a split;
- caption-only: alpha = 1, beta = gamma = 0; reference-only: the best grid point with alpha = 0;
- oracle: the resolved edits applied to the reference's scene graph (exact match).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from harness.data.synthetic.programs import Fact
from harness.data.synthetic.reference_families import RELATIONS
from harness.data.synthetic.scene import Scene, SceneObject, neighbour, scene_key

ALPHAS = (0.0, 1.0)
BETAS = (0.0, *(2.0 ** k for k in range(-6, 2)))
GAMMAS = (0.0, 0.25, 0.5, 1.0)
GRID: tuple[tuple[float, float, float], ...] = tuple(p for p in itertools.product(ALPHAS, BETAS, GAMMAS) if any(p))
CHUNK = 256


def _keys(obj: SceneObject) -> tuple[tuple[Any, ...], ...]:
    return (("id", obj.colour, obj.shape), ("shape", obj.shape))


def object_features(scene: Scene) -> list[tuple[tuple[Any, ...], float]]:
    """The features whose symmetric difference is the reference distance (see the docstring)."""
    out = []
    for obj in scene:
        values = (obj.cell, obj.shape, obj.colour, obj.size)
        out.append((("obj", *values), 1.0))
        out += [(("proj", drop, *values[:drop], *values[drop + 1:]), 1.0) for drop in range(4)]
    return out


def image_features(scene: Scene) -> set[tuple[Any, ...]]:
    """Every statement a caption fact can make that holds in this one image."""
    feats: set[tuple[Any, ...]] = set()
    for obj in scene:
        c, s = obj.colour, obj.shape
        feats |= {("obj", obj.cell, s, c, obj.size), ("id", c, s), ("idcell", c, s, obj.cell),
                  ("idsize", c, s, obj.size), ("shape", s), ("colour", c)}
    for a, b in itertools.permutations(scene, 2):
        pairs = list(itertools.product(_keys(a), _keys(b)))
        for relation, direction in RELATIONS.items():
            if a.cell == neighbour(b.cell, direction):
                feats |= {("beside", ka, kb, relation) for ka, kb in pairs}
        for attribute in ("size", "colour"):
            if getattr(a, attribute) == getattr(b, attribute):
                feats |= {("same", attribute, ka, kb) for ka, kb in pairs}
    if len(scene) > 1 and len({obj.colour for obj in scene}) == 1:
        feats.add(("one_colour",))
    return feats


def _matrix(rows: Iterable[Iterable[tuple[Any, float]]], vocab: dict[Any, int]) -> sparse.csr_matrix:
    """Sparse rows of (key, weight); keys missing from ``vocab`` are added."""
    data, indices, indptr = [], [], [0]
    for row in rows:
        for key, weight in row:
            indices.append(vocab.setdefault(key, len(vocab)))
            data.append(weight)
        indptr.append(len(indices))
    return sparse.csr_matrix((np.asarray(data, np.float32), indices, indptr))


def _pad(matrix: sparse.csr_matrix, width: int) -> sparse.csr_matrix:
    matrix = sparse.csr_matrix(matrix)
    matrix.resize((matrix.shape[0], width))
    return matrix


@dataclass
class Certificate:
    """Per query: expected R@1 at each grid point and whether one ranks the target strictly first."""

    r1: np.ndarray  # [queries, len(GRID)]
    strict: np.ndarray  # [queries, len(GRID)] bool
    oracle: np.ndarray  # [queries]

    @property
    def needs_joint_reading(self) -> np.ndarray:
        return ~self.strict.any(axis=1)

    def scorers(self) -> dict[str, np.ndarray]:
        """Per query expected R@1 (0-1) of each learning-free scorer, its grid point chosen on
        all the queries certified together (one split)."""
        means = self.r1.mean(axis=0)
        alpha = np.array([p[0] for p in GRID])
        best = int(np.flatnonzero(alpha == 1)[np.argmax(means[alpha == 1])])
        reference = int(np.flatnonzero(alpha == 0)[np.argmax(means[alpha == 0])])
        return {"oracle": self.oracle, "best_additive": self.r1[:, best],
                "caption_only": self.r1[:, GRID.index((1.0, 0.0, 0.0))], "reference_only": self.r1[:, reference]}

    def ceilings(self, mask: np.ndarray | None = None, split_grid: np.ndarray | None = None) -> dict[str, float]:
        """Learning-free R@1 (percent) over the queries in ``mask``; the best grid points are
        chosen on the rows of ``split_grid`` (the whole split) so subsets share one scorer."""
        mask = np.ones(len(self.oracle), bool) if mask is None else mask
        chooser = mask if split_grid is None else split_grid
        means = self.r1[chooser].mean(axis=0)
        alpha = np.array([p[0] for p in GRID])
        best = int(np.flatnonzero(alpha == 1)[np.argmax(means[alpha == 1])])
        reference = int(np.flatnonzero(alpha == 0)[np.argmax(means[alpha == 0])])
        caption = GRID.index((1.0, 0.0, 0.0))
        return {"queries": int(mask.sum()), "oracle": 100 * float(self.oracle[mask].mean()),
                "best_additive": 100 * float(self.r1[mask, best].mean()),
                "caption_only": 100 * float(self.r1[mask, caption].mean()),
                "reference_only": 100 * float(self.r1[mask, reference].mean()),
                "joint_share": 100 * float(self.needs_joint_reading[mask].mean())}


def certify(references: Sequence[Scene], facts: Sequence[list[Fact]], targets: Sequence[int],
            expected: Sequence[Scene], reference_columns: Sequence[int], gallery: Sequence[Scene]) -> Certificate:
    """Score every query against ``gallery`` at every grid point. ``targets`` and
    ``reference_columns`` are gallery columns; ``expected`` the oracle's scene per query."""
    targets_, references_ = np.asarray(targets, int), np.asarray(reference_columns, int)
    objects: dict[Any, int] = {}
    identities: dict[Any, int] = {}
    statements: dict[Any, int] = {}
    g_obj = _matrix((object_features(scene) for scene in gallery), objects)
    g_id = _matrix(([(o.identity, 1.0) for o in scene] for scene in gallery), identities)
    g_feat = _matrix(([(f, 1.0) for f in image_features(scene)] for scene in gallery), statements)
    r_obj = _pad(_matrix((object_features(scene) for scene in references), objects), g_obj.shape[1])
    r_id = _pad(_matrix(([(o.identity, 1.0) for o in scene] for scene in references), identities), g_id.shape[1])
    q_fact = _pad(_matrix(facts, statements), g_feat.shape[1])
    g_obj, g_id, g_feat = (_pad(m, len(v)) for m, v in ((g_obj, objects), (g_id, identities), (g_feat, statements)))
    sizes = np.asarray(g_obj.sum(axis=1)).ravel()
    keys: dict[str, list[int]] = {}
    for column, scene in enumerate(gallery):
        keys.setdefault(scene_key(scene), []).append(column)
    r1 = np.zeros((len(references), len(GRID)))
    strict = np.zeros((len(references), len(GRID)), bool)
    for start in range(0, len(references), CHUNK):
        rows = slice(start, min(start + CHUNK, len(references)))
        caption = (q_fact[rows] @ g_feat.T).toarray()
        inter = (r_obj[rows] @ g_obj.T).toarray()
        diff = np.asarray(r_obj[rows].sum(axis=1)) + sizes[None, :] - 2 * inter
        overlap = (r_id[rows] @ g_id.T).toarray()
        local = np.arange(rows.stop - rows.start)
        for k, (alpha, beta, gamma) in enumerate(GRID):
            scores = alpha * caption - beta * diff + gamma * overlap
            scores[local, references_[rows]] = -np.inf
            top = scores.max(axis=1)
            ties = (scores == top[:, None]).sum(axis=1)
            hit = scores[local, targets_[rows]] == top
            r1[rows, k] = hit / ties
            strict[rows, k] = hit & (ties == 1)
    oracle = np.array([_oracle_r1(keys.get(scene_key(e), []), t, r) for e, t,
                       r in zip(expected, targets, reference_columns)])
    return Certificate(r1, strict, oracle)


def _oracle_r1(columns: list[int], target: int, reference: int) -> float:
    columns = [c for c in columns if c != reference]
    return 1.0 / len(columns) if target in columns else 0.0
