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

from harness.stage0 import Stage0Request, ensure_stage0, ensure_stage0_clip


class WarmStart(Protocol):
    """A cached checkpoint a run starts from."""

    def key(self) -> str: ...

    def directory(self) -> Path: ...

    def built(self) -> bool: ...

    def ensure(self, train_split: Any, force: bool = False, progress: bool = True) -> Path: ...

    def summary(self, cached: bool) -> str: ...


@dataclass(frozen=True)
class ClipWarmStart:
    """Stage 0's first phase: the tiny CLIP (and tokenizer) every dual encoder starts from."""

    request: Stage0Request

    def key(self) -> str:
        return f"clip-{self.request.vision_key()}"

    def directory(self) -> Path:
        return self.request.vision_directory()

    def built(self) -> bool:
        return self.request.built(full=False)

    def ensure(self, train_split: Any, force: bool = False, progress: bool = True) -> Path:
        return ensure_stage0_clip(self.request, train_split, force, progress)

    def summary(self, cached: bool) -> str:
        report = json.loads((self.directory() / "vision.json").read_text())
        timing = "cached" if cached else f"{report['vision']['seconds']:.0f}s"
        return f"stage 0 (CLIP) {self.directory()} ({timing}; final loss {report['vision']['last_loss']})"


@dataclass(frozen=True)
class LVLMWarmStart:
    """The whole stage 0 of a tiny LVLM: CLIP, then connector + LM (describe, instructions)."""

    request: Stage0Request

    def key(self) -> str:
        return f"lvlm-{self.request.key()}"

    def directory(self) -> Path:
        return self.request.directory()

    def built(self) -> bool:
        return self.request.built(full=True)

    def ensure(self, train_split: Any, force: bool = False, progress: bool = True) -> Path:
        return ensure_stage0(self.request, train_split, force, progress)

    def summary(self, cached: bool) -> str:
        report = json.loads((self.directory() / "stage0.json").read_text())
        timing = ("cached" if cached else
                  f"vision {report['vision']['seconds']:.0f}s, describe {report['caption']['seconds']:.0f}s")
        return (f"stage 0 (LVLM) {self.directory()} ({timing}; final losses: vision {report['vision']['last_loss']}, "
                f"describe {report['caption']['last_loss']})")
