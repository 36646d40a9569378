"""The evaluation contract: the published protocols, the eval config, the record a result keeps
of its protocol, and the metric catalogue (what each metric key means and how one query
contributes to it). No torch here: reports read it without the model stack.

    name, config = EvalConfig(protocol="fashioniq").resolved("fashioniq")
    record = ProtocolRecord.of(requested, name, config, categories, split.info)  # what result.json stores ...
    record.eval_config()                               # ... and what `harness score` recomputes with
    title("recall_subset_at_1"), per_query_value(entry, "recall_at_5")   # the catalogue

The shared evaluation (harness.evaluation.evaluate) and offline re-scoring
(harness.evaluation.saved_rankings) both end in harness.evaluation.metrics'
``metrics_from_ranks``; tables, figures, statistics and the per-run line read titles, direction
and per-query values from ``CATALOGUE``. Adding a metric: its function in
harness.evaluation.metrics, a ``MetricFamily`` here, and its call in ``metrics_from_ranks``
(docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.core.errors import HarnessError
from harness.core.settings import Precision

#: Published protocols as named presets (docs/sources.md). A preset fills
#: the fields an experiment leaves unset; a field set explicitly wins and is recorded as such.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "cirr": {"ks": [1, 5, 10, 50], "subset_ks": [1, 2, 3], "remove_reference": True},  # + Avg, set members
    "fashioniq": {"ks": [10, 50], "subset_ks": [], "remove_reference": False},  # per category, then their mean
    "shoes": {"ks": [1, 10, 50], "subset_ks": [], "remove_reference": True},
    "circo": {"ks": [5, 10, 25, 50], "subset_ks": [], "remove_reference": False, "map_ks": [5, 10, 25, 50]},
}


class EvalConfig(BaseModel):
    """Evaluation protocol and batching. Unset protocol fields come from ``protocol`` (by
    default the dataset's own: CIRR's for the embedded benchmark)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Literal["cirr", "fashioniq", "shoes", "circo"] | None = Field(
        None, description="named published protocol filling the fields left unset; null: the dataset's own")

    ks: list[int] = Field([1, 5, 10, 50], description="K of Recall@K")
    subset_ks: list[int] = Field([1, 2, 3], description="K of Recall_subset@K (image sets only)")
    map_ks: list[int] = Field([], description="K of mAP@K over every ground truth (CIRCO)")
    batch_size: int = Field(256, ge=1, description="images or queries per encoder call")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    precision: Precision = Field("auto", description="encoders under bf16 autocast where the hardware multiplies bf16 "
                                 "natively, else fp32 (as train.precision); scores and ranks are always fp32")
    remove_reference: bool = Field(True, description="drop the reference from its own candidates (CIRR)")
    target_field: Literal["hard", "soft"] = Field(
        "hard", description="hard: Recall@K of target_hard (CLIP4Cir lineage); soft: CIRPLANT's soft Recall@K over "
        "CIRR's target_soft scores (Recall_subset stays hard)")
    category_mean: bool = Field(True, description="with category galleries (FashionIQ): average each metric over "
                                "the categories (canonical); false: over all queries")
    gallery: Literal["split_file", "query_images"] = Field(
        "split_file", description="split_file: every image of the split (canonical); query_images: only the "
        "references and targets of the evaluated queries (the VAL / TIRG protocol for FashionIQ; not comparable)")
    warmup_batches: int = Field(1, ge=0, description="untimed encoder calls before timing")
    latency_queries: int = Field(32, ge=0, description="queries timed one at a time (encode + score + rank) for the "
                                 "batch-1 latency p50 / p95; 0 skips it")
    examples: int = Field(4, ge=0, description="queries whose reference, caption, top-5 and target the result keeps "
                          "(with image paths) for the report's example grid")
    embedding_cache: bool = Field(True, description="reuse the gallery embeddings of a frozen target encoder across "
                                  "runs (harness.evaluation.embedding_cache; methods with a trained target side never "
                                  "hit it)")
    perception_images: int = Field(3000, ge=0, description="embedded benchmark: gallery images the perception probe "
                                   "reads from what the method's fusion reads of an image (two thirds fit a linear "
                                   "probe of every grid cell's content, one third test it; harness.pretraining."
                                   "perception); a diagnostic that changes no metric; 0 skips it")
    diagnostic_queries: int = Field(64, ge=0, description="queries a method's own diagnostics read (CIR-LVLM: where "
                                    "its prompts attend); 0 skips them")
    gallery_on_disk: int | None = Field(
        100_000, ge=1, description="galleries of at least this many images have their embeddings written to a file "
        "a batch at a time and scored from it block by block (bounded memory for CIRCO-size galleries); null: always "
        "in RAM. Does not change any number")
    save_top: int = Field(50, ge=1, description="length of the per-query ranking kept on disk")
    max_queries: int | None = Field(None, ge=1, description="evaluate the first N queries only (quick runs)")
    subset_file: str | None = Field(None, description="evaluate only the queries this JSON file selects: a `harness "
                                    "subsets` file (its composition-required queries), a list of pair ids, or an "
                                    "object of pair id -> true/false (harness.evaluation.subsets); before max_queries")

    def resolved(self, dataset: str) -> tuple[str, EvalConfig]:
        """(protocol name, this config with the preset's values where a field was left unset)."""
        from harness.data.datasets import default_protocol  # the dataset table (and its readers) only when needed

        name = self.protocol or default_protocol(dataset)  # each dataset module declares its own
        preset = {key: value for key, value in PROTOCOLS[name].items() if key not in self.model_fields_set}
        resolved = self.model_copy(update=preset)
        if (problem := resolved.unverifiable_cutoff()) is not None:
            raise HarnessError(f"protocol {name}: {problem}", field="eval.save_top",
                               fix="raise eval.save_top to the largest K, or drop that K")
        return name, resolved

    def unverifiable_cutoff(self) -> str | None:
        """Why a K cannot be re-checked from the saved rankings (K above save_top), or None."""
        largest = max([*self.ks, *self.map_ks], default=0)
        if largest > self.save_top:
            return (f"K = {largest} is larger than the {self.save_top} images each ranking keeps, so `harness score` "
                    "could never re-check it")
        return None

    @model_validator(mode="after")
    def _cutoffs_verifiable(self) -> EvalConfig:
        if (problem := self.unverifiable_cutoff()) is not None:
            raise ValueError(f"{problem}; raise eval.save_top to the largest K, or drop that K")
        return self

    @field_validator("ks", "subset_ks", "map_ks")
    @classmethod
    def _positive_sorted(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("every K must be >= 1")
        return sorted(set(ks))


class ProtocolRecord(BaseModel):
    """The protocol a result was computed under (``result.json``'s ``protocol``): what a preset
    resolved to, which fields the experiment set itself, and what `harness score` needs to
    recompute the metrics from the rankings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gallery: Literal["split_file", "category_split_file", "query_images"] = "split_file"
    averaging: Literal["category_mean", "queries"] = "queries"
    preset: str | None = None
    explicit: list[str] = Field(default_factory=list, description="eval fields the experiment set itself")
    remove_reference: bool = True
    target_field: Literal["target_hard", "target_soft"] = "target_hard"
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 50])
    subset_ks: list[int] = Field(default_factory=lambda: [1, 2, 3])
    map_ks: list[int] = Field(default_factory=list)
    tie_break: Literal["gallery_index"] = "gallery_index"
    dropped_queries: int = 0
    dropped_gallery_images: int = 0

    @classmethod
    def of(cls, requested: EvalConfig, preset: str | None, config: EvalConfig, categories: bool,
           info: dict[str, Any]) -> ProtocolRecord:
        """The record of an evaluation under ``config`` (``requested`` resolved by ``preset``);
        ``categories``: it had category galleries; ``info``: the split's load notes."""
        return cls(
            gallery=(config.gallery if config.gallery != "split_file"
                     else "category_split_file" if categories else "split_file"),
            averaging="category_mean" if categories and config.category_mean else "queries",
            preset=preset,
            explicit=sorted(set(requested.model_fields_set) & set(RECORDED_FIELDS)),
            remove_reference=config.remove_reference,
            target_field="target_soft" if config.target_field == "soft" else "target_hard",
            ks=config.ks, subset_ks=config.subset_ks, map_ks=config.map_ks,
            dropped_queries=int(info.get("dropped_queries", 0)),
            dropped_gallery_images=int(info.get("dropped_gallery_images", 0)))

    def description(self) -> str:
        """One phrase naming the protocol, for a report's set-up line."""
        parts = [f"preset {self.preset}"] if self.preset else []
        if self.explicit:
            parts.append(f"set explicitly: {', '.join(self.explicit)}")
        gallery = {"split_file": "split file", "category_split_file": "each category's split file",
                   "query_images": "the queries' own images (VAL protocol)"}[self.gallery]
        parts += [f"gallery = {gallery}", f"reference removed = {self.remove_reference}"]
        if self.averaging == "category_mean":
            parts.append("metrics averaged over categories")
        parts.append("ties broken by gallery index")
        if self.dropped_queries:
            parts.append(f"{self.dropped_queries} queries dropped for missing images")
        return ", ".join(parts)

    def eval_config(self) -> EvalConfig:
        """The eval settings that recompute the recorded metrics from rankings."""
        return EvalConfig(ks=self.ks, subset_ks=self.subset_ks, map_ks=self.map_ks,
                          remove_reference=self.remove_reference,
                          target_field="soft" if self.target_field == "target_soft" else "hard",
                          category_mean=self.averaging == "category_mean")


#: eval fields whose explicit setting a record names (they change what the metrics mean)
RECORDED_FIELDS = ("ks", "subset_ks", "remove_reference", "map_ks", "gallery", "target_field", "category_mean")


# ---------------------------------------------------------------------- the metric catalogue


def _rank_hit(field: str) -> Callable[[dict[str, Any], int | None], float | None]:
    def value(entry: dict[str, Any], k: int | None) -> float | None:
        rank = entry.get(field)
        return None if rank is None or k is None else 100.0 * (rank < k)
    return value


def _stored(field: str) -> Callable[[dict[str, Any], int | None], float | None]:
    def value(entry: dict[str, Any], k: int | None) -> float | None:
        stored = entry.get(field)
        return None if stored is None else 100.0 * float(stored)
    return value


def _rank_hit_where(flag: str, wanted: bool) -> Callable[[dict[str, Any], int | None], float | None]:
    """R@K of the queries whose entry has ``flag`` == ``wanted`` (None for the others)."""
    hit = _rank_hit("target_rank")

    def value(entry: dict[str, Any], k: int | None) -> float | None:
        return hit(entry, k) if entry.get(flag) is wanted else None
    return value


def _top1_is(kind: str) -> Callable[[dict[str, Any], int | None], float | None]:
    def value(entry: dict[str, Any], k: int | None) -> float | None:
        found = entry.get("top1_kind")
        return None if found is None else 100.0 * (found == kind)
    return value


def _fashioniq_avg(entry: dict[str, Any], k: int | None) -> float | None:
    parts = [per_query_value(entry, "recall_at_10"), per_query_value(entry, "recall_at_50")]
    return None if None in parts else (parts[0] + parts[1]) / 2  # type: ignore[operator]


def _avg(entry: dict[str, Any], k: int | None) -> float | None:
    parts = [per_query_value(entry, "recall_at_5"), per_query_value(entry, "recall_subset_at_1")]
    return None if None in parts else (parts[0] + parts[1]) / 2  # type: ignore[operator]


@dataclass(frozen=True)
class MetricFamily:
    """Metrics of one kind: key pattern (``{k}`` for a cut-off), title, direction, and the value one
    query contributes, in percent, from its rankings entry (None: not per query)."""

    key: str
    title: str
    description: str
    per_query: Callable[[dict[str, Any], int | None], float | None] | None = None
    higher_is_better: bool = True

    def match(self, key: str) -> tuple[bool, int | None]:
        pattern = "^" + re.escape(self.key).replace(re.escape("{k}"), r"(\d+)") + "$"
        found = re.match(pattern, key)
        return (False, None) if found is None else (True, int(found.group(1)) if found.groups() else None)


CATALOGUE: tuple[MetricFamily, ...] = (
    MetricFamily("recall_at_{k}", "R@{k}", "target among the top K", _rank_hit("target_rank")),
    MetricFamily("recall_subset_at_{k}", "Rs@{k}", "target among the top K of its image set (CIRR)",
                 _rank_hit("subset_rank")),
    MetricFamily("avg", "Avg", "(R@5 + Rs@1) / 2 (CIRR)", _avg),
    MetricFamily("avg_r10_r50", "Avg", "(R@10 + R@50) / 2, each the mean over the categories (FashionIQ)",
                 _fashioniq_avg),
    MetricFamily("map_at_{k}", "mAP@{k}", "mean average precision over every ground truth (CIRCO)"),
    MetricFamily("intent_fidelity", "intent fidelity", "top-1 carries the caption's edit", _stored("intent_fidelity")),
    MetricFamily("visual_retention", "visual retention", "top-1 keeps the reference's other content",
                 _stored("visual_retention")),
    MetricFamily("recall_joint_at_{k}", "R@{k} joint", "R@K on the queries that need a joint reading of caption and "
                 "reference (embedded benchmark v2)", _rank_hit_where("needs_joint_reading", True)),
    MetricFamily("recall_rest_at_{k}", "R@{k} rest", "R@K on the queries an additive scorer can solve (v2)",
                 _rank_hit_where("needs_joint_reading", False)),
    MetricFamily("recall_group_at_{k}", "Rg@{k}", "target among the top K of its own image group, reference left "
                 "out (v2)", _rank_hit("group_rank")),
    MetricFamily("group_auc", "AUC group", "per query, the share of the other members of its group ranked below the "
                 "target (100: above all of them; 50: chance), mean (v2 on)", _stored("group_auc")),
    MetricFamily("recall_held_out_at_{k}", "R@{k} held-out", "R@K on captions phrased with held-out phrasings or "
                 "synonyms (v2)", _rank_hit_where("held_out", True)),
    MetricFamily("recall_seen_at_{k}", "R@{k} seen", "R@K on captions phrased as in training (v2)",
                 _rank_hit_where("held_out", False)),
    *(MetricFamily(f"top1_{kind}", f"top-1 {kind.replace('_', '-')}", f"share of queries whose top-1 is {what} (v2)",
                   _top1_is(kind), higher_is_better=False)
      for kind, what in (("twin", "the query's twin: the target of its mirror query, true to the caption's words (v3)"),
                         ("intent", "an intent distractor (a misreading of the caption)"),
                         ("retention", "a retention distractor (the edit and one change more)"),
                         ("topped_up", "a topped-up group member"),
                         ("elsewhere", "outside the query's group"))),
)
#: metrics of the results tables, in column order (those a run has)
TABLE_METRICS = ("recall_at_1", "recall_at_5", "recall_at_10", "recall_at_25", "recall_at_50", "recall_subset_at_1",
                 "recall_subset_at_2", "recall_subset_at_3", "avg", "avg_r10_r50", "map_at_5", "map_at_10", "map_at_25",
                 "map_at_50")


def family(key: str) -> tuple[MetricFamily, int | None] | None:
    """The catalogue entry of metric ``key`` and its cut-off K, or None for an unknown key."""
    for entry in CATALOGUE:
        matched, k = entry.match(key)
        if matched:
            return entry, k
    return None


def title(key: str) -> str:
    """The column title of metric ``key`` ("R@10"); the key itself when it is not catalogued."""
    found = family(key)
    return key if found is None else found[0].title.replace("{k}", str(found[1]))


def per_query_value(entry: dict[str, Any], key: str) -> float | None:
    """One query's contribution to metric ``key`` in percent, from its rankings entry; None where
    the entry cannot give it (the metric then gets no per-query statistics)."""
    found = family(key)
    if found is None or found[0].per_query is None:
        return None
    return found[0].per_query(entry, found[1])


def higher_is_better(key: str) -> bool:
    found = family(key)
    return True if found is None else found[0].higher_is_better


def table_columns(keys: set[str] | Sequence[str]) -> list[tuple[str, str]]:
    """(key, title) of the table metrics among ``keys``, in table order."""
    present = set(keys)
    return [(key, title(key)) for key in TABLE_METRICS if key in present]
