"""Base of the methods built on the shared dual encoder (CLIP4Cir, Pic2Word, SEARLE, references)."""

from __future__ import annotations

from typing import Any

from harness.backbones.stage0 import clip_request
from harness.methods.base import CIRMethod


class DualEncoderMethod(CIRMethod):
    """A method whose ``self.encoder`` is a ``DualEncoder`` from ``params.backbone`` /
    ``params.stage0``: it starts from stage 0's CLIP when the backbone is tiny."""

    @classmethod
    def warm_starts(cls, params: Any, dataset_key: str) -> list[tuple[Any, bool]]:
        if getattr(params, "start", "stage0") != "stage0" or params.backbone.source != "tiny":
            return []
        return [(clip_request(dataset_key, params.backbone, params.stage0), False)]

    @property
    def tokenizer(self):  # saved with the run by the runner
        return self.encoder.tokenizer
