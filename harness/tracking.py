"""mlflow mirror of the results: one parent run per experiment invocation, a nested run per
grid point and seed with params, metrics and the results JSON as artifact.

    tracker = Tracker.open(uri=None, output=Path("runs/reference"), experiment="reference")
    tracker.start_parent({"config": "ablations/reference.yaml"})
    tracker.log_run(result, result_path)
    tracker.finish()

The tracking URI is always explicit: ``sqlite:///<output>/mlflow.db`` unless the config
names another (never mlflow's working-directory default, never the deprecated file store).
Browse with ``mlflow ui --backend-store-uri sqlite:///<output>/mlflow.db --host 127.0.0.1``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.paths import file_lock
from harness.config import flatten
from harness.results import RunResult

log = logging.getLogger(__name__)


def default_tracking_uri(output: Path) -> str:
    return f"sqlite:///{Path(output).resolve() / 'mlflow.db'}"


@dataclass
class Tracker:
    """Logs to mlflow through an explicit ``MlflowClient`` (no global active-run state)."""

    client: Any
    experiment_id: str
    parent_run_id: str | None = None

    @classmethod
    def open(cls, uri: str | None, output: Path, experiment: str) -> Tracker:
        """The experiment's tracker. Processes that open it at once (two invocations on one
        output) take turns through a file lock: mlflow's schema set-up of a fresh database is not
        safe to run twice at the same moment (one of them failed on a duplicate column)."""
        output = Path(output)
        output.mkdir(parents=True, exist_ok=True)
        with file_lock(output / ".mlflow.lock"):
            return cls._open(uri, output, experiment)

    @classmethod
    def _open(cls, uri: str | None, output: Path, experiment: str) -> Tracker:
        import mlflow  # slow import: only when tracking is on
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri or default_tracking_uri(output))
        found = client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = client.create_experiment(
                    experiment, artifact_location=(output / "mlartifacts").resolve().as_uri()
                )
            except mlflow.exceptions.MlflowException:  # created by a concurrent process
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        return cls(client, experiment_id)

    def start_parent(self, params: dict[str, Any], name: str | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name or time.strftime("%Y%m%d-%H%M%S"))
        self.parent_run_id = run.info.run_id
        self._log_params(self.parent_run_id, params)
        return self.parent_run_id

    def log_run(self, result: RunResult, result_path: Path) -> str:
        """A nested run with the run's config as params, its metrics and the results JSON."""
        from mlflow.entities import Metric

        tags = {"run_id": result.run_id, "method": result.method, "label": result.label, "seed": str(result.seed)}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=f"{result.label} seed={result.seed}", tags=tags)
        run_id = run.info.run_id
        self._log_params(run_id, result.config)
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, 0) for key, value in result.metrics.items()]
        metrics += [Metric(f"timing.{key}", float(value), now, 0) for key, value in result.timings.items()]
        losses = result.train.get("loss_per_epoch") or []
        metrics += [Metric("train_loss", float(value), now, epoch + 1) for epoch, value in enumerate(losses)]
        for start in range(0, len(metrics), 900):
            self.client.log_batch(run_id, metrics=metrics[start : start + 900])
        self.client.log_artifact(run_id, str(result_path))
        self.client.set_terminated(run_id, "FINISHED")
        return run_id

    def finish(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self.client.set_terminated(self.parent_run_id, status)

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(key, str(value)[:6000]) for key, value in flatten(params).items()]
        for start in range(0, len(flat), 90):
            self.client.log_batch(run_id, params=flat[start : start + 90])
