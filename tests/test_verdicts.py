"""`harness verdicts`: reports/README.md's verdicts are generated from the committed pre-registered
tables, and every number they print is re-derived here from those tables."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from typer.testing import CliRunner

from harness.cli import app
from harness.reporting.verdicts import BEGIN, END

REPO = Path(__file__).resolve().parents[1]
HEADER = "b,a,difference,low,high,p,p_holm,mde,tost_p,seeds_a,seeds_b,paired,verdict,metric\n"


def _rows(block: str) -> list[list[str]]:
    """The table rows of a generated section, cell by cell."""
    lines = [line for line in block.splitlines() if line.startswith("| `")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_the_committed_verdicts_are_what_the_committed_tables_give():
    readme = REPO / "reports" / "README.md"
    result = CliRunner().invoke(app, ["verdicts", str(REPO / "reports"), "--check", str(readme)])
    assert result.exit_code == 0, result.output


def test_every_number_the_verdicts_print_is_in_a_committed_table():
    """Each row's experiment, contrast, interval, Holm p, MDE, TOST p, seeds and verdict, read back
    from the README and found in that experiment's tables/preregistered.csv."""
    text = (REPO / "reports" / "README.md").read_text(encoding="utf-8")
    rows = _rows(text[text.index(BEGIN):text.index(END)])
    assert rows, "the README's generated section holds no verdict"
    for experiment, contrast, _, interval, p_holm, mde, tost, seeds, verdict in rows:
        folder = REPO / "reports" / experiment.strip("`/")
        with open(folder / "tables" / "preregistered.csv", encoding="utf-8") as stream:
            table = list(csv.DictReader(stream))
        [row] = [r for r in table if contrast in (f"{r['b']} − {r['a']}", f"slope on {r['b']}")]
        derived = f"{float(row['difference']):+.2f} [{float(row['low']):+.2f}, {float(row['high']):+.2f}]"
        assert interval == derived
        assert p_holm == ("< 0.001" if float(row["p_holm"]) < 0.001 else f"{float(row['p_holm']):.3f}")
        assert mde == f"{float(row['mde']):.2f}"
        assert tost == ("-" if not row["tost_p"] else
                        "< 0.001" if float(row["tost_p"]) < 0.001 else f"{float(row['tost_p']):.3f}")
        assert seeds == f"{row['seeds_a']} / {row['seeds_b']}" and verdict == row["verdict"]


def _reports(tmp_path: Path, table: str) -> Path:
    """A reports folder: one experiment with a pre-registered table, one without."""
    for name in ("tested", "explored"):
        (tmp_path / "reports" / name / "tables").mkdir(parents=True)
        (tmp_path / "reports" / name / "report.md").write_text("# report\n")
    (tmp_path / "reports" / "tested" / "tables" / "preregistered.csv").write_text(HEADER + table)
    (tmp_path / "README.md").write_text(f"# claims\n\n{BEGIN}\n{END}\n\nhand-written notes\n")
    return tmp_path / "reports"


def test_a_failed_gate_is_not_testable_and_a_report_without_analysis_has_no_verdict(tmp_path: Path):
    reports = _reports(tmp_path, 'B,A,2.5,1.0,4.0,0.001,0.002,1.1,,5,5,True,"not testable here: gate (c) failed; '
                                 'the test alone: above",recall_at_1\n')
    readme = tmp_path / "README.md"
    stale = CliRunner().invoke(app, ["verdicts", str(reports), "--check", str(readme)])
    assert stale.exit_code == 1 and "--write" in stale.stderr
    written = CliRunner().invoke(app, ["verdicts", str(reports), "--write", str(readme)])
    assert written.exit_code == 0, written.output
    text = readme.read_text()
    [[experiment, contrast, endpoint, interval, p_holm, *_, verdict]] = _rows(text)
    assert (experiment, contrast, endpoint, interval, p_holm) == ("`tested/`", "B − A", "R@1", "+2.50 [+1.00, +4.00]",
                                                                  "0.002")
    assert verdict.startswith("not testable here: gate (c) failed")
    assert "no verdict" in text and "`explored/`" in text and text.endswith("hand-written notes\n")
    assert CliRunner().invoke(app, ["verdicts", str(reports), "--check", str(readme)]).exit_code == 0


def test_broken_tables_and_a_readme_without_markers_are_one_line(tmp_path: Path):
    reports = _reports(tmp_path, "B,A,two,1.0,4.0,0.001,0.002,1.1,,5,5,True,above,recall_at_1\n")
    result = CliRunner().invoke(app, ["verdicts", str(reports)])
    assert result.exit_code == 2 and "preregistered.csv" in result.stderr and result.stderr.count("\n") == 1
    shutil.rmtree(reports / "tested")
    bare = tmp_path / "bare.md"
    bare.write_text("# no markers\n")
    result = CliRunner().invoke(app, ["verdicts", str(reports), "--write", str(bare)])
    assert result.exit_code == 2 and "bare.md" in result.stderr and result.stderr.count("\n") == 1
    assert bare.read_text() == "# no markers\n"
