"""The report's figures (matplotlib, PNG and PDF, sized for a paper column: 3.4 in wide, 7 pt).

Each function draws one figure from report groups and returns its file stem, or None when
the runs hold nothing to draw (e.g. no prompt pool, no scene graphs).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from harness.core.files import atomic_write_bytes  # noqa: E402
from harness.evaluation.protocol import title  # noqa: E402
from harness.reporting.data import Group, chance_values, config_value  # noqa: E402
from harness.reporting.stats import bootstrap_ci, seed_bootstrap_ci  # noqa: E402

COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
STYLE = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6, "xtick.labelsize": 6,
         "ytick.labelsize": 6, "axes.grid": True, "grid.alpha": 0.3, "savefig.dpi": 200}

def save(figure: Any, out: Path, stem: str) -> str:
    """Write ``stem``.png and ``stem``.pdf atomically; return the stem."""
    for suffix in ("png", "pdf"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix, bbox_inches="tight", metadata={"CreationDate": None} if suffix == "pdf"
                       else None)
        atomic_write_bytes(out / f"{stem}.{suffix}", buffer.getvalue())
    plt.close(figure)
    return stem


def _band(values) -> tuple[float, float]:
    """A point's 95 % band: seeds and queries drawn (two or more seeds), else queries alone."""
    if values.per_seed.shape[0] >= 2:
        return seed_bootstrap_ci(values.per_seed, values.weights, values.strata)
    return bootstrap_ci(values.values, values.weights, values.strata)


def recall_vs_parameter(groups: Sequence[Group], x: str, main: str | None, metrics: Sequence[str],
                        out: Path) -> str | None:
    """Recall of the method under study against the swept parameter: seed mean as points, a 95%
    band that draws seeds then queries (queries alone with one seed); other methods as lines, and
    a random ranking's expected recall as a dotted chance line."""
    swept = [g for g in groups if (main is None or g.method == main) and config_value(g.runs[0].config, x) is not None]
    if not swept:
        return None
    others = [g for g in groups if g not in swept]
    chance = chance_values(groups, metrics)
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(COLUMN_WIDTH, 2.2))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        numeric = all(isinstance(config_value(g.runs[0].config, x), (int, float)) for g in swept)
        ordered = sorted(swept, key=lambda g: config_value(g.runs[0].config, x)) if numeric else swept
        xs = [config_value(g.runs[0].config, x) if numeric else i for i, g in enumerate(ordered)]
        for index, metric in enumerate(metrics):
            colour = colours[index % len(colours)]
            points = [(xv, g) for xv, g in zip(xs, ordered) if g.mean_std(metric) is not None]
            if not points:
                continue
            means = [g.mean_std(metric)[0] for _, g in points]  # type: ignore[index]
            axis.plot([p for p, _ in points], means, marker="o", markersize=3, color=colour,
                      label=f"{main or 'runs'} {title(metric)}")
            bands = [(p, g.per_query(metric)) for p, g in points]
            if all(q is not None for _, q in bands):
                intervals = [_band(q) for _, q in bands]  # type: ignore[arg-type]
                axis.fill_between([p for p, _ in bands], [lo for lo, _ in intervals], [hi for _, hi in intervals],
                                  color=colour, alpha=0.2, linewidth=0)
            for line, group in enumerate(others):
                stats = group.mean_std(metric)
                if stats is not None:
                    axis.axhline(stats[0], color=colour, linestyle=("--", ":", "-.")[line % 3], linewidth=0.7,
                                 label=f"{group.label} {title(metric)}")
            if metric in chance:
                axis.axhline(chance[metric], color=colour, linestyle=(0, (1, 3)), linewidth=0.6, alpha=0.7,
                             label=f"chance {title(metric)}")
        if numeric:
            values = sorted(set(xs))
            if len(values) > 2 and values[0] > 0 and values[-1] / values[0] >= 10:
                axis.set_xscale("log")
            axis.set_xticks(values, [str(v) for v in values])
            axis.minorticks_off()
        else:
            axis.set_xticks(xs, [g.label for g in ordered], rotation=30, ha="right")
        axis.set_xlabel(x.split(".")[-1].replace("_", " "))
        axis.set_ylabel("recall (%)")
        axis.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return save(figure, out, f"recall_vs_{x.split('.')[-1]}")


def pareto(groups: Sequence[Group], metric: str, out: Path) -> str | None:
    """Accuracy against ms/query (batch 1 p50 when measured, else the eval pass's mean) with
    the Pareto front: the runs no other run beats on both."""
    points = []
    for group in groups:
        stats = group.mean_std(metric)
        latency = group.timing("ms_per_query_batch1_p50") or group.timing("encode_and_score_ms_per_query")
        if stats is not None and latency is not None:
            points.append((latency, stats[0], group.label))
    if len(points) < 2:
        return None
    front = pareto_front([(ms, acc) for ms, acc, _ in points])
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(COLUMN_WIDTH, 2.4))
        axis.scatter([p[0] for p in points], [p[1] for p in points], s=12, color="tab:blue", zorder=3)
        for ms, acc, label in points:
            axis.annotate(label, (ms, acc), fontsize=5, xytext=(3, 2), textcoords="offset points")
        chosen = sorted(points[i] for i in front)
        axis.step([p[0] for p in chosen], [p[1] for p in chosen], where="post", color="tab:red", linewidth=0.8,
                  label="Pareto front")
        batch1 = any(g.timing("ms_per_query_batch1_p50") is not None for g in groups)
        axis.set_xlabel("ms / query" + (" (batch 1, p50)" if batch1 else " (eval pass)"))
        axis.set_ylabel(f"{title(metric)} (%)")
        axis.legend(frameon=False)
        return save(figure, out, "pareto")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated (lower cost and higher accuracy, one strictly)."""
    front = []
    for i, (cost, accuracy) in enumerate(points):
        dominated = any((c <= cost and a >= accuracy) and (c < cost or a > accuracy) for c, a in points)
        if not dominated:
            front.append(i)
    return front


def by_edit_type(groups: Sequence[Group], metric: str, out: Path) -> str | None:
    """Recall per edit type (add, remove, ..., compound), grouped bars per run."""
    types = sorted({t for g in groups for r in g.runs for t in r.metrics_by_edit_type})
    if not types:
        return None
    order = [t for t in ("add", "remove", "recolour", "resize", "move", "replace", "compound") if t in types]
    order += [t for t in types if t not in order]
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(COLUMN_WIDTH * 2, 2.2))
        width = 0.8 / len(groups)
        for index, group in enumerate(groups):
            means = [np.mean([r.metrics_by_edit_type.get(t,
                                                         {}).get(metric, np.nan) for r in group.runs]) for t in order]
            axis.bar(np.arange(len(order)) + index * width - 0.4 + width / 2, means, width, label=group.label)
        axis.set_xticks(np.arange(len(order)), order)
        axis.set_ylabel(f"{title(metric)} (%)")
        axis.legend(ncols=min(4, len(groups)), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
        return save(figure, out, "recall_by_edit_type")


def prompt_usage(groups: Sequence[Group], out: Path) -> str | None:
    """Selections per prompt of the pool on the evaluation queries (seed 0 of each run)."""
    used = [(g.label, g.runs[0].method_statistics["prompt_usage"]) for g in groups
            if "prompt_usage" in g.runs[0].method_statistics]
    if not used:
        return None
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, len(used), figsize=(COLUMN_WIDTH * min(2, max(1, len(used) / 2)), 1.6),
                                    squeeze=False)
        for axis, (label, counts) in zip(axes[0], used):
            axis.bar(np.arange(len(counts)), counts, width=0.9, color="tab:blue")
            axis.set_title(label, fontsize=6)
            axis.set_xlabel("prompt")
        axes[0][0].set_ylabel("queries")
        return save(figure, out, "prompt_usage")


def attention_shares(groups: Sequence[Group], out: Path) -> str | None:
    """The paper's Figure 5 as bars: attention each prompt puts on visual and caption tokens, with
    uniform causal attention as a black tick on each bar where the run recorded it."""
    rows = [(g.label, g.runs[0].method_statistics["attention_share"]) for g in groups
            if "attention_share" in g.runs[0].method_statistics]
    uniforms = {g.label: g.runs[0].method_statistics.get("attention_share_uniform", {}) for g in groups}
    if not rows:
        return None
    segments = [s for s in ("soft_prompt", "task", "embedding") if any(s in shares for _, shares in rows)]
    names = {"soft_prompt": "soft prompt", "task": "task prompt", "embedding": "[EMB]"}
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(1, len(segments), figsize=(COLUMN_WIDTH * 1.5, 1.8), squeeze=False, sharey=True)
        for axis, segment in zip(axes[0], segments):
            width = 0.8 / len(rows)
            for index, (label, shares) in enumerate(rows):
                values = [shares.get(segment, {}).get(part, 0.0) for part in ("image", "caption")]
                where = np.arange(2) + index * width - 0.4 + width / 2
                axis.bar(where, values, width, label=label)
                uniform = uniforms[label].get(segment, {})
                if uniform:  # the null: uniform causal attention over the same tokens
                    axis.hlines([uniform.get(part, 0.0) for part in ("image", "caption")], where - width / 2,
                                where + width / 2, color="black", linewidth=1.0)
            axis.set_xticks([0, 1], ["visual", "caption"])
            axis.set_title(names[segment])
            if not any(shares.get(segment, {}).get(part, 0.0) for _, shares in rows for part in ("image", "caption")):
                axis.text(0.5, 0.5, "0: precedes both\n(causal attention)", transform=axis.transAxes, ha="center",
                          va="center", fontsize=6, color="0.4")
        axes[0][0].set_ylabel("attention share")
        axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
        return save(figure, out, "attention_share")


def intent_vs_retention(groups: Sequence[Group], out: Path) -> str | None:
    """The two requirements together: intent fidelity against visual retention of the top-1."""
    points = [(g.mean_std("visual_retention"), g.mean_std("intent_fidelity"), g.label) for g in groups]
    points = [(r[0], f[0], label) for r, f, label in points if r is not None and f is not None]
    if not points:
        return None
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(COLUMN_WIDTH, 2.4))
        axis.scatter([p[0] for p in points], [p[1] for p in points], s=12, zorder=3)
        for retention, fidelity, label in points:
            axis.annotate(label, (retention, fidelity), fontsize=5, xytext=(3, 2), textcoords="offset points")
        axis.scatter([100], [100], marker="*", s=40, color="tab:green", label="the target")
        axis.set_xlabel("visual retention of top-1 (%)")
        axis.set_ylabel("intent fidelity of top-1 (%)")
        axis.set_xlim(0, 105)
        axis.set_ylim(0, 105)
        axis.legend(frameon=False, loc="lower left")
        return save(figure, out, "intent_vs_retention")


def retrieval_examples(groups: Sequence[Group], out: Path, queries: int = 2, max_groups: int = 6) -> str | None:
    """For the first example queries: reference, then each run's top-5 (seed 0), the target
    framed in green; the caption above. Images are read from the paths the results recorded."""
    from PIL import Image

    shown = [g for g in groups if g.runs[0].examples][:max_groups]
    if not shown:
        return None
    count = min(queries, len(shown[0].runs[0].examples))
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(count * len(shown), 6, figsize=(COLUMN_WIDTH * 2, 1.45 * count * len(shown)),
                                    squeeze=False, gridspec_kw={"hspace": 0.75, "wspace": 0.08})
        for q in range(count):
            for index, group in enumerate(shown):
                example = group.runs[0].examples[q]
                row = axes[q * len(shown) + index]
                names = [example["reference"], *example["top"][:5]]
                for column, (axis, name) in enumerate(zip(row, names + [None] * (6 - len(names)))):
                    axis.set_xticks([])
                    axis.set_yticks([])
                    axis.grid(False)
                    path = example["paths"].get(name) if name else None
                    if path and Path(path).is_file():
                        with Image.open(path) as image:
                            axis.imshow(np.asarray(image.convert("RGB")))
                    elif name:
                        axis.text(0.5, 0.5, "image\nnot found", ha="center", va="center", fontsize=5)
                    hit = column > 0 and name == example["target"]
                    for spine in axis.spines.values():
                        spine.set_edgecolor("tab:green" if hit else "0.7")
                        spine.set_linewidth(2.5 if hit else 0.5)
                    if column == 0:
                        axis.set_ylabel(group.label, fontsize=5, rotation=0, ha="right", va="center")
                if index == 0:
                    row[0].set_title("reference", fontsize=6)
                    for column in range(1, 6):
                        row[column].set_title(f"top {column}", fontsize=6)
                    row[0].text(0.0, 1.45, f"“{example['caption']}”", transform=row[0].transAxes, fontsize=6,
                                ha="left", va="bottom")
        return save(figure, out, "retrieval_examples")


#: Top-1 kinds of the error figure, in stacking order, with their colours.
TOP1_KINDS = (("recall_at_1", "target", "tab:green"), ("top1_twin", "twin (v3)", "tab:purple"),
              ("top1_intent", "intent distractor", "tab:red"),
              ("top1_retention", "retention distractor", "tab:orange"),
              ("top1_topped_up", "topped-up member", "tab:gray"),
              ("top1_elsewhere", "elsewhere", "tab:blue"))


def top1_kinds(groups: Sequence[Group], out: Path) -> str | None:
    """Stacked bars per run: the share of queries whose top-1 is the target or each kind of error."""
    shown = [g for g in groups if g.mean_std("top1_intent")]
    if not shown:
        return None
    with plt.rc_context(STYLE):
        figure, axis = plt.subplots(figsize=(COLUMN_WIDTH, 0.4 + 0.22 * len(shown)))
        left = np.zeros(len(shown))
        for key, name, colour in [k for k in TOP1_KINDS if any(g.mean_std(k[0]) for g in shown)]:
            shares = np.array([(g.mean_std(key) or (0.0,))[0] for g in shown])
            axis.barh(np.arange(len(shown)), shares, left=left, color=colour, label=name, height=0.7)
            left += shares
        axis.set_yticks(np.arange(len(shown)), [g.label for g in shown])
        axis.invert_yaxis()
        axis.set_xlim(0, 100)
        axis.set_xlabel("queries (%)")
        axis.legend(ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(shown) > 2 else -0.6), frameon=False)
        return save(figure, out, "top1_kinds")
