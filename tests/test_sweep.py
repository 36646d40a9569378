"""`harness sweep`: a study of tiny trials finishes, continues after an interruption, adds nothing when done."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from harness.cli import app

from .conftest import skip_unless_ci, write_yaml

SWEEP = """
experiment: tinysweep
dataset:
  name: synthetic
  synthetic: {seed: 5, num_train: 160, num_val: 40, num_test: 8}
method: {name: sum, params: {start: scratch, embed_dim: 32, vision_hidden: 32, text_hidden: 32, vision_heads: 2,
                             text_heads: 2}}
train: {epochs: 2, batch_size: 32, num_threads: 2, checkpoint: true}
eval: {batch_size: 64}
tracking: {enabled: false}
sweep:
  trials: 3
  space:
    train.lr: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}
    method.params.embed_dim: {type: categorical, choices: [16, 32]}
  objectives: [{metric: avg, direction: maximize}]
  seed: 0
"""


def _study(output: Path) -> optuna.Study:
    return optuna.load_study(study_name="tinysweep", storage=f"sqlite:///{output / 'tinysweep' / 'optuna.db'}")


def test_sweep_finishes_and_a_rerun_adds_nothing(tmp_path: Path):
    config = write_yaml(tmp_path / "sweep.yaml", SWEEP)
    first = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out")])
    assert first.exit_code == 0, first.output
    study = _study(tmp_path / "out")
    assert len(study.trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert "best: trial" in first.stdout
    assert all(set(t.intermediate_values) == {1, 2} for t in study.trials)  # per-epoch reports for the pruner
    runs = {t.user_attrs["run_id"] for t in study.trials}
    assert all((tmp_path / "out" / "tinysweep" / "runs" / r / "result.json").is_file() for r in runs)
    again = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out")])
    assert again.exit_code == 0 and "3 finished trials, 0 interrupted ones queued again, 0 to run" in again.stdout
    assert len(_study(tmp_path / "out").trials) == 3


def test_an_interrupted_sweep_continues_to_the_requested_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import harness.experiments.sweep as sweeping
    from harness.experiments.sweep import run_sweep

    config = write_yaml(tmp_path / "sweep.yaml", SWEEP)
    original = sweeping.execute_run
    calls = {"n": 0}

    def dies_on_the_second_trial(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(sweeping, "execute_run", dies_on_the_second_trial)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(config, output=tmp_path / "out", progress=False, echo=lambda *_: None)
    first = [t for t in _study(tmp_path / "out").trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(first) == 1
    monkeypatch.setattr(sweeping, "execute_run", original)
    lines: list[str] = []
    study = run_sweep(config, output=tmp_path / "out", progress=False, echo=lines.append)
    assert "1 finished trials, 1 interrupted ones queued again, 2 to run" in lines[0]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and complete[0].number == first[0].number  # the finished trial is kept
    interrupted = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    assert any(t.params == interrupted.params for t in complete)  # its parameters were retried


def test_two_objectives_report_a_pareto_front(tmp_path: Path):
    text = SWEEP.replace("objectives: [{metric: avg, direction: maximize}]",
                         "objectives: [{metric: avg, direction: maximize}, {metric: ms_per_query, direction: minimize}]"
                         ).replace("trials: 3", "trials: 2")
    config = write_yaml(tmp_path / "multi.yaml", text + "  sampler: nsgaii\n")
    result = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "Pareto front: trial" in result.stdout


@pytest.mark.parametrize("path", sorted(Path("ablations/sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_sweep_files_validate(path: Path):
    from harness.experiments.config import load_experiment

    experiment, _ = load_experiment(path)
    assert experiment.sweep is not None and experiment.sweep.trials >= 10 and not experiment.grid


def test_two_workers_on_a_journal_file_reach_the_exact_trial_count(tmp_path: Path):
    from harness.experiments.sweep import run_sweep

    config = write_yaml(tmp_path / "sweep.yaml", SWEEP.replace("trials: 3", "trials: 4") + "  storage: journal\n")
    lines: list[str] = []
    study = run_sweep(config, output=tmp_path / "out", progress=False, echo=lines.append, workers=2)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # none lost, none done twice
    assert (tmp_path / "out" / "tinysweep" / "optuna.journal").is_file()
    again = run_sweep(config, output=tmp_path / "out", progress=False, echo=lines.append, workers=2)
    assert len(again.get_trials()) == 4


def test_workers_refuse_the_default_sqlite_storage(tmp_path: Path):
    config = write_yaml(tmp_path / "sweep.yaml", SWEEP)
    result = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out"), "--workers", "2"])
    assert result.exit_code == 2 and "sweep.storage" in result.stderr and "journal" in result.stderr


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory):
    from .postgres import postgres_bin, throwaway_postgres

    if postgres_bin() is None:
        skip_unless_ci("PostgreSQL is not installed here (.ci/run installs it)")
    with throwaway_postgres() as url:
        yield url


def test_two_workers_on_postgresql_reach_the_exact_trial_count(tmp_path: Path, postgres_url: str):
    from harness.experiments.sweep import run_sweep

    config = write_yaml(tmp_path / "sweep.yaml", SWEEP.replace("trials: 3", "trials: 4") + "  storage: "
                                                                                           f"{postgres_url}\n")
    study = run_sweep(config, output=tmp_path / "out", progress=False, echo=lambda *_: None, workers=2)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    reloaded = optuna.load_study(study_name="tinysweep", storage=postgres_url)  # really in the server
    assert len(reloaded.trials) == 4


def test_sweep_trials_are_nested_runs_seen_through_an_mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 (one worker, job execution off) over the sweep's
    tracking store: the parent run and each trial's nested run come back through its REST API."""
    import json
    import urllib.parse
    import urllib.request

    from harness.experiments.sweep import run_sweep

    from .mlflow_server import mlflow_server

    text = SWEEP.replace("tracking: {enabled: false}", "tracking: {enabled: true}").replace("trials: 3", "trials: 2")
    config = write_yaml(tmp_path / "sweep.yaml", text)
    run_sweep(config, output=tmp_path / "out", progress=False, echo=lambda *_: None)
    store = tmp_path / "out" / "tinysweep" / "mlflow.db"
    with mlflow_server("server", store, "--default-artifact-root", str(tmp_path / "artifacts"), "--workers",
                       "1") as base:
        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())

        experiments = post("/api/2.0/mlflow/experiments/search", {"max_results": 10})["experiments"]
        experiment = next(e for e in experiments if e["name"] == "tinysweep")
        runs = post("/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        parents = [r for r in runs if r["info"]["run_name"] == "sweep tinysweep"]
        assert len(parents) == 1
        parent_id = parents[0]["info"]["run_id"]
        trials = [r for r in runs if {"key": "mlflow.parentRunId", "value": parent_id} in r["data"].get("tags", [])]
        assert len(trials) == 2 and all(any(m["key"] == "avg" for m in r["data"]["metrics"]) for r in trials)
        for trial in trials:  # each trial's sampled values are columns; its per-epoch validation a curve
            tags = {t["key"]: t["value"] for t in trial["data"]["tags"]}
            assert {"trial", "lr", "embed_dim", "family", "seed"} <= set(tags)
            query = urllib.parse.urlencode({"run_id": trial["info"]["run_id"], "metric_key": "val/avg"})
            with urllib.request.urlopen(f"{base}/api/2.0/mlflow/metrics/get-history?{query}", timeout=10) as response:
                history = json.loads(response.read())["metrics"]
            assert [m["step"] for m in history] == [1, 2]


def test_a_trial_left_running_by_a_killed_process_is_retried(tmp_path: Path):
    """A SIGKILLed worker leaves its trial RUNNING in the storage: a re-run marks it failed and
    runs its parameters again."""
    from harness.experiments.sweep import run_sweep

    config = write_yaml(tmp_path / "sweep.yaml", SWEEP.replace("trials: 3", "trials: 2"))
    run_sweep(config, output=tmp_path / "out", progress=False, echo=lambda *_: None)
    study = _study(tmp_path / "out")
    orphan = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True),
                        "method.params.embed_dim": optuna.distributions.CategoricalDistribution([16, 32])})
    assert study.trials[-1].state == optuna.trial.TrialState.RUNNING  # what a killed process leaves
    config.write_text(config.read_text().replace("trials: 2", "trials: 3"))
    lines: list[str] = []
    study = run_sweep(config, output=tmp_path / "out", progress=False, echo=lines.append)
    assert "2 finished trials, 1 interrupted ones queued again, 1 to run" in lines[0]
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3 and states[orphan.number] == optuna.trial.TrialState.FAIL
    assert study.trials[-1].params == orphan.params


def test_the_median_pruner_stops_a_trial_that_falls_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Trial 1's per-epoch validation metric is scripted to fall behind: on 40 tiny validation
    queries the real per-epoch metrics of these trials differ by rounding only (7.5000000186 vs
    7.500000298), and which trial got pruned flipped between two CPUs. What is tested is the
    wiring: per-epoch reports, the pruner's decision, the message, no result written."""
    import itertools

    import harness.experiments.sweep as sweeping

    real_evaluate, calls = sweeping.evaluate, itertools.count(1)

    def scripted(*args, **kwargs):
        evaluation = real_evaluate(*args, **kwargs)
        # trial 0 runs its 3 epochs unpruned (start-up trial); the 4th call is trial 1's first epoch
        evaluation.metrics["avg"] = 10.0 if next(calls) == 4 else 50.0
        return evaluation

    monkeypatch.setattr(sweeping, "evaluate", scripted)
    text = (SWEEP.replace("trials: 3", "trials: 5").replace("epochs: 2", "epochs: 3")
            + "  pruner_startup_trials: 1\n  pruner_warmup_epochs: 0\n")
    config = write_yaml(tmp_path / "sweep.yaml", text)
    result = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    study = _study(tmp_path / "out")
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED] + [
        optuna.trial.TrialState.COMPLETE] * 3  # equal to the median is not behind it
    assert "[trial 1] pruned after epoch 1 (avg 10.00)" in result.stdout
    pruned = study.trials[1]  # stopped early: one epoch reported, no result written
    assert pruned.intermediate_values == {1: 10.0}
    assert not (tmp_path / "out" / "tinysweep" / "runs" / pruned.user_attrs["run_id"] / "result.json").exists()
    assert all(set(t.intermediate_values) == {1, 2, 3} for t in study.trials if t.number != 1)


def test_a_sweep_whose_worker_is_sigkilled_continues_on_rerun(tmp_path: Path):
    """A real SIGKILL of the worker process mid-trial: the re-run keeps every finished trial,
    marks the killed one failed, runs its parameters again and reaches the requested total."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = write_yaml(tmp_path / "sweep.yaml", SWEEP.replace("epochs: 2", "epochs: 4"))
    worker = subprocess.Popen([sys.executable, "-m", "harness", "sweep", str(config), "--output",
                               str(tmp_path / "out")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, finished, running = time.monotonic() + 300, [], []
    try:
        while time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.1)
            try:
                trials = _study(tmp_path / "out").get_trials(deepcopy=False)
            except Exception:  # the study is not created yet
                continue
            finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            # a trial killed before optuna gave it parameters has none to run again: wait until it has them
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and t.params]
            if finished and running:
                os.killpg(worker.pid, signal.SIGKILL)
                break
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert worker.returncode == -signal.SIGKILL and finished and running, "the worker was not caught mid-trial"
    killed = running[0]
    assert _study(tmp_path / "out").trials[killed.number].state == optuna.trial.TrialState.RUNNING

    again = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out")])
    assert again.exit_code == 0, again.output
    assert f"{len(finished)} finished trials, 1 interrupted ones queued again" in again.stdout
    study = _study(tmp_path / "out")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3 and study.trials[killed.number].state == optuna.trial.TrialState.FAIL
    kept = {t.number: t.values for t in complete}
    assert all(kept[t.number] == t.values for t in finished)  # finished trials are kept as they were
    assert any(t.params == killed.params for t in complete)  # the killed trial's parameters ran again


@pytest.mark.parametrize("kind", ["random", "tpe"])
def test_a_resumed_study_samples_what_an_uninterrupted_one_does(tmp_path: Path, kind: str):
    """Each invocation builds a new sampler (a new process): trial k must still draw trial k's
    values, so a study stopped after 5 trials and extended twice equals one run in one go, and
    no two trials share a point (it used to re-draw the first values on every invocation)."""
    from harness.experiments.config import SweepConfig
    from harness.experiments.sweep import _sampler

    sweep = SweepConfig(space={"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}, sampler=kind, seed=3)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-2, log=True)
        return -abs(lr - 3e-3)

    def study(path: Path, trials: list[int]) -> list[float]:
        storage = f"sqlite:///{path}"
        for count in trials:  # one invocation each, with its own sampler
            opened = optuna.create_study(study_name="s", storage=storage, load_if_exists=True, sampler=_sampler(sweep),
                                         direction="maximize")
            opened.optimize(objective, n_trials=count)
        return [t.params["lr"] for t in optuna.load_study(study_name="s", storage=storage).trials]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    whole = study(tmp_path / "whole.db", [14])
    resumed = study(tmp_path / "resumed.db", [5, 4, 5])
    assert resumed == whole
    assert len(set(resumed)) == 14


def test_an_unknown_objective_is_refused_before_any_trial(tmp_path: Path):
    for metric, named in (("recal_at_1", "recal_at_1"), ("recall_at_7", "recall_at_7")):
        config = write_yaml(tmp_path / "sweep.yaml", SWEEP.replace("metric: avg", f"metric: {metric}"))
        result = CliRunner().invoke(app, ["sweep", str(config), "--output", str(tmp_path / "out")])
        assert result.exit_code == 2 and named in result.stderr and "sweep.objectives[0].metric" in result.stderr
        assert not (tmp_path / "out" / "tinysweep" / "runs").exists()


def test_passwords_in_storage_and_tracking_urls_never_leave_the_process(tmp_path: Path, postgres_url: str):
    """The throw-away cluster trusts its local connections, so a URL may carry any password: it
    must appear in no output line, no file the sweep or a run writes and no mlflow parameter or tag."""
    import mlflow
    import sqlalchemy

    password = "hunter2-Secret"
    with sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT").connect() as connection:
        for database in ("tracking_secrets", "study_secrets"):  # mlflow and optuna: one alembic table each; a study
            connection.execute(sqlalchemy.text(f"CREATE DATABASE {database}"))  # of its own, not another test's
    server = postgres_url.replace("postgres@", f"postgres:{password}@").rsplit("/", 1)[0]
    url, tracking = server + "/study_secrets", server + "/tracking_secrets"
    config = write_yaml(tmp_path / "sweep.yaml", SWEEP.replace("trials: 3", "trials: 1").replace(
        "tracking: {enabled: false}", f"tracking: {{enabled: true, uri: '{tracking}'}}") + f"  storage: {url}\n")
    outputs = []
    for command in (["sweep", str(config)], ["run", str(config), "--set", f"tracking.uri={tracking}"]):
        result = CliRunner().invoke(app, [*command, "--output", str(tmp_path / "out")])
        assert result.exit_code == 0, result.output
        outputs.append(result.stdout + result.stderr)
    assert all(password not in text for text in outputs)
    assert any("postgres:***@" in text for text in outputs)  # the URL is shown, masked
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    client = mlflow.MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    for run in runs:
        assert all(password not in str(v) for v in (*run.data.params.values(), *run.data.tags.values()))
