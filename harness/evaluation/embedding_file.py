"""Embeddings written to disk a batch at a time and read back memory-mapped.

    with EmbeddingFile(count=len(gallery)) as store:
        store.write(start, chunk)             # each encoder batch as it comes
        embeddings = store.tensor()           # [count, D] (or [count, M, D]) float32, backed by the file

A gallery of 100k+ images then never sits in RAM twice (a list of batches and their
concatenation) or whole: harness.evaluation.ranking reads it a block of rows at a time, and the OS pages
in what a block needs. The file is a .npy in ``<cache>/scratch/`` and is removed on exit, also
when the evaluation fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType

import numpy as np
import torch

from harness.core.paths import cache_dir


class EmbeddingFile:
    """A [count, D] float32 .npy filled row block by row block; D (or M, D of a multi-vector
    gallery) is taken from the first write."""

    def __init__(self, count: int, directory: Path | None = None):
        self.count = count
        self.directory = directory or cache_dir() / "scratch"
        self.path: Path | None = None
        self._array: np.memmap | None = None
        self._written = 0

    def __enter__(self) -> EmbeddingFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def write(self, start: int, chunk: torch.Tensor) -> None:
        """Rows start..start + len(chunk) of the embeddings."""
        if self._array is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix="embeddings-", suffix=".npy", dir=self.directory)
            os.close(handle)
            self.path = Path(name)
            self._array = np.lib.format.open_memmap(name, mode="w+", dtype=np.float32,
                                                    shape=(self.count, *chunk.shape[1:]))
        self._array[start : start + len(chunk)] = chunk.detach().float().cpu().numpy()
        self._written += len(chunk)

    def tensor(self) -> torch.Tensor:
        """The embeddings as a tensor over the file (flushed first); [0, 0] when nothing was written."""
        if self._array is None:
            return torch.empty(0, 0)
        if self._written != self.count:
            raise RuntimeError(f"{self._written} of {self.count} embedding rows were written")
        self._array.flush()
        return torch.from_numpy(self._array)

    def close(self) -> None:
        """Drop the mapping and remove the file."""
        self._array = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None
