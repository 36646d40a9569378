"""What a method starts from when its backbone is tiny: a cached stage-0 checkpoint.

    for start in method_class.warm_starts(params, dataset_key):   # `harness pretrain`, the runner
        if not start.built():
            start.ensure(train_split, force=False, progress=True)
        print(start.summary(cached=False))

Each kind of warm start (stage 0's CLIP, the whole LVLM stage 0, SPRC's Q-Former) knows its
cache directory, whether it is built, how to build it and how to say what it holds; the
runner builds each one once, in the first run that needs it, while the other runs train.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from harness.pretraining.stage0 import Stage0Request, ensure_stage0, ensure_stage0_clip


class WarmStart(Protocol):
    """A cached checkpoint a run starts from."""

    def key(self) -> str: ...

    def directory(self) -> Path: ...

    def built(self) -> bool: ...

    def ensure(self, train_split: Any, force: bool = False, progress: bool = True) -> Path: ...

    def summary(self, cached: bool) -> str: ...


@dataclass(frozen=True)
class Stage0WarmStart:
    """Stage 0 of a tiny backbone: its first phase alone (``full`` False: the tiny CLIP and
    tokenizer every dual encoder starts from) or the whole LVLM stage 0 (CLIP, then connector + LM)."""

    request: Stage0Request
    full: bool

    def key(self) -> str:
        return f"lvlm-{self.request.key()}" if self.full else f"clip-{self.request.vision_key()}"

    def directory(self) -> Path:
        return self.request.directory() if self.full else self.request.vision_directory()

    def built(self) -> bool:
        return self.request.built(full=self.full)

    def ensure(self, train_split: Any, force: bool = False, progress: bool = True) -> Path:
        build = ensure_stage0 if self.full else ensure_stage0_clip
        return build(self.request, train_split, force, progress)

    def summary(self, cached: bool) -> str:
        report = json.loads((self.directory() / ("stage0.json" if self.full else "vision.json")).read_text())
        if not self.full:
            timing = "cached" if cached else f"{report['vision']['seconds']:.0f}s"
            return f"stage 0 (CLIP) {self.directory()} ({timing}; final loss {report['vision']['last_loss']})"
        timing = ("cached" if cached else
                  f"vision {report['vision']['seconds']:.0f}s, describe {report['caption']['seconds']:.0f}s")
        return (f"stage 0 (LVLM) {self.directory()} ({timing}; final losses: vision {report['vision']['last_loss']}, "
                f"describe {report['caption']['last_loss']})")
