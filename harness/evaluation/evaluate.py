"""The shared evaluation loop: encode gallery and queries, score, rank, measure.

    evaluation = evaluate(method, val_split, EvalConfig())
    evaluation.metrics            # {"recall_at_1": ..., "recall_subset_at_1": ..., "avg": ...}
    evaluation.timings            # ms per image / query for each phase, after warm-up

The gallery is every image of the split file (never only the query images); the reference
is removed from its own candidates when ``remove_reference`` is on (CIRR protocol); ties are
broken by gallery index. Latency is measured as timm does: warm-up batches first, then
timed passes, ``torch.cuda.synchronize()`` before reading the clock on a GPU.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from harness.backbones.feature_table import computed, reads_feature_tables
from harness.core import distributed
from harness.core.device import (
    autocast,
    resolve_device,
    resolve_precision,
    to_device,
    to_host,
)
from harness.core.errors import HarnessError
from harness.data.synthetic.scene import scene_from_json
from harness.data.triplet import CIRSplit, Triplet
from harness.evaluation.embedding_cache import embedding_key, load_embeddings, save_embeddings
from harness.evaluation.embedding_file import EmbeddingFile
from harness.evaluation.intent import annotate, cached_json, group_metrics, intent_scores, learning_free
from harness.evaluation.metrics import cirr_metrics, metrics_from_ranks
from harness.evaluation.protocol import EvalConfig
from harness.evaluation.ranking import score_blockwise, score_per_gallery
from harness.evaluation.subsets import read_subset
from harness.methods.base import CIRMethod
from harness.objectives.losses import similarity
from harness.pretraining.perception import cell_labels, probe


@dataclass
class Evaluation:
    """Metrics, per-query results and timings of one evaluation."""

    metrics: dict[str, float]
    metrics_by_edit_type: dict[str, dict[str, float]]
    num_queries: int
    num_gallery: int
    timings: dict[str, float]
    rankings: list[dict[str, Any]] = field(default_factory=list)
    metrics_by_category: dict[str, dict[str, float]] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    learning_free: dict[str, dict[str, float]] = field(default_factory=dict)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _encode_in_batches(encode, count: int, batch_size: int, desc: str, progress: bool,
                       device: torch.device, store: EmbeddingFile | None = None) -> tuple[torch.Tensor, list[float]]:
    """([count, D] embeddings, or [count, M, D] for a multi-vector gallery; ms per item of each
    full batch). On a GPU the batches are timed
    with CUDA events and copied back asynchronously, so the host never waits for the device
    inside the loop (one sync at its end). With a ``store`` (one process) each batch goes to its
    file as it comes and the result is backed by that file. Under torchrun each rank encodes
    its deal of whole batches and the ranks gather them back in order, in RAM, so every row is
    computed as in a single process."""
    chunks, marks = [], []
    store = store if not distributed.current().distributed else None
    starts = distributed.batch_starts(count, batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        began = _mark(device)
        chunk = encode(start, min(count, start + batch_size)).float()
        if len(chunk) == batch_size:  # a short last batch would skew the per-item figure
            marks.append((began, _mark(device)))
        if store is not None:
            store.write(start, chunk)  # a copy to the host, so the device waits here (a disk write anyway)
        else:
            chunks.append(to_host(chunk))
    _synchronize(device)
    per_item = [1000 * _elapsed(began, ended) / batch_size for began, ended in marks]
    if store is not None:
        return store.tensor(), per_item
    if not distributed.current().distributed:
        return (torch.cat(chunks) if chunks else torch.empty(0)), per_item
    shape = distributed.broadcast_object(tuple(chunks[0].shape[1:]) if chunks else (0,))
    return distributed.gather_batches(chunks, count, batch_size, shape), per_item


def _mark(device: torch.device) -> float | torch.cuda.Event:
    """A point in time: a recorded CUDA event on a GPU (read after the next sync), else the clock."""
    if device.type == "cuda":
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event
    return time.perf_counter()


def _elapsed(began: float | torch.cuda.Event, ended: float | torch.cuda.Event) -> float:
    """Seconds between two marks (CUDA events only once the device is synchronised)."""
    if isinstance(began, float) and isinstance(ended, float):
        return ended - began
    return began.elapsed_time(ended) / 1000  # type: ignore[union-attr]


def _percentiles(samples: list[float], prefix: str) -> dict[str, float]:
    if not samples:
        return {}
    values = torch.tensor(samples, dtype=torch.float64)
    return {f"{prefix}_p50": float(values.quantile(0.5)), f"{prefix}_p95": float(values.quantile(0.95))}


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window: CUDA's peak statistics, or on Linux the process's peak
    resident set (VmHWM, reset by writing 5 to /proc/self/clear_refs). False where the CPU
    peak cannot be reset (it then covers the whole process)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def peak_memory_mb(device: torch.device, window: bool) -> tuple[float, str]:
    """(peak memory in MiB, what it measures): CUDA's peak allocation on a GPU; on CPU the peak
    resident set of the process during the evaluation (``window``: since reset_peak_memory;
    data, model and everything else the process holds included), else since it started."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    if window:
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024, "eval_peak_rss"
        except OSError:
            pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process_peak_rss"


@torch.inference_mode()
def evaluate(
    method: CIRMethod, split: CIRSplit, config: EvalConfig, device: torch.device | None = None, progress: bool = True
) -> Evaluation:
    """Evaluate ``method`` on ``split`` with the shared protocol. Under torchrun the ranks share
    the encoding of gallery and queries and each scores the gathered embeddings (timings are
    rank 0's wall clock of the shared work). A gallery of ``gallery_on_disk`` images or more
    keeps its embeddings in a scratch file (harness.evaluation.embedding_file), removed afterwards."""
    triplets = _chosen_queries(split, config)
    if config.gallery == "query_images":
        split = _query_image_gallery(split, triplets)
    large = config.gallery_on_disk is not None and len(split.gallery) >= config.gallery_on_disk
    with EmbeddingFile(len(split.gallery)) as store:
        return _evaluate(method, split, triplets, config, device, progress, store if large else None)


def _chosen_queries(split: CIRSplit, config: EvalConfig) -> list[Triplet]:
    """The split's queries in ``eval.subset_file`` (all without one), then the first ``max_queries``."""
    triplets = list(split.triplets)
    if config.subset_file is not None:
        chosen = read_subset(config.subset_file)
        kept = [t for t in triplets if str(t.pairid) in chosen]
        unknown = len(chosen) - len(kept)
        if unknown or not kept:
            raise HarnessError(f"{unknown} of the file's {len(chosen)} pair ids are not queries of the {split.split} "
                               "split" if kept else f"none of its pair ids is a query of the {split.split} split",
                               file=config.subset_file, field="eval.subset_file",
                               fix="write it from runs on the same split and dataset (`harness subsets`)")
        triplets = kept
    return triplets[: config.max_queries] if config.max_queries else triplets


@dataclass
class _Queries:
    """What one evaluation encodes: the gallery, its index, and the queries' images and captions."""

    triplets: list[Triplet]
    gallery: list[str]
    index: dict[str, int]
    reference_index: torch.Tensor  # [Q] gallery row of each reference, -1 outside the gallery
    gallery_images: torch.Tensor
    reference_images: torch.Tensor
    captions: list[str]
    load_seconds: float


@dataclass
class _Encoders:
    """The method's two encoders over the loaded images, under the evaluation's precision."""

    method: CIRMethod
    queries: _Queries
    device: torch.device
    precision: str

    def gallery(self, lo: int, hi: int) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.method.encode_target(to_device(self.queries.gallery_images[lo:hi], self.device))

    def query(self, lo: int, hi: int) -> torch.Tensor:
        """Queries encoded with every vision tower computing: their timings are the method's cost."""
        with autocast(self.device, self.precision), computed(self.method):
            return self.method.encode_query(to_device(self.queries.reference_images[lo:hi], self.device),
                                            self.queries.captions[lo:hi])


def _evaluate(method: CIRMethod, split: CIRSplit, triplets: list[Triplet], config: EvalConfig,
              device: torch.device | None, progress: bool, store: EmbeddingFile | None) -> Evaluation:
    device = device or resolve_device(config.device)
    progress = progress and distributed.current().is_main
    method.to(device).eval()
    queries = _load_queries(method, split, triplets)
    encoders = _Encoders(method, queries, device, resolve_precision(config.precision, device))
    cache_key, cached, lookup_seconds = _cached_gallery(method, split, device, encoders.precision, config)
    _warm_up(encoders, config, gallery=cached is None)
    method.reset_statistics()  # what the method gathers (e.g. prompt usage) covers the timed pass only

    window = reset_peak_memory(device)
    start = time.perf_counter() - lookup_seconds
    gallery_embeddings = cached if cached is not None else _encode_gallery(encoders, config, progress, store, cache_key)
    _check_scoring(method, gallery_embeddings)
    _synchronize(device)
    gallery_seconds = time.perf_counter() - start
    start = time.perf_counter()
    query_embeddings, batch_ms = _encode_in_batches(encoders.query, len(triplets), config.batch_size, "queries",
                                                    progress, device)
    _synchronize(device)
    query_seconds = time.perf_counter() - start
    batch1_ms, diagnostics = _extra_passes(encoders, gallery_embeddings, config, split)
    peak_mb, peak_kind = peak_memory_mb(device, window)

    start = time.perf_counter()
    scored, metrics, by_type, by_category = _score(split, queries, query_embeddings, gallery_embeddings, config)
    scoring_seconds = time.perf_counter() - start
    rankings = _rankings(split, queries, scored, query_embeddings, gallery_embeddings, config, metrics)
    seconds = {"image_load_s": queries.load_seconds, "gallery_encode_s": gallery_seconds,
               "query_encode_s": query_seconds, "scoring_s": scoring_seconds}
    timings = _timings(seconds, len(queries.gallery), len(triplets), config, cached is not None, batch_ms, batch1_ms,
                       peak_mb) | {"gallery_feature_table": float(reads_feature_tables(method))}
    return Evaluation(metrics, by_type, len(triplets), len(queries.gallery), timings, rankings, by_category,
                      _examples(split, queries, rankings, config), {"peak_memory": peak_kind, **diagnostics},
                      encoders.precision, learning_free(split, triplets) if config.remove_reference else {})


def _load_queries(method: CIRMethod, split: CIRSplit, triplets: list[Triplet]) -> _Queries:
    """Decode the gallery (once) and the references outside it; the captions the method reads."""
    index = {name: i for i, name in enumerate(split.gallery)}
    reference_index = torch.tensor([index.get(t.reference, -1) for t in triplets], dtype=torch.long)  # -1: outside
    start = time.perf_counter()
    gallery_images = split.images.load(split.gallery)
    reference_images = _reference_images(split, triplets, reference_index, gallery_images)
    load_seconds = time.perf_counter() - start
    return _Queries(triplets, split.gallery, index, reference_index, gallery_images, reference_images,
                    [method.query_text(t) for t in triplets], load_seconds)


def _cached_gallery(method: CIRMethod, split: CIRSplit, device: torch.device, precision: str,
                    config: EvalConfig) -> tuple[str | None, torch.Tensor | None, float]:
    """(cache key or None, the cached gallery embeddings or None, seconds the lookup took)."""
    start = time.perf_counter()
    cache_key = embedding_key(method, split, device, precision) if config.embedding_cache else None
    cached = load_embeddings(cache_key) if cache_key is not None else None
    hit = cached is not None and cached.shape[0] == len(split.gallery)
    if distributed.current().distributed:  # the ranks follow rank 0's cache (they need no shared filesystem)
        hit = distributed.broadcast_object(hit)
        cached = distributed.broadcast_object(cached if distributed.current().is_main else None) if hit else None
    return cache_key, cached if hit else None, time.perf_counter() - start


def _check_scoring(method: CIRMethod, gallery_embeddings: torch.Tensor) -> None:
    """The gallery's embeddings have the shape the method's scoring declares: [G, D] for the
    inner product, [G, M, D] for max-similarity."""
    want = 3 if method.scoring == "max_similarity" else 2
    if gallery_embeddings.numel() and gallery_embeddings.dim() != want:
        raise HarnessError(f"{type(method).__name__}.encode_target gave {gallery_embeddings.dim()}-d embeddings, but "
                           f"its scoring '{method.scoring}' reads {want}-d ones", field="method.name",
                           fix="return [B, D] with scoring inner_product, or [B, M, D] with scoring max_similarity")


def _warm_up(encoders: _Encoders, config: EvalConfig, gallery: bool) -> None:
    """Untimed encoder calls (a cached gallery is not encoded, so its encoder needs none)."""
    for _ in range(config.warmup_batches):
        if gallery:
            encoders.gallery(0, min(len(encoders.queries.gallery), config.batch_size))
        encoders.query(0, min(len(encoders.queries.triplets), config.batch_size))
    _synchronize(encoders.device)


def _encode_gallery(encoders: _Encoders, config: EvalConfig, progress: bool, store: EmbeddingFile | None,
                    cache_key: str | None) -> torch.Tensor:
    """The gallery's embeddings, saved to the embedding cache when the target encoder is frozen."""
    embeddings, _ = _encode_in_batches(encoders.gallery, len(encoders.queries.gallery), config.batch_size, "gallery",
                                       progress, encoders.device, store)
    if cache_key is not None and distributed.current().is_main:
        save_embeddings(cache_key, embeddings)
    return embeddings


def _extra_passes(encoders: _Encoders, gallery_embeddings: torch.Tensor, config: EvalConfig,
                  split: CIRSplit) -> tuple[list[float], dict[str, Any]]:
    """(batch-1 latency samples, the method's diagnostics), leaving the method's statistics of the
    timed pass as they were (summed over ranks first)."""
    method, queries = encoders.method, encoders.queries
    for counter in method.statistics_counters():
        distributed.sum_across_ranks(counter)
    counted = [counter.clone() for counter in method.statistics_counters()]
    batch1_ms = _batch1_latency(encoders.query, gallery_embeddings, min(config.latency_queries, len(queries.triplets)),
                                encoders.device)
    count = config.diagnostic_queries
    diagnostics = (method.diagnostics(queries.reference_images[:count].to(encoders.device), queries.captions[:count])
                   if count and queries.triplets else {})
    perception = _perception(encoders, gallery_embeddings, split, config.perception_images)
    if perception:
        diagnostics["perception"] = perception
    for counter, value in zip(method.statistics_counters(), counted):
        counter.copy_(value)
    return batch1_ms, diagnostics


def _perception(encoders: _Encoders, gallery_embeddings: torch.Tensor, split: CIRSplit, images: int) -> dict[str, Any]:
    """The perception probe of what the method's fusion reads (its own features, else the gallery
    embeddings already computed), on the first ``images`` gallery images of an embedded-benchmark
    split (two thirds fit, one third test); {} elsewhere."""
    graphs_file = Path(split.root) / "scene_graphs.json"
    count = min(images, len(encoders.queries.gallery))
    if count < 30 or not graphs_file.is_file():
        return {}
    graphs = cached_json(graphs_file)
    names = encoders.queries.gallery[:count]
    labels = cell_labels([scene_from_json(graphs[name]) for name in names])
    method, images_of = encoders.method, encoders.queries.gallery_images
    if type(method).perception_features is CIRMethod.perception_features:  # the target embeddings
        features = torch.as_tensor(gallery_embeddings[:count]).float().cpu()
    else:
        with torch.no_grad(), autocast(encoders.device, encoders.precision):
            features = torch.cat([method.perception_features(to_device(images_of[lo:min(lo + 256, count)],
                                                                       encoders.device)).float().cpu()
                                  for lo in range(0, count, 256)])
    fit = count * 2 // 3
    return {"fit_images": fit, "test_images": count - fit,
            **probe(features[:fit], labels[:fit], features[fit:], labels[fit:])}


def _score(split: CIRSplit, queries: _Queries, query_embeddings: torch.Tensor, gallery_embeddings: torch.Tensor,
           config: EvalConfig):
    """(scored, metrics, metrics per edit type, metrics per category) under the protocol."""
    triplets, index = queries.triplets, queries.index
    exclude = queries.reference_index if config.remove_reference else None
    target_index = subset_index = None
    if split.has_targets and triplets:
        target_index = torch.tensor([index[t.target] for t in triplets], dtype=torch.long)  # type: ignore[index]
        if all(t.subset for t in triplets):
            width = max(len(t.subset) for t in triplets)
            subset_index = torch.full((len(triplets), width), -1, dtype=torch.long)
            for row, t in enumerate(triplets):
                subset_index[row, : len(t.subset)] = torch.tensor([index[m] for m in t.subset])
    soft = config.target_field == "soft" and target_index is not None
    wants_map = bool(config.map_ks) and target_index is not None and any(t.ground_truths for t in triplets)
    depth = max([config.save_top, *(config.ks if soft else []), *(config.map_ks if wants_map else [])])
    if split.galleries:
        scored = score_per_gallery(query_embeddings, gallery_embeddings, depth,
                                   _category_galleries(split, triplets, index), exclude, target_index)
    else:
        scored = score_blockwise(query_embeddings, gallery_embeddings, depth, exclude, target_index, subset_index,
                                 queries.reference_index)
    if scored.ranks is None:
        return scored, {}, {}, {}
    top_names = [[queries.gallery[i] for i in row if i >= 0] for row in scored.top.tolist()]
    metrics, by_category = metrics_from_ranks(config, triplets, scored.ranks, scored.subset, top_names,
                                              bool(split.galleries))
    return scored, metrics, _metrics_by_edit_type(triplets, scored.ranks, scored.subset, config), by_category


def _rankings(split: CIRSplit, queries: _Queries, scored, query_embeddings: torch.Tensor,
              gallery_embeddings: torch.Tensor, config: EvalConfig, metrics: dict[str, float]) -> list[dict[str, Any]]:
    """Each query's saved entry (top list, target and subset ranks, intent scores); the intent
    metrics join ``metrics``."""
    gallery, index = queries.gallery, queries.index
    top_lists = scored.top[:, : config.save_top].tolist()
    subset_lists = scored.subset_order.tolist() if scored.subset_order is not None else None
    rank_list = scored.ranks.tolist() if scored.ranks is not None else None
    subset_rank_list = scored.subset.tolist() if scored.subset is not None else None
    rankings = []
    for row, t in enumerate(queries.triplets):
        entry: dict[str, Any] = {"pairid": t.pairid, "top": [gallery[i] for i in top_lists[row] if i >= 0]}
        if rank_list is not None:
            entry["target_rank"] = rank_list[row]
        if subset_rank_list is not None:
            entry["subset_rank"] = subset_rank_list[row]
        if t.subset and subset_lists is not None:
            entry["subset_top"] = [gallery[i] for i in subset_lists[row] if i >= 0]
        elif t.subset:
            entry["subset_top"] = _subset_order(similarity(query_embeddings[row : row + 1], gallery_embeddings)[0], t,
                                                index)
        if t.edit_type is not None:
            entry["edit_type"] = t.edit_type
        if t.category is not None:
            entry["category"] = t.category
        rankings.append(entry)
    _add_intent_scores(split, queries.triplets, rankings, metrics)
    if rank_list is not None:
        def group_scores(row: int, names: list[str]) -> list[float]:
            return similarity(query_embeddings[row : row + 1],
                              gallery_embeddings[[index[n] for n in names]])[0].tolist()

        if annotate(split, queries.triplets, rankings, group_scores):
            metrics.update(group_metrics(rankings))
    return rankings


def _add_intent_scores(split: CIRSplit, triplets: list[Triplet], rankings: list[dict[str, Any]],
                       metrics: dict[str, float]) -> None:
    """Intent fidelity and visual retention of each query's top-1 (where the split knows its
    scenes), per query in its entry and averaged into ``metrics``."""
    intent = intent_scores(split,
                           [(t, entry["top"][0] if entry["top"] else None) for t, entry in zip(triplets, rankings)])
    if intent is None or not split.has_targets:
        return
    for entry, scores in zip(rankings, intent):
        entry.update(scores)
    for name in ("intent_fidelity", "visual_retention"):
        values = [s[name] for s in intent if s[name] is not None]
        if values:
            metrics[name] = 100.0 * sum(values) / len(values)


def _examples(split: CIRSplit, queries: _Queries, rankings: list[dict[str, Any]],
              config: EvalConfig) -> list[dict[str, Any]]:
    """The first queries' caption, reference, top-5 and target, with image paths (report grid)."""
    examples = []
    for row, t in enumerate(queries.triplets[: config.examples]):
        top = rankings[row]["top"][:5]
        names = sorted({t.reference, t.target, *top} - {None})
        examples.append({"pairid": t.pairid, "caption": queries.captions[row], "reference": t.reference,
                         "target": t.target, "top": top,
                         "paths": {name: str(split.images.paths[name]) for name in names
                                   if name in split.images.paths}})
    return examples


def _timings(seconds: dict[str, float], gallery: int, count: int, config: EvalConfig, from_cache: bool,
             batch_ms: list[float], batch1_ms: list[float], peak_mb: float) -> dict[str, float]:
    """Each phase's seconds, per image / query figures and latency percentiles."""
    queries = max(1, count)
    scoring = seconds["scoring_s"]
    encode_and_score = seconds["query_encode_s"] + scoring
    return {
        **seconds,
        "gallery_encode_ms_per_image": 1000 * seconds["gallery_encode_s"] / max(1, gallery),
        "query_encode_ms_per_query": 1000 * seconds["query_encode_s"] / queries,
        "scoring_ms_per_query": 1000 * scoring / queries,
        "encode_and_score_ms_per_query": 1000 * encode_and_score / queries,
        "queries_per_second": queries / max(encode_and_score, 1e-9),
        "gallery_from_cache": float(from_cache),
        "eval_batch_size": float(config.batch_size),
        **_percentiles([ms + 1000 * scoring / queries for ms in batch_ms], "ms_per_query_eval_batch"),
        **_percentiles(batch1_ms, "ms_per_query_batch1"),
        "peak_memory_mb": peak_mb,
    }


def _reference_images(split: CIRSplit, triplets: list[Triplet], rows: torch.Tensor,
                      gallery_images: torch.Tensor) -> torch.Tensor:
    """The queries' reference images: rows of the already loaded gallery where the reference is
    a gallery image (``rows`` >= 0, every CIRR-style split), decoded only where it is not."""
    outside = (rows < 0).nonzero().squeeze(1)
    if not len(outside):
        return gallery_images[rows]
    decoded = split.images.load([triplets[row].reference for row in outside.tolist()])
    images = torch.empty(len(triplets), *decoded.shape[1:], dtype=decoded.dtype)
    inside = (rows >= 0).nonzero().squeeze(1)
    images[inside] = gallery_images[rows[inside]]
    images[outside] = decoded
    return images


def _batch1_latency(encode_queries, gallery_embeddings: torch.Tensor, count: int, device: torch.device) -> list[float]:
    """ms per query, one query at a time: encode, score against the gallery, rank its top 50
    (after one untimed query)."""
    samples: list[float] = []
    if count <= 0:  # no latency asked for: not even the untimed query
        return samples
    for row in range(-1, count):
        began = time.perf_counter()
        query = encode_queries(max(row, 0), max(row, 0) + 1).float().cpu()
        scores = similarity(query, gallery_embeddings)
        scores.topk(min(50, scores.shape[1]), dim=1)
        if row >= 0:
            samples.append(1000 * (time.perf_counter() - began))
    return samples


def _metrics_by_edit_type(
    triplets: list[Triplet], ranks: torch.Tensor, subset: torch.Tensor | None, config: EvalConfig
) -> dict[str, dict[str, float]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for row, t in enumerate(triplets):
        if t.edit_type is not None:
            rows[t.edit_type].append(row)
    result = {}
    for edit_type, selected in sorted(rows.items()):
        chosen = torch.tensor(selected)
        metrics = cirr_metrics(ranks[chosen], config.ks, None if subset is None else subset[chosen], config.subset_ks)
        metrics["num_queries"] = float(len(selected))
        result[edit_type] = metrics
    return result


def _category_galleries(split: CIRSplit, triplets: list[Triplet],
                        index: dict[str, int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(query rows, gallery indices in the category's split-file order) per category (FashionIQ):
    each category ranks its own gallery, ties broken by that order, as the per-category scorers do."""
    rows: dict[str | None, list[int]] = {}
    for row, t in enumerate(triplets):
        rows.setdefault(t.category, []).append(row)
    return [(torch.tensor(rows[category], dtype=torch.long),
             torch.tensor([index[name] for name in dict.fromkeys(names)], dtype=torch.long))
            for category, names in split.galleries.items() if rows.get(category)]


def _subset_order(scores: torch.Tensor, triplet: Triplet, index: dict[str, int]) -> list[str]:
    """The query's set members other than its reference, best first (ties by gallery index):
    what CIRR's recall_subset submission lists (its first three)."""
    members = [m for m in dict.fromkeys(triplet.subset) if m != triplet.reference]
    return sorted(members, key=lambda m: (-float(scores[index[m]]), index[m]))


def _query_image_gallery(split: CIRSplit, triplets: list[Triplet]) -> CIRSplit:
    """The split with its gallery cut to the queries' own references and targets (per category
    when it has category galleries), as the VAL protocol builds FashionIQ's."""
    import dataclasses

    def images(chosen: list[Triplet]) -> list[str]:
        return list(dict.fromkeys(n for t in chosen for n in (t.reference, t.target,
                                                              *t.ground_truths) if n is not None))

    galleries = {category: images([t for t in triplets if t.category == category]) for category in split.galleries}
    return dataclasses.replace(split, gallery=images(triplets), galleries=galleries)
