"""Report tables and their renderings: Markdown, LaTeX (booktabs), CSV and HTML.

    table = Table("Main results", ["run", "R@1"], rows=[[Cell("sum"), Cell("20.5 ± 0.4", 20.5)]])
    Cell("above", mark="bold")       # emphasis only where a pre-registered test says so (a confirmatory verdict)
    table.markdown(); table.latex(); table.csv(); table.html()
    results_table(results)           # the plain Markdown table `harness run` prints (mean ± std over seeds)

A cell keeps its text and, for numbers, the value the CSV writes. No table marks a "best" cell:
a bold cell is a confirmatory verdict of the pre-registered analysis, nothing else.
"""

from __future__ import annotations

import csv
import html
import io
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.evaluation.protocol import table_columns
from harness.evaluation.results import RunResult, row_labels


@dataclass
class Cell:
    text: str
    value: float | None = None
    mark: Literal["", "bold"] = ""
    note: str = ""  # a suffix outside the marks, e.g. a significance marker


@dataclass
class Table:
    """A titled table with a caption (what the numbers are, what the marks mean)."""

    title: str
    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    name: str = ""  # file stem of its .tex / .csv
    csv_header: list[str] = field(default_factory=list)  # numeric columns for the CSV; default: header
    csv_rows: list[list[Any]] | None = None  # the CSV's own rows where a cell holds several numbers

    # ------------------------------------------------------------------ renderings

    def markdown(self) -> str:
        def render(cell: Cell) -> str:
            text = f"**{cell.text}**" if cell.mark == "bold" else cell.text
            return (text + cell.note).replace("|", "\\|")

        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(render(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def latex(self) -> str:
        """A booktabs table (needs \\usepackage{booktabs}); one l column, then r columns."""
        def render(cell: Cell) -> str:
            text = latex_escape(cell.text)
            text = f"\\textbf{{{text}}}" if cell.mark == "bold" else text
            return text + latex_escape(cell.note)

        spec = "l" + "r" * (len(self.header) - 1)
        lines = [f"% {self.title}", "\\begin{table}[t]", "\\centering", "\\small",
                 f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & ".join(latex_escape(h) for h in self.header) + " \\\\", "\\midrule"]
        lines += [" & ".join(render(c) for c in row) + " \\\\" for row in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.caption:
            lines.append(f"\\caption{{{latex_escape(self.caption)}}}")
        lines.append("\\end{table}")
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """Values where a cell has one (full precision), else its text."""
        stream = io.StringIO()
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(self.csv_header or self.header)
        if self.csv_rows is not None:
            writer.writerows([repr(v) if isinstance(v, float) else v for v in row] for row in self.csv_rows)
            return stream.getvalue()
        for row in self.rows:
            writer.writerow([repr(c.value) if c.value is not None else c.text for c in row])
        return stream.getvalue()

    def html(self) -> str:
        def render(cell: Cell) -> str:
            text = html.escape(cell.text)
            text = f"<b>{text}</b>" if cell.mark == "bold" else text
            return f"<td>{text}{html.escape(cell.note)}</td>"

        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(render(c) for c in row) + "</tr>" for row in self.rows)
        caption = f"<caption>{html.escape(self.title)}</caption>"
        note = f'<p class="note">{html.escape(self.caption)}</p>' if self.caption else ""
        return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "≈": r"$\approx$",
          "†": r"$^\dagger$", "Δ": r"$\Delta$", "–": "--", "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def mean_std_text(values: Sequence[float], digits: int = 1) -> str:
    import statistics

    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def results_table(results: Sequence[RunResult]) -> str:
    """One row per grid point (label), metrics as mean ± std over its seeds."""
    groups: dict[str, list[RunResult]] = defaultdict(list)
    for result, label in zip(results, row_labels(results), strict=True):  # runs evaluated differently apart
        groups[label].append(result)
    columns = table_columns({key for r in results for key in r.metrics})
    header = ["run", "seeds", *(title for _, title in columns), "params (trainable)", "train s", "ms/query"]
    rows = []
    for label, group in groups.items():
        rows.append([
            label,
            ",".join(str(r.seed) for r in group),
            *(_cell([r.metrics[key] for r in group if key in r.metrics]) for key, _ in columns),
            f"{group[0].parameters['total'] / 1e6:.2f}M ({group[0].parameters['trainable'] / 1e6:.2f}M)",
            f"{statistics.mean(r.train.get('seconds', 0.0) for r in group):.0f}",
            f"{statistics.mean(r.timings['encode_and_score_ms_per_query'] for r in group):.2f}",
        ])
    return markdown_table(header, rows)
