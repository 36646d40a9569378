"""Process set-up shared by every harness process: the CLI's, each --jobs worker's, each sweep worker's.

    configure_process()   # logging format, tokenizers' threads, transformers kept quiet and offline
"""

from __future__ import annotations

import logging
import os


def configure_process() -> None:
    """Logging and library settings of a harness process (the CLI's, and each --jobs worker's)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()


def quiet_libraries() -> None:
    """Silence transformers' per-load progress bars and reports (our own bars show progress)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
