"""Process set-up shared by every harness process: the CLI's, each --jobs worker's, each sweep worker's.

    configure_process()                    # logging format, tokenizers' threads, quiet offline transformers
    configure_process(threads=1, gpu=3)    # a worker: one torch thread, GPU 3 only
"""

from __future__ import annotations

import logging
import os


def configure_process(threads: int | None = None, gpu: int | None = None) -> None:
    """Logging and library settings of a harness process (the CLI's, each --jobs and sweep
    worker's); a worker also gets its torch threads and the one GPU it may see (set before CUDA
    starts in the process)."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def quiet_libraries() -> None:
    """Silence transformers' per-load progress bars and reports (our own bars show progress)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
