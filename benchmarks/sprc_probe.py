"""Where a trained SPRC run loses the reference: its query, and probes that take one of its
parts away, each evaluated by the shared loop on the first ``--queries`` val queries (full
gallery). A measurement script for issue 19, not a test.

    .venv/bin/python benchmarks/sprc_probe.py runs/fusion_strategy/runs/<sprc run> [--queries 1000]
    .venv/bin/python benchmarks/sprc_probe.py <run> --untrained   # the stage-0 Q-Former, before CIR training

Probes (every one scored against the run's own multi-vector targets):
- ``query``: the run's query (fusion pass, then the image-free pass read at [CLS]);
- ``caption alone``: the image-free pass over the caption without the fused prompts;
- ``reference alone``: the mean of the reference's own target vectors (what the Q-Former's image
  side keeps of the reference, no caption);
- ``swapped reference``: the query with another query's reference image (same caption).
It also prints the mean cosine between a query and the same query with the reference swapped,
and with the caption swapped (which input the query follows), and, over the first ``--pairs``
queries, what the target side keeps of an image: per target vector, the mean cosine between
different images (near 1: the vector hardly depends on the image), which vector wins the
max-similarity, and how often the reference's vectors find the query's own target among those
pairs' targets (max-similarity, mean-pooled) next to the query itself. Any run's folder works
for that part (a single-vector method is one vector per image), so a late-fusion run gives the
CLIP embedding's numbers to compare:

    .venv/bin/python benchmarks/sprc_probe.py runs/fusion_strategy/runs/<sum run> --target-side-only
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from harness.core.device import autocast, resolve_precision
from harness.evaluation.evaluate import evaluate
from harness.experiments.finished_run import read_run_config, rebuild_run

KEYS = ("recall_at_1", "recall_at_50", "recall_subset_at_1", "top1_elsewhere")


def probes(method) -> dict[str, object]:
    """name -> encode_query replacement (images, captions) -> [B, E]."""
    qformer, query = method.backbone.qformer, method.encode_query

    def caption_alone(images, captions):
        ids, mask = method.backbone.tokenize(captions)
        return qformer.text_vector(qformer.text(ids, mask))

    def reference_alone(images, captions):
        return F.normalize(method.encode_target(images).mean(dim=1), dim=-1)

    def swapped_reference(images, captions):
        return query(images.roll(1, dims=0), captions)

    return {"query": query, "caption alone": caption_alone, "reference alone": reference_alone,
            "swapped reference": swapped_reference}


def sensitivity(method, split, count: int, precision: str) -> dict[str, float]:
    """Mean cosine of a query to itself with the reference swapped, and with the caption swapped."""
    triplets = split.triplets[:count]
    images = split.images.load([t.reference for t in triplets])
    captions = [method.query_text(t) for t in triplets]
    with torch.no_grad(), autocast("cpu", precision):
        base = method.encode_query(images, captions).float()
        other_image = method.encode_query(images.roll(1, dims=0), captions).float()
        other_caption = method.encode_query(images, captions[1:] + captions[:1]).float()
    return {"cos_swapped_reference": float((base * other_image).sum(-1).mean()),
            "cos_swapped_caption": float((base * other_caption).sum(-1).mean())}


def _recall_at(scores: torch.Tensor, k: int) -> float:
    """% of rows whose diagonal entry (the own target) ranks within the top k (ties count against)."""
    ranks = (scores >= scores.diag()[:, None]).sum(dim=1) - 1
    return float((ranks < k).float().mean() * 100)


def target_side(method, split, count: int, precision: str = "fp32") -> dict[str, object]:
    """What the target vectors keep of an image, over the first ``count`` queries (see above)."""
    triplets = split.triplets[:count]
    references = split.images.load([t.reference for t in triplets])
    with torch.no_grad(), autocast("cpu", precision):
        reference = method.encode_target(references).float()
        target = method.encode_target(split.images.load([t.target for t in triplets])).float()
        query = method.encode_query(references, [method.query_text(t) for t in triplets]).float()
    if target.dim() == 2:
        reference, target = reference[:, None], target[:, None]
    off_diagonal = ~torch.eye(count, dtype=torch.bool)
    spread = [round(float((v @ v.T)[off_diagonal].mean()), 3) for v in reference.unbind(dim=1)]
    query_scores = torch.einsum("qd,gmd->qgm", query, target)
    wins = torch.bincount(query_scores.argmax(dim=-1).flatten(), minlength=target.shape[1]).float()
    pooled = F.normalize(reference.mean(dim=1), dim=-1) @ F.normalize(target.mean(dim=1), dim=-1).T
    best_pair = torch.einsum("qmd,gnd->qgmn", reference, target).flatten(2).max(dim=-1).values
    return {"pairs": count, "mean_cos_between_images": spread,
            "winning_vector_share": [round(float(w), 3) for w in wins / wins.sum()],
            "reference_to_target_r1_max_similarity": _recall_at(best_pair, 1),
            "reference_to_target_r1_mean_pooled": _recall_at(pooled, 1),
            "query_to_target_r1": _recall_at(query_scores.max(dim=-1).values, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--untrained", action="store_true", help="skip the checkpoint: the stage-0 Q-Former")
    parser.add_argument("--pairs", type=int, default=500, help="queries of the target-side statistics")
    parser.add_argument("--target-side-only", action="store_true", help="skip the probes (any method's run)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = read_run_config(args.run)
    method, split = rebuild_run(args.run, config, progress=False, weights=not args.untrained)
    method.eval()
    precision = resolve_precision(config.eval.precision, "cpu")  # as the run's evaluation encoded
    eval_config = config.eval.model_copy(update={"max_queries": args.queries, "latency_queries": 0, "examples": 0,
                                                 "diagnostic_queries": 0, "embedding_cache": False})
    rows: dict[str, dict] = {"target side": target_side(method, split, args.pairs, precision)}
    print(json.dumps(rows["target side"]), flush=True)
    if args.target_side_only:
        _write(args.json, rows)
        return
    original = method.encode_query
    for name, encode in probes(method).items():
        method.encode_query = encode
        result = evaluate(method, split, eval_config, torch.device("cpu"), progress=False)
        rows[name] = {key: round(float(result.metrics[key]), 2) for key in KEYS if key in result.metrics}
        method.encode_query = original
        print(f"{name:18s} " + "  ".join(f"{k} {v:6.2f}" for k, v in rows[name].items()), flush=True)
    rows["sensitivity"] = sensitivity(method, split, min(args.queries, 512), precision)
    print(json.dumps(rows["sensitivity"]))
    _write(args.json, rows)


def _write(path: Path | None, rows: dict) -> None:
    if path is not None:
        path.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
