"""Is the prompt pool instance-specific? The mutual information between the prompt each query
chooses and its edit family, against a permutation null.

    table = specificity_table(groups)   # None when no run recorded its queries' prompt choices

"Nine of ten prompts are used" says nothing: random selection uses them as much. A pool that
picks its prompt by what the caption asks for carries information about the edit family; the
permutation test (edit families shuffled over the same choices) says whether the measured
information exceeds what chance co-occurrence in so many queries gives. Per seed: prompt i of
one seed is not prompt i of another.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.reporting.data import Group
from harness.reporting.tables import Cell, Table

PERMUTATIONS = 2000


def mutual_information(choices: np.ndarray, families: np.ndarray) -> float:
    """Plug-in mutual information (bits) of two label arrays of equal length."""
    _, a = np.unique(choices, return_inverse=True)
    _, b = np.unique(families, return_inverse=True)
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)
    present = joint > 0
    return float((joint[present] * np.log2(joint[present] / outer[present])).sum())


def permutation_test(choices: np.ndarray, families: np.ndarray, permutations: int = PERMUTATIONS,
                     seed: int = 0) -> tuple[float, float, float]:
    """(observed MI, mean MI under shuffled families, one-sided permutation p)."""
    observed = mutual_information(choices, families)
    rng = np.random.default_rng(seed)
    null = np.array([mutual_information(choices, rng.permutation(families)) for _ in range(permutations)])
    return observed, float(null.mean()), float((1 + (null >= observed - 1e-12).sum()) / (permutations + 1))


def specificity_table(groups: Sequence[Group]) -> Table | None:
    """One row per run and seed that recorded its diagnosed queries' prompt choices."""
    rows, csv_rows = [], []
    for group in groups:
        for run in group.runs:
            choices = run.method_statistics.get("prompt_choice")
            entries = group.rankings(run) if choices else None
            if not choices or not entries:
                continue
            families = np.array([str(e.get("edit_type")) for e in entries[:len(choices)]])
            observed, null, p = permutation_test(np.asarray(choices), families)
            reading = "specific to the edit family" if p < 0.05 else "not distinguishable from random selection"
            rows.append([Cell(group.label), Cell(str(run.seed)), Cell(str(len(choices))),
                         Cell(str(len(set(choices)))), Cell(f"{observed:.3f}"), Cell(f"{null:.3f}"),
                         Cell("< 0.001" if p < 0.001 else f"{p:.3f}"), Cell(reading)])
            csv_rows.append([group.label, run.seed, len(choices), len(set(choices)), observed, null, p, reading])
    if not rows:
        return None
    return Table("Prompt specificity", ["run", "seed", "queries", "prompts chosen", "MI (bits)", "MI if random",
                 "p (permutation)", "reading"], rows, name="specificity", csv_rows=csv_rows,
                 csv_header=["run", "seed", "queries", "prompts_chosen", "mi_bits", "mi_null", "p", "reading"],
                 caption="Mutual information between the prompt each diagnosed query chooses (top-1 of the pool) and "
                 f"its edit family, against {PERMUTATIONS} shuffles of the families over the same choices (the MI a "
                 "pool choosing at random would show in so many queries; the plug-in estimate is biased upward, the "
                 "null shares the bias). Per seed: prompt i of one seed is not prompt i of another. Exploratory, not "
                 "adjusted across rows.")
