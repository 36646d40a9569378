"""CIRCO-format files of our own for the CIRCO tests: CIRCO's annotations are CC BY-NC 4.0, so the
repository does not ship them (tests/fixtures/README.md). The layout and fields are CIRCO's
(miccunifi/CIRCO, docs/sources.md); ids, captions and the submission are drawn from a seed."""

from __future__ import annotations

import json
import random
from pathlib import Path

CONCEPTS = ["dog", "car", "table", "bird", "bottle"]


def write_circo_annotations(root: Path, val_queries: int = 40, test_queries: int = 30, seed: int = 0) -> dict:
    """``root/annotations/{val,test}.json`` in CIRCO's format: val queries carry 1-5 ground truths
    (``target_img_id`` is the first), test queries none. Returns both lists."""
    rng = random.Random(seed)
    ids = iter(rng.sample(range(1, 600_000), 7 * (val_queries + test_queries)))
    val = []
    for query in range(val_queries):
        truths = [next(ids) for _ in range(rng.randint(1, 5))]
        concept = rng.choice(CONCEPTS)
        val.append({"id": query, "reference_img_id": next(ids), "target_img_id": truths[0],
                    "relative_caption": f"shows the {concept} from another side", "shared_concept": concept,
                    "gt_img_ids": truths})
    test = [{"id": val_queries + query, "reference_img_id": next(ids), "relative_caption": "is at night",
             "shared_concept": rng.choice(CONCEPTS)} for query in range(test_queries)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for name, entries in (("val", val), ("test", test)):
        (root / "annotations" / f"{name}.json").write_text(json.dumps(entries, indent=4))
    return {"val": val, "test": test}


def write_circo_submission(path: Path, queries: list[dict], seed: int = 0) -> dict[str, list[int]]:
    """A submission as CIRCO's examples hold it: query id -> 50 unique COCO ids, some of them hits."""
    rng = random.Random(seed)
    submission = {}
    for entry in queries:
        hits = [t for t in entry.get("gt_img_ids", []) if rng.random() < 0.5]
        others = [i for i in rng.sample(range(600_000, 700_000), 50) if i not in hits]
        ranked = others[: 50 - len(hits)]
        for hit in hits:
            ranked.insert(rng.randrange(len(ranked) + 1), hit)
        submission[str(entry["id"])] = ranked
    path.write_text(json.dumps(submission))
    return submission
