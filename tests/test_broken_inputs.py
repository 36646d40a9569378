"""Every broken input is one line on stderr naming its file, exit code 2, no traceback, and
nothing already written is changed: configs, annotation files, images, checkpoints, results,
rankings, experiment files and command-line arguments, as a careless or hostile user gives them."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app

from .conftest import EXPERIMENT, write_yaml


@dataclass(frozen=True)
class Case:
    """A broken input: ``make(world)`` breaks something and returns (CLI arguments, the name the
    error line must contain). ``resumes``: the case removed a run's result to make it resume, so
    the report of the runs still finished is rebuilt (and may differ); every other file must not."""

    name: str
    make: Callable[[dict[str, Path]], tuple[list[str], str]]
    resumes: bool = False


def _digest(folder: Path, skip: set[Path]) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p not in skip and "mlruns" not in p.parts
            and not p.name.endswith(".db")}


@pytest.fixture
def world(finished, tiny_benchmark: Path, tmp_path: Path) -> dict[str, Path]:
    """A copy of a finished experiment (its config, output and one run) and of a dataset."""
    config, output, _ = finished
    copy = tmp_path / "out" / output.name
    shutil.copytree(output, copy)
    data = tmp_path / "data"
    shutil.copytree(tiny_benchmark, data)
    run = sorted((copy / "runs").iterdir())[0]
    return {"config": write_yaml(tmp_path / "tiny.yaml", EXPERIMENT), "output": tmp_path / "out", "experiment": copy,
            "run": run, "data": data, "tmp": tmp_path}


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    return _write(path, data[: max(1, int(len(data) * keep))])


def _run(world: dict[str, Path], *extra: str) -> list[str]:
    return ["run", str(world["config"]), "--output", str(world["output"]), "--quiet", *extra]


def _unfinished(world: dict[str, Path]) -> Path:
    """The run folder without its result: `harness run` resumes it from its last checkpoint."""
    run = world["run"]
    (run / "result.json").unlink()
    return run / "checkpoints" / "last"


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (and holds almost nothing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR",
                                        header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _gallery_image(world: dict[str, Path]) -> Path:
    return sorted((world["data"] / "dev").glob("*.png"))[0]


def _check(world: dict[str, Path]) -> list[str]:
    return ["data", "check", "--dataset", "synthetic", "--root", str(world["data"]), "--split", "val"]


def _run_on_data(world: dict[str, Path]) -> list[str]:
    """`harness run` of a one-run experiment on the copied dataset (a scratch reference method)."""
    config = write_yaml(world["tmp"] / "on_data.yaml", f"""
experiment: on_data
dataset: {{name: cirr, root: {world["data"]}}}
method: {{name: image_only, params: {{start: scratch, embed_dim: 16, vision_hidden: 16, vision_heads: 2}}}}
train: {{max_steps: 1, batch_size: 8}}
tracking: {{enabled: false}}
""")
    return ["run", str(config), "--output", str(world["tmp"] / "on_data_out"), "--quiet"]


def _captions(world: dict[str, Path], split: str = "val") -> Path:
    return world["data"] / "captions" / f"cap.rc2.{split}.json"


def _edit_captions(world: dict[str, Path], change: Callable[[list], object]) -> Path:
    path = _captions(world)
    entries = json.loads(path.read_text())
    path.write_text(json.dumps(change(entries)))
    return path


def _config(world: dict[str, Path], content: bytes) -> list[str]:
    _write(world["config"], content)
    return _run(world)


CASES = [
    # experiment configs
    Case("config with non-UTF-8 bytes", lambda w: (_config(w, b"experiment: tiny\nnote: \xff\xfe\n"), "tiny.yaml")),
    Case("config not YAML", lambda w: (_config(w, b"experiment: [tiny\n"), "tiny.yaml")),
    Case("config a YAML list", lambda w: (_config(w, b"- a\n- b\n"), "tiny.yaml")),
    Case("config with an unknown field", lambda w: (_config(w, EXPERIMENT.replace("seeds:", "seedz:").encode()),
                                                    "tiny.yaml")),
    Case("a seed listed twice", lambda w: (_config(w, EXPERIMENT.replace("seeds: [0]", "seeds: [0, 0]").encode()),
                                           "tiny.yaml")),
    Case("a key given twice", lambda w: (_config(w, (EXPERIMENT + "seeds: [1]\n").encode()), "tiny.yaml")),
    Case("a 2 MiB config", lambda w: (_config(w, EXPERIMENT.encode() + b"# " + b"x" * 2**21 + b"\n"), "tiny.yaml")),
    Case("config missing", lambda w: (["run", str(w["tmp"] / "absent.yaml")], "absent.yaml")),
    Case("config naming a folder", lambda w: (["run", str(w["tmp"])], w["tmp"].name)),
    Case("include that does not exist", lambda w: (_config(w, b"include: nowhere.yaml\n" + EXPERIMENT.encode()),
                                                   "nowhere.yaml")),
    Case("--set without =", lambda w: (_run(w, "--set", "train.epochs"), "--set")),
    Case("--set of an unknown setting", lambda w: (_run(w, "--set", "train.epoks=2"), "train.epoks")),
    Case("--output naming a file", lambda w: (["run", str(w["config"]), "--output",
                                               str(_write(w["tmp"] / "a-file", b"x"))], "a-file")),
    # annotation files and images (data check reads them as a run would)
    Case("captions not JSON", lambda w: (_check(w) if _write(_captions(w), b"{not json") else [], "cap.rc2.val.json")),
    Case("captions a JSON object", lambda w: (_check(w) if _write(_captions(w), b"{}") else [], "cap.rc2.val.json")),
    Case("captions not UTF-8", lambda w: (_check(w) if _write(_captions(w), b"[\xff]") else [], "cap.rc2.val.json")),
    Case("a query without pairid", lambda w: (_check(w) if _edit_captions(
        w, lambda e: [{k: v for k, v in e[0].items() if k != "pairid"}, *e[1:]]) else [], "cap.rc2.val.json")),
    Case("a query whose caption is a number", lambda w: (_check(w) if _edit_captions(
        w, lambda e: [{**e[0], "caption": 7}, *e[1:]]) else [], "cap.rc2.val.json")),
    Case("image split not JSON", lambda w: (_check(w) if _write(w["data"] / "image_splits" / "split.rc2.val.json",
                                                                 b"[") else [], "split.rc2.val.json")),
    Case("query_edits entry without pairid", lambda w: (_check(w) if _write(
        w["data"] / "query_edits.rc2.val.json", json.dumps([{"edits": []}]).encode()) else [],
        "query_edits.rc2.val.json")),
    Case("a gallery PNG claiming 100000 x 100000 pixels", lambda w: (_run_on_data(w) if _write(
        _gallery_image(w), _png_claiming(100_000, 100_000)) else [], _gallery_image(w).name)),
    Case("a truncated gallery PNG", lambda w: (_run_on_data(w) if _truncate(_gallery_image(w), 0.3) else [],
                                               _gallery_image(w).name)),
    # checkpoints of a run that resumes
    Case("truncated state.pt", lambda w: (_run(w) if _truncate(_unfinished(w) / "state.pt") else [], "state.pt"),
         resumes=True),
    Case("foreign state.pt", lambda w: (_run(w) if _write(_unfinished(w) / "state.pt", b"hello") else [], "state.pt"),
         resumes=True),
    Case("truncated model.safetensors", lambda w: (_run(w) if _truncate(_unfinished(w) / "model.safetensors") else [],
                                                   "model.safetensors"), resumes=True),
    Case("foreign model.safetensors", lambda w: (_run(w) if _write(_unfinished(w) / "model.safetensors", b"{}") else [],
                                                 "model.safetensors"), resumes=True),
    # results, rankings, experiment files
    Case("truncated result.json, run", lambda w: (_run(w) if _truncate(w["run"] / "result.json") else [],
                                                  "result.json")),
    Case("truncated result.json, report", lambda w: (["report", str(w["experiment"])] if _truncate(
        w["run"] / "result.json") else [], "result.json")),
    Case("result.json of another schema", lambda w: (["report", str(w["experiment"])] if _write(
        w["run"] / "result.json", b'{"schema_version": 2, "metrics": 3}') else [], "result.json")),
    Case("truncated rankings, score", lambda w: (["score", str(w["run"])] if _truncate(
        w["run"] / "rankings.jsonl.gz") else [], "rankings.jsonl.gz")),
    Case("a bad JSON line in valid gzip", lambda w: (["score", str(w["run"])] if _write(
        w["run"] / "rankings.jsonl.gz", gzip.compress(b'{"pairid": 1, "top": []}\n{oops\n')) else [],
        "rankings.jsonl.gz")),
    Case("rankings lines that are lists", lambda w: (["score", str(w["run"])] if _write(
        w["run"] / "rankings.jsonl.gz", gzip.compress(b"[1, 2]\n")) else [], "rankings.jsonl.gz")),
    Case("truncated experiment.json", lambda w: (["report", str(w["experiment"])] if _truncate(
        w["experiment"] / "experiment.json") else [], "experiment.json")),
    Case("experiment.json a list", lambda w: (["report", str(w["experiment"])] if _write(
        w["experiment"] / "experiment.json", b"[]") else [], "experiment.json")),
    Case("run config.yaml not YAML", lambda w: (["score", str(w["run"])] if _write(
        w["run"] / "config.yaml", b"a: [") else [], "config.yaml")),
    Case("run config.yaml of another shape", lambda w: (["score", str(w["run"])] if _write(
        w["run"] / "config.yaml", b"method: 3\n") else [], "config.yaml")),
    # command-line arguments
    Case("score a path that does not exist", lambda w: (["score", str(w["tmp"] / "nowhere")], "nowhere")),
    Case("report of a folder without experiment.json", lambda w: (["report", str(w["tmp"])], w["tmp"].name)),
    Case("data synthetic --out naming a file", lambda w: (["data", "synthetic", "--out", str(_write(
        w["tmp"] / "taken", b"x")), "--size", "tiny"], "taken")),
    Case("data synthetic --workers 0",
         lambda w: (["data", "synthetic", "--out", str(w["tmp"] / "new"), "--size", "tiny",
                                                   "--workers", "0"], "--workers")),
    Case("data check of a missing root", lambda w: (["data", "check", "--dataset", "cirr", "--root",
                                                     str(w["tmp"] / "none")], "none")),
    Case("data check of an unknown dataset", lambda w: (["data", "check", "--dataset", "cirrr", "--root",
                                                         str(w["data"])], "--dataset")),
    Case("eval of a run without a checkpoint", lambda w: (["eval", str(w["run"]), "--split", "test1"] if shutil.rmtree(
        w["run"] / "checkpoints") is None else [], "checkpoints")),
    Case("submit of a folder that is not a run", lambda w: (["submit", str(w["tmp"])], w["tmp"].name)),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_broken_input_is_one_line_naming_its_file(case: Case, world: dict[str, Path]):
    before = _digest(world["experiment"], set())
    args, named = case.make(world)
    broken = {p for p in world["experiment"].rglob("*") if p.is_file() and _digest_one(p) != before.get(
        str(p.relative_to(world["experiment"])))}
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.stderr[-2000:], result.stdout[-500:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert named in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    after = _digest(world["experiment"], broken)
    if "gallery" in case.name:  # a broken gallery image is found before training starts
        assert not list((world["tmp"] / "on_data_out").rglob("state.pt"))
    changed = sorted(k for k in after if before.get(k, "new") != after[k]
                     and not (case.resumes and (k.startswith("report/") or k == "results.md"))
                     and not (k not in before and k.endswith("/error.log")))  # a failed run's line, new
    assert not changed, changed  # nothing already written was changed


def _digest_one(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_read_only_output_folder_is_one_line(world: dict[str, Path]):
    locked = world["tmp"] / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if (locked / "probe").parent.stat().st_mode & stat.S_IWUSR or _writable(locked):
            pytest.skip("this user can write into a read-only folder (root): the case cannot be built here")
        result = CliRunner().invoke(app, ["run", str(world["config"]), "--output", str(locked)])
        assert result.exit_code == 2 and "locked" in result.stderr and result.stderr.count("\n") == 1
    finally:
        locked.chmod(stat.S_IRWXU)


def _writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_a_cutoff_the_rankings_cannot_verify_is_refused(world: dict[str, Path]):
    """eval.ks holding 100000 used to run and report R@100000 = 100 that `harness score` could never re-check."""
    write_yaml(world["config"], EXPERIMENT.replace("eval: {batch_size: 64}", "eval: {batch_size: 64, ks: [1, 100000]}"))
    result = CliRunner().invoke(app, _run(world, "--dry-run"))
    assert result.exit_code == 2 and "eval" in result.stderr and "100000" in result.stderr
    assert result.stderr.count("\n") == 1
    preset = CliRunner().invoke(app, _run(world, "--dry-run", "--set", "eval.save_top=10"))  # the preset's K = 50
    assert preset.exit_code == 2 and "save_top" in preset.stderr, preset.stderr


SWEEP_SPACE = """
sweep:
  trials: 2
  space:
    {dimension}
"""


@pytest.mark.parametrize("dimension,field", [
    ("train.lrr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}", "sweep.space.train.lrr"),
    ("method.name: {type: int, low: 1, high: 3}", "sweep.space.method.name"),
    ("train.epochs: {type: categorical, choices: [1, two]}", "sweep.space.train.epochs"),
], ids=["unknown path", "wrong type", "a wrong choice"])
def test_a_sweep_space_the_schema_refuses_fails_before_the_study_exists(tmp_path: Path, dimension: str, field: str):
    """Each dimension's ends and choices are checked against the config schema before optuna
    opens the study: one line naming the file and the field, exit 2, no optuna traceback, and no
    optuna.db (so a corrected re-run does not continue a study holding a failed trial)."""
    config = write_yaml(tmp_path / "space.yaml", EXPERIMENT.replace("grid:\n  method.name: [image_only, sum]\n", "")
                        + SWEEP_SPACE.format(dimension=dimension))
    result = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out")])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith(f"error: {config}: {field}: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr and "Trial" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()  # no optuna.db, no run folder
