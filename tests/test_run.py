"""`harness run` end to end on a tiny benchmark: results, checkpoints, mlflow, determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from harness.cli import app
from harness.data.cirr import load_cirr_split
from harness.evaluation.evaluate import evaluate
from harness.evaluation.protocol import EvalConfig
from harness.evaluation.results import read_rankings, read_result
from harness.methods.base import MethodContext
from harness.methods.registry import build_method
from harness.training.loop import load_checkpoint

from .conftest import EXPERIMENT, TINY_LVLM, write_yaml


def _cache_root(result) -> Path:
    """The generated benchmark a run read (its folder in the cache)."""
    from harness.data.datasets import DatasetConfig, dataset_root

    return dataset_root(DatasetConfig.model_validate(result.config["dataset"]), progress=False)


def test_run_writes_results_config_rankings_and_table(finished):
    _, output, stdout = finished
    runs = sorted((output / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        result = read_result(run / "result.json")
        assert result.run_id == run.name
        assert {"recall_at_1", "recall_at_50", "recall_subset_at_1", "avg"} <= set(result.metrics)
        captions = json.loads((_cache_root(result) / "captions" / "cap.rc2.val.json").read_text())
        groups = {entry["reference"] for entry in captions}
        assert result.num_queries == 40 and result.num_gallery == len(groups) * 16  # version 3: a group per reference
        assert result.train["steps"] == 2 * (160 // 32)
        assert result.environment["packages"]["torch"] and result.environment["hardware"]["cpu_cores"]
        assert result.timings["query_encode_ms_per_query"] > 0
        assert (run / "config.yaml").is_file()
        rankings = read_rankings(run / "rankings.jsonl.gz")
        assert len(rankings) == 40 and len(rankings[0]["top"]) == 50
        assert all(r["target_rank"] >= 0 for r in rankings)
        recomputed = 100 * sum(r["target_rank"] < 1 for r in rankings) / len(rankings)
        assert recomputed == pytest.approx(result.metrics["recall_at_1"])
    assert "| image_only | 0 |" in stdout and "| sum | 0 |" in stdout
    assert (output / "results.md").is_file()
    for run in (output / "runs").iterdir():  # the reference family, from random weights here
        assert "random-weight CLIP" in read_result(run / "result.json").provenance["image_embedding"]


def test_each_run_probes_what_its_fusion_sees_and_the_report_says_so(finished):
    """The evaluation's perception probe (a linear read-out of every grid cell from what the
    method's fusion reads of a gallery image) is kept with the run and printed in the report's
    set-up line."""
    _, output, _ = finished
    for run in sorted((output / "runs").iterdir()):
        probe = read_result(run / "result.json").method_statistics["perception"]
        assert {"cell", "shape", "colour", "size"} <= set(probe) and probe["test_images"] > 0
        assert all(0.0 <= probe[name] <= 100.0 for name in ("cell", "shape", "colour", "size"))
    setup = (output / "report" / "report.md").read_text().split("## ")[0]
    assert "Perception probe of what each run's fusion reads" in setup and "sum " in setup


def test_mlflow_has_parent_and_nested_runs(finished):
    from mlflow.tracking import MlflowClient

    _, output, _ = finished
    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 2
    for child in children:
        result = read_result(output / "runs" / child.data.tags["run_id"] / "result.json")
        assert child.data.metrics["recall_at_1"] == pytest.approx(result.metrics["recall_at_1"])
        assert child.data.params["method.name"] == result.method
        artifacts = [a.path for a in client.list_artifacts(child.info.run_id)]
        assert {"result.json", "config.yaml", "rankings.jsonl.gz"} <= set(artifacts)
        tags = child.data.tags
        assert (tags["method"], tags["family"], tags["seed"]) == (result.method, "reference" if result.method ==
                                                                   "image_only" else "late_fusion", "0")
        contexts = {i.tags[0].value: i.dataset for i in client.get_run(child.info.run_id).inputs.dataset_inputs}
        assert set(contexts) == {"train", "eval"} and contexts["eval"].name == "synthetic v3 val"
        assert json.loads(contexts["eval"].profile)["queries"] == 40
    # mlflow 3's UI opens this kind of experiment on its runs table; the YAML's description is its note
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] == parents[0].data.tags["mlflow.note.content"] == \
        "Two reference methods on a tiny embedded benchmark."
    parent_files = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert {"experiment.json", "results.md", "report"} <= parent_files
    report_files = {a.path for a in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/report.md", "report/report.html"} <= report_files


def test_the_training_loss_is_logged_per_step(finished):
    """The trained run's loss and learning rate, one point per optimizer step, read through the
    client API (the curves mlflow's UI draws while a run trains)."""
    from mlflow.tracking import MlflowClient

    _, output, stdout = finished
    client = MlflowClient(tracking_uri=f"sqlite:///{output / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    trained = next(r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("method") == "sum")
    result = read_result(output / "runs" / trained.data.tags["run_id"] / "result.json")
    losses = client.get_metric_history(trained.info.run_id, "train/loss")
    assert [m.step for m in losses] == list(range(1, result.train["steps"] + 1))
    steps = [json.loads(line) for line in (output / "runs" / result.run_id / "metrics.jsonl").read_text().splitlines()]
    assert [m.value for m in losses] == pytest.approx([s["train/loss"] for s in steps])
    assert len(client.get_metric_history(trained.info.run_id, "train/lr")) == result.train["steps"]
    assert result.train["step_log_seconds"] < 0.02 * result.train["seconds"]  # the logging's share of training
    assert f"mlflow ui --backend-store-uri sqlite:///{output / 'mlflow.db'}" in stdout
    assert "Creating initial MLflow database tables" not in stdout


def test_rerun_skips_finished_runs(finished):
    config, output, _ = finished
    before = {p: p.stat().st_mtime_ns for p in output.glob("runs/*/result.json")}
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(output.parent), "--quiet"])
    assert result.exit_code == 0
    assert result.stdout.count("finished earlier") == 2
    assert before == {p: p.stat().st_mtime_ns for p in output.glob("runs/*/result.json")}


def test_same_seed_same_metrics(finished, tmp_path: Path):
    config, output, _ = finished
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path), "--set", "tracking.enabled=false"])
    assert result.exit_code == 0
    for again in (tmp_path / "tiny" / "runs").iterdir():
        first = read_result(output / "runs" / again.name / "result.json")
        second = read_result(again / "result.json")
        assert second.metrics == first.metrics
        assert second.train["loss_per_epoch"] == first.train["loss_per_epoch"]


def test_checkpoint_restores_the_trained_model(finished):
    _, output, _ = finished
    run = next(p for p in (output / "runs").iterdir() if read_result(p / "result.json").method == "image_only")
    result = read_result(run / "result.json")
    split = load_cirr_split(Path(_dataset_root(result.config)), "val")
    torch.manual_seed(123)  # a different init, overwritten by the checkpoint
    method = build_method("image_only", result.config["method"]["params"], MethodContext(64, []))
    state = load_checkpoint(run / "checkpoints", method)
    assert state["epoch"] == 2 and state["step"] == result.train["steps"]
    # the restored model reproduces the run's metrics exactly (a fresh init would not)
    evaluation = evaluate(method, split, EvalConfig.model_validate(result.config["eval"]), progress=False)
    assert evaluation.metrics == result.metrics


def test_a_gallery_on_disk_scored_in_blocks_gives_the_same_evaluation(finished, monkeypatch):
    """eval.gallery_on_disk: the gallery's embeddings go to a scratch file a batch at a time, are
    scored from it in several blocks, and the file is gone afterwards; nothing else changes."""
    from harness.core.paths import cache_dir
    from harness.evaluation import embedding_file
    from harness.evaluation import ranking as scoring

    _, output, _ = finished
    run = next(p for p in (output / "runs").iterdir() if read_result(p / "result.json").method == "image_only")
    result = read_result(run / "result.json")
    split = load_cirr_split(Path(_dataset_root(result.config)), "val")
    method = build_method("image_only", result.config["method"]["params"], MethodContext(64, []))
    load_checkpoint(run / "checkpoints", method)
    config = EvalConfig.model_validate(result.config["eval"])
    in_ram = evaluate(method, split, config, progress=False)
    written: list[int] = []
    write = embedding_file.EmbeddingFile.write
    monkeypatch.setattr(embedding_file.EmbeddingFile, "write",
                        lambda self, start, chunk: (written.append(len(chunk)), write(self, start, chunk)))
    monkeypatch.setattr(scoring, "GALLERY_BLOCK", 7)
    on_disk = evaluate(method, split, config.model_copy(update={"gallery_on_disk": 1, "embedding_cache": False,
                                                                "batch_size": 16}), progress=False)
    assert sum(written) == in_ram.num_gallery and len(written) > 1  # batch by batch into the file
    assert on_disk.metrics == in_ram.metrics
    _same_rankings_up_to_near_ties(on_disk.rankings, in_ram.rankings)
    assert not any((cache_dir() / "scratch").glob("*.npy"))  # the scratch file is removed


def _same_rankings_up_to_near_ties(ours: list[dict], theirs: list[dict]) -> None:
    """Every field equal, and each top-50 list equal but for swaps of neighbours: another batch or
    block shape changes fp32 rounding on some CPUs (an AVX2 EPYC swapped two near-tied images at
    rank 16 in one of 64 queries), never more than that."""
    assert len(ours) == len(theirs)
    swapped = 0
    for a, b in zip(ours, theirs, strict=True):
        assert {k: v for k, v in a.items() if k != "top"} == {k: v for k, v in b.items() if k != "top"}
        top, other = list(a["top"]), b["top"]
        for i in range(len(top) - 1):
            if top[i] != other[i] and top[i] == other[i + 1] and top[i + 1] == other[i]:
                top[i], top[i + 1] = top[i + 1], top[i]
                swapped += 1
        assert top == other
    assert swapped <= max(1, len(ours) // 20)


def _dataset_root(config: dict) -> str:
    from harness.data.datasets import DatasetConfig, dataset_root

    return str(dataset_root(DatasetConfig.model_validate(config["dataset"]), progress=False))


def test_missing_dataset_root_is_a_user_error(tmp_path: Path):
    config = write_yaml(tmp_path / "x.yaml", EXPERIMENT.replace("name: synthetic", "name: cirr\n  root: "
                                                                                   f"{tmp_path / 'nope'}"))
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "dataset.root" in result.stderr and "does not exist" in result.stderr


def test_run_writes_a_report_with_table_and_plot(finished):
    _, output, _ = finished
    report = output / "report"
    text = (report / "report.md").read_text()
    assert "| image_only | 0 |" in text and "Machine:" in text
    assert "Findings (generated" in text and "R@1, best first: " in text  # two methods, one setting each: ranked
    assert "against **image_only**" in text and "## Statistics over queries" in text and "## Efficiency" in text
    stems = {"pareto", "recall_by_edit_type", "intent_vs_retention", "retrieval_examples",
             "top1_kinds"}  # v2: error kinds
    assert {p.stem for p in report.glob("*.png")} == stems == {p.stem for p in report.glob("*.pdf")}
    assert all((report / f"{stem}.png").read_bytes()[:4] == b"\x89PNG" for stem in stems)
    assert (report / "results.csv").read_text().count("\n") == 3


LVLM_EXPERIMENT = """
experiment: lvlm""" + TINY_LVLM + """train: {max_steps: 6, batch_size: 16, num_threads: 2}
grid:
  method.params.pool_size: [1, 4]
tracking: {enabled: false}
report: {dir: REPORTS}
"""


def test_cir_lvlm_end_to_end_writes_results_and_report(tmp_path: Path):
    config = write_yaml(tmp_path / "lvlm.yaml", LVLM_EXPERIMENT.replace("REPORTS", str(tmp_path / "reports")))
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    results = [read_result(p) for p in (tmp_path / "out" / "lvlm" / "runs").glob("*/result.json")]
    assert sorted(r.config["method"]["params"]["pool_size"] for r in results) == [1, 4]
    for r in results:
        assert r.method == "cir_lvlm" and "recall_at_1" in r.metrics
        assert sum(r.method_statistics["prompt_usage"]) == r.num_queries
        assert "[EMB]" in r.provenance["embedding"] and r.provenance["task_prompts"]["on"] is True
        assert r.provenance["vision"]["image"]["mean"] == [0.5, 0.5, 0.5] and r.provenance["image_mode"] == "squash"
    report = tmp_path / "reports" / "lvlm"
    assert (report / "recall_vs_pool_size.png").is_file()
    text = (report / "report.md").read_text()
    assert "Prompt-pool usage" in text and "R@1, best first: method.params.pool_size=" in text
    # Figure 5 against its uniform null for both runs; specificity only where there is a pool to choose from
    assert "## Figure 5 against uniform attention" in text and "## Prompt specificity" in text
    specificity = (report / "tables" / "specificity.csv").read_text().splitlines()
    assert len(specificity) == 2 and specificity[1].startswith("method.params.pool_size=4,0,")
    # the stage-0 warm start was built once and is reused by the second run
    stage0 = list((Path(os.environ["CIR_HARNESS_CACHE"]) / "backbones").glob("stage0-*/stage0.json"))
    assert stage0


def test_report_rebuilds_from_results_json_alone(finished, tmp_path: Path):
    _, output, _ = finished
    original = (output / "report" / "report.md").read_bytes()
    result = CliRunner().invoke(app, ["report", str(output), "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "report.md").read_bytes() == original
    written = sorted(p.relative_to(output / "report") for p in (output / "report").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for path in written:  # every file the same, figures and the self-contained page included
        if path.suffix != ".pdf":  # PDFs carry their own object ids; their PNG twins are compared
            assert (tmp_path / "again" / path).read_bytes() == (output / "report" / path).read_bytes(), path
    missing = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "experiment.json" in missing.stderr


def test_harness_report_loads_neither_torch_nor_the_training_stack(finished, tmp_path: Path):
    """A report is built from results files alone: in a fresh process, `harness report` writes
    it without importing torch, a method, a training or evaluation loop, or an experiment runner."""
    import subprocess
    import sys

    _, output, _ = finished
    script = ("import sys\nfrom harness.cli import app\n"
              "try:\n    app(['report', sys.argv[1], '--out', sys.argv[2]])\nexcept SystemExit as end:\n"
              "    assert not end.code, end.code\n"
              "heavy = ('torch', 'transformers.modeling_utils', 'peft', 'harness.methods', 'harness.training',\n"
              "         'harness.pretraining', 'harness.backbones', 'harness.experiments', "
              "'harness.evaluation.evaluate',\n         'harness.evaluation.metrics')\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith(heavy)))\n")
    done = subprocess.run([sys.executable, "-c", script, str(output), str(tmp_path / "report")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "report" / "report.md").is_file()


RESUME = EXPERIMENT.replace("epochs: 2", "epochs: 3").replace("  method.name: [image_only, sum]\n",
                                                              "  method.name: [sum]\n")


def test_an_interrupted_run_resumes_and_ends_with_the_uninterrupted_metrics(tmp_path: Path, monkeypatch):
    import harness.training.loop as training
    from harness.experiments.runner import run_experiment

    config = write_yaml(tmp_path / "resume.yaml", RESUME)
    [whole] = run_experiment(config, output=tmp_path / "whole", progress=False, echo=lambda *_: None)

    original = training.save_checkpoint

    def crash_after_first_epoch(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt  # the process dies right after its first checkpoint

    monkeypatch.setattr(training, "save_checkpoint", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, output=tmp_path / "cut", progress=False, echo=lambda *_: None)
    monkeypatch.setattr(training, "save_checkpoint", original)
    lines: list[str] = []
    [resumed] = run_experiment(config, output=tmp_path / "cut", progress=False, echo=lines.append)
    assert any("resuming from its last checkpoint" in line for line in lines)
    assert resumed.train["resumed_from_step"] == 5  # 160 queries / batch 32: one epoch
    assert resumed.metrics == whole.metrics
    assert resumed.train["loss_per_epoch"] == whole.train["loss_per_epoch"]
    # the training time includes the epoch trained before the crash (as recorded in its checkpoint)
    before = resumed.train["seconds_before_resume"]
    assert 0 < before < resumed.train["seconds"]


def test_overwrite_modes(tmp_path: Path):
    from harness.experiments.runner import run_experiment

    config = write_yaml(tmp_path / "modes.yaml", RESUME.replace("epochs: 3", "epochs: 1"))
    [first] = run_experiment(config, output=tmp_path / "out", progress=False, echo=lambda *_: None)
    run_dir = tmp_path / "out" / "tiny" / "runs" / first.run_id
    (run_dir / "result.json").unlink()  # now unfinished
    lines: list[str] = []
    assert run_experiment(config, output=tmp_path / "out", progress=False, echo=lines.append, overwrite="never") == []
    assert any("left as it is" in line for line in lines) and not (run_dir / "result.json").exists()
    [again] = run_experiment(config, output=tmp_path / "out", progress=False, echo=lambda *_: None, overwrite="always")
    assert again.metrics == first.metrics and again.train["resumed_from_step"] == 0


def test_a_run_sigkilled_mid_training_resumes_to_the_uninterrupted_metrics(tmp_path: Path):
    """A real SIGKILL of `harness run` after its first checkpoint; the re-run resumes from it."""
    import signal
    import subprocess
    import sys
    import time

    from harness.experiments.runner import run_experiment

    config = write_yaml(tmp_path / "resume.yaml", RESUME.replace("epochs: 3", "epochs: 8"))
    [whole] = run_experiment(config, output=tmp_path / "whole", progress=False, echo=lambda *_: None)
    process = subprocess.Popen([sys.executable, "-m", "harness", "run", str(config), "--output", str(tmp_path / "cut"),
                                "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if list((tmp_path / "cut").glob("tiny/runs/*/checkpoints/last/state.pt")):
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    [resumed] = run_experiment(config, output=tmp_path / "cut", progress=False, echo=lambda *_: None)
    assert 0 < resumed.train["resumed_from_step"] < resumed.train["steps"] == whole.train["steps"]
    assert resumed.metrics == whole.metrics
    assert resumed.train["loss_per_epoch"] == whole.train["loss_per_epoch"]


JOBS = """
experiment: jobs""" + TINY_LVLM + """grid:
  method.params.pool_size: [1, 4]
train: {max_steps: 6, batch_size: 16}
eval: {batch_size: 16, latency_queries: 2}
tracking: {enabled: false}
"""


def test_jobs_train_runs_side_by_side_with_the_results_of_one_at_a_time(tmp_path: Path):
    """--jobs 2 runs two processes of one torch thread each; their results equal serial runs at
    one thread (the thread count is what a run's last bits depend on, not --jobs)."""
    from harness.core.device import resolve_precision

    config = write_yaml(tmp_path / "jobs.yaml", JOBS)
    side = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "side"), "--quiet", "--jobs", "2"])
    assert side.exit_code == 0, side.output
    assert "2 runs, 2 at a time (1 torch thread(s) each" in side.stdout
    serial = CliRunner().invoke(app,
                                ["run", str(config), "--output", str(tmp_path / "serial"), "--quiet", "--jobs", "1",
                                      "--set", "train.num_threads=1"])
    assert serial.exit_code == 0, serial.output
    side_by_label, serial_by_label = ({r.label: r for r in map(read_result,
                                                               (tmp_path / where).glob("jobs/runs/*/result.json"))}
                                      for where in ("side", "serial"))  # num_threads=1 changes the run ids
    assert sorted(side_by_label) == sorted(serial_by_label) and len(side_by_label) == 2
    for label, one in side_by_label.items():
        two = serial_by_label[label]
        assert one.environment["hardware"]["torch_threads"] == 1 == two.environment["hardware"]["torch_threads"]
        expected = resolve_precision("auto", "cpu")  # what each run trained and evaluated in is recorded
        assert one.environment["precision"] == {"train": expected,
                                                "eval": expected} and one.train["precision"] == expected
        assert one.metrics == two.metrics and one.train["loss_per_epoch"] == two.train["loss_per_epoch"]
    assert (tmp_path / "side" / "jobs" / "report" / "report.md").is_file()


def test_bad_jobs_value_is_a_user_error(tmp_path: Path):
    result = CliRunner().invoke(app, ["run", str(write_yaml(tmp_path / "jobs.yaml", JOBS)), "--jobs", "two"])
    assert result.exit_code == 2 and "--jobs" in result.output and "Traceback" not in result.output
    # CIR_HARNESS_JOBS is --jobs' default (the suite sets it to 1): a bad value is refused the same way
    from_env = CliRunner().invoke(app, ["run", str(tmp_path / "jobs.yaml")], env={"CIR_HARNESS_JOBS": "two"})
    assert from_env.exit_code == 2 and "--jobs 'two' is not a positive number" in from_env.output


def test_file_lock_makes_builders_take_turns(tmp_path: Path):
    import threading
    import time

    from harness.core.paths import file_lock

    events: list[str] = []

    def build(name: str, delay: float) -> None:
        time.sleep(delay)
        with file_lock(tmp_path / "entry.lock"):
            events.append(f"{name} in")
            time.sleep(0.3)
            events.append(f"{name} out")

    threads = [threading.Thread(target=build, args=("first", 0.0)),
               threading.Thread(target=build, args=("second", 0.1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert events == ["first in", "first out", "second in", "second out"]


def test_runs_that_build_a_missing_warm_start_go_first(tmp_path: Path):
    from harness.experiments.runner import missing_warm_starts, plan_experiment, warm_starts_first

    config = write_yaml(tmp_path / "order.yaml", JOBS.replace("grid:\n  method.params.pool_size: [1, 4]\n", """grid:
  method:
    - {name: image_only, params: {start: scratch}}
    - {name: cir_lvlm, params: {stage0: {seed: 77}}}
"""))
    specs = plan_experiment(config).specs
    assert [bool(missing_warm_starts(spec)) for spec in specs] == [False, True]  # this stage-0 seed is built nowhere
    assert [number for number, _ in warm_starts_first(list(enumerate(specs, 1)))] == [2, 1]


def test_a_failing_grid_point_does_not_stop_the_others(tmp_path: Path):
    """A broken run is reported in one line (its traceback in error.log when it is no user
    error), the other runs finish and report, and the command exits 1."""
    text = EXPERIMENT.replace("  method.name: [image_only, sum]", "  method.params.vision_heads: [3, 2]")
    config = write_yaml(tmp_path / "grid.yaml", text)  # 3 heads do not divide the width 32: that run breaks
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert result.output.count("FAILED") == 1 and "1 of 2 runs failed" in result.output
    finished = [p for p in (tmp_path / "out" / "tiny" / "runs").iterdir() if (p / "result.json").is_file()]
    broken = [p for p in (tmp_path / "out" / "tiny" / "runs").iterdir() if (p / "error.log").is_file()]
    assert len(finished) == 1 and len(broken) == 1
    assert "Traceback" in (broken[0] / "error.log").read_text()
    assert (tmp_path / "out" / "tiny" / "report" / "report.md").is_file()


def test_a_grid_point_with_a_broken_input_exits_1_beside_finished_runs_and_logs_its_line(tmp_path: Path):
    """One run of a grid fails on a user error (no checkpoint folder) while the other finishes:
    the grid did part of its job, so exit 1 (as README says), and the failed run's error.log
    holds its line; alone, the same broken run is exit 2 (a broken input, nothing finished)."""
    text = EXPERIMENT.replace("  method.name: [image_only, sum]", """  method:
    - {name: image_only, params: {start: scratch, embed_dim: 32, vision_hidden: 32, text_hidden: 32}}
    - {name: clip4cir, params: {backbone: {source: pretrained, vision_dir: /nonexistent/clip}}}""")
    config = write_yaml(tmp_path / "grid.yaml", text.replace("epochs: 2", "epochs: 1"))
    result = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    runs = tmp_path / "out" / "tiny" / "runs"
    [broken] = [p for p in runs.iterdir() if (p / "error.log").is_file()]
    assert "method.params.backbone.vision_dir" in (broken / "error.log").read_text()
    assert not (broken / "result.json").exists() and len(list(runs.glob("*/result.json"))) == 1
    alone = CliRunner().invoke(app, ["run", str(config), "--output", str(tmp_path / "out"),
                                     "--set", "grid={method: [{name: clip4cir, params: {backbone: {source: "
                                     "pretrained, vision_dir: /nonexistent/clip}}}]}"])
    assert alone.exit_code == 2, alone.output


def test_the_per_run_line_shows_the_protocols_own_headline_metrics():
    from harness.experiments.runner import headline

    assert headline({"recall_at_1": 9.14, "recall_subset_at_1": 33.4, "avg": 30.0}) == "R@1 9.1  Rs@1 33.4"
    assert headline({"recall_at_10": 41.2, "recall_at_50": 66.0}) == "R@10 41.2  R@50 66.0"  # FashionIQ: no R@1
    assert headline({"map_at_5": 12.0, "map_at_10": 13.5, "map_at_25": 14.0}) == "mAP@5 12.0  mAP@10 13.5"  # CIRCO


def test_a_partial_rerun_adds_to_the_report_which_sits_beside_the_results_root(tmp_path: Path, monkeypatch):
    """The second invocation runs one more method: experiment.json and the report keep the first
    one's run. A relative report.dir lands beside the --output root, not in the working directory."""
    from harness.experiments.runner import run_experiment

    monkeypatch.chdir(tmp_path)
    text = EXPERIMENT.replace("epochs: 2", "epochs: 1") + "report: {dir: reports}\n"
    config = write_yaml(tmp_path / "partial.yaml", text)
    output = tmp_path / "scratch" / "runs"
    run_experiment(config, ["grid={method.name: [image_only]}"], output=output, progress=False, echo=lambda *_: None)
    run_experiment(config, ["grid={method.name: [sum]}"], output=output, progress=False, echo=lambda *_: None)
    manifest = json.loads((output / "tiny" / "experiment.json").read_text())
    assert len(manifest["runs"]) == 2
    report = (tmp_path / "scratch" / "reports" / "tiny" / "report.md").read_text()
    assert "image_only" in report and "sum" in report
    assert not (tmp_path / "reports").exists()


def test_jobs_on_a_gpu_machine_give_each_worker_its_own_gpu(monkeypatch):
    """The assignment, and the worker set-up that makes it (CUDA_VISIBLE_DEVICES before CUDA starts);
    the spread itself needs GPUs (none here)."""
    import queue

    from harness.experiments.parallel import _start_worker, gpu_slots

    assert gpu_slots(4, 2) == [0, 1, 0, 1] and gpu_slots(2, 8) == [0, 1] and gpu_slots(3, 0) == []
    slots: queue.Queue = queue.Queue()
    slots.put(3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    _start_worker(torch.get_num_threads(), slots)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_two_invocations_started_together_on_a_fresh_output_both_finish(tmp_path: Path):
    """Each sets up the experiment's mlflow database; started at the same moment they used to
    race in mlflow's schema creation and one crashed."""
    import subprocess
    import sys

    config = write_yaml(tmp_path / "tiny.yaml", EXPERIMENT.replace("  method.name: [image_only, sum]",
                                                                   "  method.name: [image_only]"))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    processes = [subprocess.Popen([sys.executable, "-m", "harness", "run", str(config), "--output",
                                   str(tmp_path / "out"),
                                   "--quiet", "--set", f"seeds=[{seed}]"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for seed in (0, 1)]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-2000:]
    results = [read_result(p) for p in (tmp_path / "out" / "tiny" / "runs").glob("*/result.json")]
    assert sorted(r.seed for r in results) == [0, 1]


def test_score_warns_when_two_runs_encode_differently(finished, tmp_path: Path):
    """Two run folders whose results differ only in where the image embedding is taken: both
    re-score to their result.json (exit 0) and a warning names the field."""
    import shutil

    _, output, _ = finished
    first = next(p for p in sorted((output / "runs").iterdir()) if (p / "result.json").is_file())
    other = tmp_path / "other"
    shutil.copytree(first, other)
    data = json.loads((other / "result.json").read_text())
    data["provenance"]["image_embedding"] = "mean of the patch tokens before post_layernorm"  # another pooling point
    (other / "result.json").write_text(json.dumps(data))
    same = CliRunner().invoke(app, ["score", str(first), str(first)])
    assert same.exit_code == 0 and "warning" not in same.output
    result = CliRunner().invoke(app, ["score", str(first), str(other)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("matches result.json") == 2
    assert "warning:" in result.stderr and "image_embedding" in result.stderr
