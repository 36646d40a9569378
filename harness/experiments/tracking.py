"""mlflow mirror of the results: one parent run per experiment invocation, a nested run per
grid point and seed, opened as the run starts so that its loss and learning-rate curves fill in
while it trains (harness.training.step_log), closed with its params, metrics and files.

    tracker = Tracker.open(uri=None, output=Path("runs/reference"), experiment="reference",
                           description="...")
    tracker.start_parent({"config": "ablations/reference.yaml"}, description="...")
    run = tracker.start_run(spec)           # RUNNING, tagged method / family / seed / swept values
    tracker.finish_run(run, result, run_dir)
    tracker.log_report(Path("reports/reference"), Path("runs/reference/experiment.json"))
    tracker.finish()

The experiment is tagged as custom model development (``mlflow.experimentKind``), so mlflow 3's
UI opens it on its training-runs table instead of the GenAI overview; the YAML's description
is the experiment's and the parent run's note (``mlflow.note.content``). The tracking URI is
always explicit: ``sqlite:///<output>/mlflow.db`` unless the config names another (never
mlflow's working-directory default, never the deprecated file store).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.paths import file_lock
from harness.core.secrets import mask
from harness.core.settings import flatten
from harness.evaluation.results import RunResult
from harness.experiments.config import RunSpec

log = logging.getLogger(__name__)


def default_tracking_uri(output: Path) -> str:
    return f"sqlite:///{Path(output).resolve() / 'mlflow.db'}"


#: mlflow 3's UI opens an experiment of this kind on its runs table (the GenAI overview otherwise)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
NOTE = "mlflow.note.content"


#: the saved runs-table view this harness writes into each experiment (mlflow's shared view state)
VIEW_KEY = "cir-harness"
UI_PORT = 5000


def ui_command(uri: str) -> str:
    """The exact command that browses ``uri`` (on the loopback interface only)."""
    return f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port {UI_PORT}"


def ui_url(experiment_id: str, port: int = UI_PORT) -> str:
    """The experiment's runs table in the training view, with the harness's saved columns and order."""
    return (f"http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            f"&viewStateShareKey={VIEW_KEY}")


def runs_table_view(metrics: list[str], tags: list[str]) -> dict[str, Any]:
    """mlflow UI state (its ``mlflow.sharedViewState.<key>`` experiment tag, as its Share button
    writes it): the runs ordered by the first metric, best first (which lists nested runs flat),
    with the tag columns (method, family, seed, swept values) and then the metric columns shown."""
    columns = [*(f"tags.`{t}`" for t in tags), *(f"metrics.`{m}`" for m in metrics), "attributes.`Dataset`"]
    return {"searchFilter": "", "orderByKey": f"metrics.`{metrics[0]}`" if metrics else "attributes.start_time",
            "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [],
            "modelVersionFilter": "All Runs", "selectedColumns": columns, "columnOrder": [], "columnWidths": {},
            "runsHiddenMode": "SHOW_ALL", "viewMaximized": False, "runListHidden": False, "groupBy": None,
            "groupsExpanded": {}, "hideEmptyCharts": True, "useGroupedValuesInCharts": True,
            "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""}}


def quiet_mlflow() -> None:
    """Silence mlflow's INFO lines (the database set-up of every new store)."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


@dataclass
class Tracker:
    """Logs to mlflow through an explicit ``MlflowClient`` (no global active-run state); the
    calls of the live-metrics thread and of the main thread take turns through ``lock``."""

    client: Any
    experiment_id: str
    parent_run_id: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, uri: str | None, output: Path, experiment: str, description: str = "") -> Tracker:
        """The experiment's tracker. Processes that open it at once (two invocations on one
        output) take turns through a file lock: mlflow's schema set-up of a fresh database is not
        safe to run twice at the same moment (one of them failed on a duplicate column)."""
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        with file_lock(output / ".mlflow.lock"):
            return cls._open(uri, output, experiment, description)

    @classmethod
    def _open(cls, uri: str | None, output: Path, experiment: str, description: str) -> Tracker:
        import mlflow  # slow import: only when tracking is on
        from mlflow.tracking import MlflowClient

        quiet_mlflow()  # after the import, which sets mlflow's own levels
        client = MlflowClient(tracking_uri=uri or default_tracking_uri(output))
        tags = EXPERIMENT_KIND | ({NOTE: description.strip()} if description.strip() else {})
        found = client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = client.create_experiment(
                    experiment, artifact_location=(output / "mlartifacts").resolve().as_uri(), tags=tags)
            except mlflow.exceptions.MlflowException:  # created by a concurrent process
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
            for key, value in tags.items():
                if found.tags.get(key) != value:
                    client.set_experiment_tag(experiment_id, key, value)
        return cls(client, experiment_id)

    def start_parent(self, params: dict[str, Any], name: str | None = None, description: str = "") -> str:
        tags = {NOTE: description.strip()} if description.strip() else {}
        with self.lock:
            run = self.client.create_run(self.experiment_id, run_name=name or time.strftime("%Y%m%d-%H%M%S"), tags=tags)
            self.parent_run_id = run.info.run_id
            self._log_params(self.parent_run_id, params)
        return self.parent_run_id

    def start_run(self, spec: RunSpec, extra_tags: dict[str, str] | None = None) -> str:
        """A nested run for ``spec``, RUNNING until ``finish_run``; its tags are the runs table's
        useful columns: method, family, seed, label, the harness run id, each swept value and
        ``extra_tags`` (a sweep trial's number and sampled values)."""
        from harness.methods.registry import get_method

        config = spec.config
        tags = {"method": config.method.name, "family": get_method(config.method.name).family,
                "seed": str(config.seed), "label": spec.label, "run_id": spec.run_id, **swept_tags(spec.grid_point),
                **(extra_tags or {})}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        with self.lock:
            run = self.client.create_run(self.experiment_id, run_name=f"{spec.label} seed={config.seed}", tags=tags)
            self._log_params(run.info.run_id, config.model_dump(mode="json"))
        return run.info.run_id

    def finish_run(self, run_id: str, result: RunResult, run_dir: Path) -> None:
        """The run's final metrics, its files (result.json, config.yaml, rankings) and datasets."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, round(float(value), 6), now, 0) for key, value in result.metrics.items()]  # 5.0, not
        # 5.0000000745 (percentages computed in float32)
        metrics += [Metric(f"timing.{key}", float(value), now, 0) for key, value in result.timings.items()]
        losses = result.train.get("loss_per_epoch") or []
        metrics += [Metric("train_loss", float(value), now, epoch + 1) for epoch, value in enumerate(losses)]
        with self.lock:
            for start in range(0, len(metrics), 900):
                self.client.log_batch(run_id, metrics=metrics[start : start + 900])
            for name in ("result.json", "config.yaml", "rankings.jsonl.gz", "metrics.jsonl"):
                if (Path(run_dir) / name).is_file():
                    self.client.log_artifact(run_id, str(Path(run_dir) / name))
            self.client.log_inputs(run_id, datasets=dataset_inputs(result))
            self.client.set_terminated(run_id, "FINISHED")

    def end_run(self, run_id: str, status: str) -> None:
        """Close a nested run that has no result (FAILED, or KILLED for a pruned trial)."""
        with self.lock:
            self.client.set_terminated(run_id, status)

    def log_steps(self, run_id: str, entries: list[dict[str, Any]]) -> None:
        """Step-log lines (harness.training.step_log) as metric histories: every key but step and time."""
        from mlflow.entities import Metric

        metrics = [Metric(key, float(value), int(entry["time"]), int(entry["step"]))
                   for entry in entries for key, value in entry.items()
                   if key not in ("step", "time") and isinstance(value, (int, float))]
        with self.lock:
            for start in range(0, len(metrics), 900):
                self.client.log_batch(run_id, metrics=metrics[start : start + 900])

    def log_report(self, report_dir: Path | None, *files: Path) -> None:
        """The parent run's artifacts: the report folder (md, HTML, figures, tables) and ``files``
        (the resolved experiment, the results table)."""
        if self.parent_run_id is None:
            return
        with self.lock:
            if report_dir is not None and Path(report_dir).is_dir():
                self.client.log_artifacts(self.parent_run_id, str(report_dir), artifact_path="report")
            for path in files:
                if Path(path).is_file():
                    self.client.log_artifact(self.parent_run_id, str(path))

    def publish(self, report_dir: Path, files: list[Path], metrics: list[str], tags: list[str], uri: str) -> list[str]:
        """At the end of a run or sweep: the report and ``files`` on the parent run, the runs-table
        view (``runs_table_view``) saved in the experiment, and the lines that say how to open it."""
        self.log_report(report_dir, *files)
        with self.lock:
            self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}",
                                           json.dumps(runs_table_view(metrics, tags)))
        return [f"mlflow:  {ui_command(mask(uri))}", f"         then open {ui_url(self.experiment_id)}"]

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            with self.lock:
                self.client.set_terminated(self.parent_run_id, status)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(key, str(value)[:6000]) for key, value in flatten(params).items()]
        for start in range(0, len(flat), 90):
            self.client.log_batch(run_id, params=flat[start : start + 90])


def swept_tags(values: dict[str, Any]) -> dict[str, str]:
    """One tag per swept value (a grid point or a sweep trial's sample), named by its last key
    ("pool_size", "lr"); the method's name is the ``method`` tag already."""
    return {key.split(".")[-1]: str(value)[:5000] for key, value in flatten(values).items() if key != "method.name"}


def dataset_inputs(result: RunResult) -> list[Any]:
    """The run's training and evaluation data as mlflow dataset inputs: name, version, split."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    data = result.config.get("dataset", {})
    generated = data.get("name") == "synthetic" and not data.get("root")
    version = f"v{data.get('synthetic', {}).get('version')}" if generated else "local"
    source = json.dumps({"uri": str(data.get("root") or "generated (harness data synthetic)")})
    inputs = []
    for context, split in (("train", data.get("train_split")), ("eval", result.split)):
        profile = {"split": split, "version": version}
        if context == "eval":
            profile |= {"queries": result.num_queries, "gallery": result.num_gallery}
        digest = hashlib.sha256(f"{result.dataset}:{version}:{split}:{source}".encode()).hexdigest()[:8]
        dataset = Dataset(name=f"{result.dataset} {version} {split}", digest=digest, source_type="local", source=source,
                          profile=json.dumps(profile))
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)]))
    return inputs
