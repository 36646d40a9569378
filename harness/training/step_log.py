"""Per-step training metrics while a run trains: written by the training loop to the run's
``metrics.jsonl`` and carried into mlflow by a thread of the process that tracks the experiment.

    log = StepLog.open(run_dir / "metrics.jsonl", keep_through=resumed_step)   # training side
    log.step(step, loss, lr, epoch); log.close()

    forwarder = MetricsForwarder(tracker); forwarder.watch(mlflow_run_id, path)  # tracking side
    forwarder.finish(mlflow_run_id); forwarder.stop()

The file is the hand-over between the two, so it works the same for a run in this process, in a
``--jobs`` worker and on rank 0 under torchrun, and one process alone writes the mlflow store.
Lines are buffered and written every ``every_s`` seconds (one device sync per write on a GPU,
never one per step); ``StepLog.seconds`` is the time the training loop spent on them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: seconds between writes of the step log and between the forwarder's reads
EVERY_S = 2.0


class StepLog:
    """Buffered JSON lines ``{"step", "time", "train/loss", "train/lr", "train/epoch"}``."""

    def __init__(self, path: Path, every_s: float = EVERY_S):
        self.path, self.every_s = Path(path), every_s
        self.pending: list[tuple[int, int, dict[str, Any]]] = []
        self.last = time.monotonic()
        self.seconds = 0.0
        self.stream = self.path.open("a", encoding="utf-8")

    @classmethod
    def open(cls, path: Path, keep_through: int = 0, every_s: float = EVERY_S) -> StepLog:
        """The run's step log; on a resumed run the lines after its checkpoint's step are dropped
        (they are trained again)."""
        path = Path(path)
        if path.is_file():
            kept = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                    if (step := _step(line)) is not None and step <= keep_through]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        return cls(path, every_s)

    def step(self, step: int, loss: torch.Tensor, lr: float, epoch: int) -> None:
        start = time.perf_counter()
        self.pending.append((step, int(time.time() * 1000), {"train/loss": loss.detach(), "train/lr": lr,
                                                              "train/epoch": epoch}))
        if time.monotonic() - self.last >= self.every_s:
            self.flush()
        self.seconds += time.perf_counter() - start

    def flush(self) -> None:
        if self.pending:
            losses = torch.stack([entry["train/loss"] for _, _,
                                  entry in self.pending]).float().cpu().tolist()  # one sync
            lines = [json.dumps({"step": step, "time": stamp, **entry, "train/loss": loss}) + "\n"
                     for (step, stamp, entry), loss in zip(self.pending, losses, strict=True)]
            self.stream.write("".join(lines))
            self.stream.flush()
            self.pending.clear()
        self.last = time.monotonic()

    def close(self) -> None:
        start = time.perf_counter()
        self.flush()
        self.stream.close()
        self.seconds += time.perf_counter() - start


def _step(line: str) -> int | None:
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


class MetricsForwarder:
    """A daemon thread that logs the new complete lines of each watched step log to its mlflow
    run every ``every_s`` seconds; ``finish`` logs what is left and stops watching the run."""

    def __init__(self, tracker: Any, every_s: float = EVERY_S):
        self.tracker, self.every_s = tracker, every_s
        self.watched: dict[str, tuple[Path, int]] = {}  # mlflow run id -> (file, bytes read)
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mlflow-live-metrics", daemon=True)
        self.thread.start()

    def watch(self, run_id: str, path: Path) -> None:
        with self.lock:
            self.watched[run_id] = (Path(path), 0)

    def finish(self, run_id: str) -> None:
        with self.lock:
            if run_id in self.watched:
                self._forward(run_id)
                del self.watched[run_id]

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        for run_id in list(self.watched):
            self.finish(run_id)

    def _loop(self) -> None:
        while not self.stopped.wait(self.every_s):
            with self.lock:
                for run_id in list(self.watched):
                    self._forward(run_id)

    def _forward(self, run_id: str) -> None:
        """Log the complete lines written since the last read; a failure is logged, never raised
        (live curves must not stop a run)."""
        path, offset = self.watched[run_id]
        try:
            with path.open("rb") as stream:
                stream.seek(offset)
                chunk = stream.read()
        except OSError:
            return  # not written yet
        complete = chunk[: chunk.rfind(b"\n") + 1]
        if not complete:
            return
        self.watched[run_id] = (path, offset + len(complete))
        try:
            self.tracker.log_steps(run_id, [json.loads(line) for line in complete.decode("utf-8").splitlines()])
        except Exception as error:  # noqa: BLE001 - a broken store or line costs the curve, not the run
            log.warning("live metrics of mlflow run %s not logged: %s", run_id, error)


class LiveRuns:
    """The nested mlflow runs of the runs in progress and their live curves: opened as a run
    starts, closed with its result or as failed (a pruned sweep trial: killed). A no-op without
    a tracker, so callers need not ask whether tracking is on."""

    def __init__(self, tracker: Any | None):
        self.tracker = tracker
        self.forwarder = MetricsForwarder(tracker) if tracker is not None else None
        self.open: dict[Path, str] = {}  # run folder -> mlflow run id

    def start(self, spec: Any, run_dir: Path, tags: dict[str, str] | None = None) -> None:
        if self.forwarder is not None:
            run_id = self.tracker.start_run(spec, tags)
            self.open[Path(run_dir)] = run_id
            self.forwarder.watch(run_id, Path(run_dir) / "metrics.jsonl")

    def end(self, run_dir: Path, result: Any) -> None:
        run_id = self.open.pop(Path(run_dir), None)
        if run_id is not None and self.forwarder is not None:
            self.forwarder.finish(run_id)
            self.tracker.finish_run(run_id, result, run_dir)

    def fail(self, run_dir: Path, status: str = "FAILED") -> None:
        run_id = self.open.pop(Path(run_dir), None)
        if run_id is not None and self.forwarder is not None:
            self.forwarder.finish(run_id)
            self.tracker.end_run(run_id, status)

    def values(self, run_dir: Path, step: int, values: dict[str, float]) -> None:
        """Metrics measured in this process during training (a sweep's per-epoch validation)."""
        run_id = self.open.get(Path(run_dir))
        if run_id is not None:
            self.tracker.log_steps(run_id, [{"step": step, "time": int(time.time() * 1000), **values}])

    @contextmanager
    def run(self, spec: Any, run_dir: Path, tags: dict[str, str] | None = None) -> Iterator[Callable[[Any], None]]:
        """``with live.run(spec, run_dir) as finish: ...; finish(result)``: the run is closed as
        failed (pruned: killed) when the block raises before ``finish``."""
        self.start(spec, run_dir, tags)
        try:
            yield lambda result: self.end(run_dir, result)
        except BaseException as error:
            self.fail(run_dir, "KILLED" if type(error).__name__ == "TrialPruned" else "FAILED")
            raise

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
