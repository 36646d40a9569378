"""Several runs of one experiment at once, each in its own process (``harness run --jobs N``).

A tiny model keeps a second CPU thread only partly busy: two 1-thread CIR-LVLM runs side by
side made 1.2x the training steps of one 2-thread run on the 2-core machine (and 1.25x in
fp32). Each worker process is started fresh (spawn: no OpenMP state is forked), takes its
share of the cores as torch threads, and keeps its loaded datasets for the runs it is dealt.
The parent logs each finished run to mlflow and prints it; a run that fails is reported and the
others go on (its error crosses back as a picklable ``WorkerError`` carrying the traceback).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import TYPE_CHECKING

from tqdm import tqdm

if TYPE_CHECKING:
    from harness.evaluation.results import RunResult
    from harness.experiments.config import RunSpec
    from harness.experiments.executor import Plan

_SPLITS = None  # the worker's loaded datasets, kept across the runs it is dealt


def _start_worker(threads: int, gpus=None) -> None:
    """Set up a worker: its torch threads and, on a machine with GPUs, the one GPU it trains on
    (taken from ``gpus``, a queue of device numbers)."""
    from harness.core.process import configure_process

    configure_process(threads, gpus.get() if gpus is not None else None)


def gpu_slots(jobs: int, gpus: int) -> list[int]:
    """The GPU of each of ``jobs`` workers: one each while there are enough, then shared round-robin."""
    return [worker % gpus for worker in range(jobs)] if gpus > 0 else []


def _run(spec: RunSpec, run_dir) -> RunResult:
    global _SPLITS
    from harness.core.errors import HarnessError, WorkerError
    from harness.experiments.executor import SplitCache, execute_run

    if _SPLITS is None:
        _SPLITS = SplitCache(False)
    try:
        return execute_run(spec, run_dir, _SPLITS, progress=False)
    except HarnessError as error:
        raise HarnessError(str(error)) from None  # the one line, rebuilt from a picklable argument
    except Exception as error:  # noqa: BLE001 - handed to the parent, which reports it
        raise WorkerError.of(error) from None


def run_in_processes(pending: list[tuple[int, RunSpec]], plan: Plan, jobs: int,
                     started: Callable[[int, RunSpec], None], ended: Callable[[int, RunSpec, RunResult], None],
                     progress: bool, failed: Callable[[int, RunSpec, BaseException], None] | None = None,
                     gpus: int = 0) -> None:
    """Run ``pending`` ((number, spec) in plan order) ``jobs`` at a time; ``started`` and
    ``ended`` are called in this process as each run is handed out and as it finishes, and
    ``failed`` (which may re-raise) when a run raised. With ``gpus`` > 0 each worker sees one GPU
    (CUDA_VISIBLE_DEVICES), worker i GPU i mod gpus."""
    from harness.experiments.executor import parallel_threads

    context = multiprocessing.get_context("spawn")
    slots = None
    if gpus > 0:
        slots = context.Queue()
        for gpu in gpu_slots(jobs, gpus):
            slots.put(gpu)
    queue = list(pending)
    running: dict[Future, tuple[int, RunSpec]] = {}
    bar = tqdm(total=len(pending), desc="runs", unit="run", disable=not progress)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_start_worker,
                             initargs=(parallel_threads(jobs), slots)) as pool:
        try:
            while queue or running:
                while queue and len(running) < jobs:
                    number, spec = queue.pop(0)
                    started(number, spec)
                    running[pool.submit(_run, spec, plan.run_dir(spec))] = (number, spec)
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    number, spec = running.pop(future)
                    bar.update()
                    error = future.exception()
                    if error is None:
                        ended(number, spec, future.result())
                    elif failed is None:
                        raise error
                    else:
                        failed(number, spec, error)
        except BaseException:
            for future in running:
                future.cancel()
            raise
        finally:
            bar.close()
