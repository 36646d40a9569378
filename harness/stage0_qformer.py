"""Stage 0 for SPRC's tiny backbone: a Q-Former pre-trained on (image, scene description) with
BLIP-2's first-stage contrastive objective, over stage 0's frozen CLIP vision tower.

BLIP-2 stage 1 trains the Q-Former with ITC (plus ITM and captioning, left out here): an image's
query outputs meet the text's [CLS]; the image-text similarity is the best of the query
outputs (max over M), the temperature is learned, both directions are averaged. The vision
tower is the very stage-0 CLIP every other method starts from, so SPRC gets no better eyes.

Cached under ``<cache>/backbones/stage0-qformer-<hash>/`` (vision/, tokenizer/, qformer/,
qformer.json), keyed by the CLIP's own key, the Q-Former sizes and these settings:

    start = QFormerWarmStart(clip_request(...), QFormerParams(), QFormerPretraining())
    directory = start.ensure(train_split)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from harness.backbones.qformer import QFormer, QFormerBackbone, QFormerParams
from harness.backbones.vision import VisionTower
from harness.data.synthetic.captions import template_corpus
from harness.paths import cache_dir, file_lock
from harness.metrics import similarity
from harness.stage0 import Stage0Request, _cached, _phase, _TrainingData, ensure_stage0_clip
from harness.tokenization import train_word_tokenizer

QFORMER_STAGE0_VERSION = 1


class QFormerPretraining(BaseModel):
    """Budget of the Q-Former's contrastive pre-training (sized like stage 0's CLIP phase)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(300, ge=0, description="image <-> description ITC steps (0: the Q-Former starts random)")
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.07, gt=0, description="initial learnable temperature (BLIP-2: 0.07)")


@dataclass(frozen=True)
class QFormerWarmStart:
    """The tiny Q-Former SPRC starts from (harness.warm_start.WarmStart)."""

    clip: Stage0Request
    sizes: QFormerParams
    pretraining: QFormerPretraining

    def key(self) -> str:
        blob = json.dumps({"version": QFORMER_STAGE0_VERSION, "clip": self.clip.vision_key(),
                           "sizes": self.sizes.model_dump(), "pretraining": self.pretraining.model_dump()},
                          sort_keys=True)
        return f"qformer-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"

    def directory(self) -> Path:
        return cache_dir() / "backbones" / f"stage0-{self.key()}"

    def built(self) -> bool:
        return (self.directory() / "qformer.json").is_file()

    def ensure(self, train_split: Any, force: bool = False, progress: bool = True) -> Path:
        directory = self.directory()
        clip = ensure_stage0_clip(self.clip, train_split, progress=progress)
        with file_lock(directory.parent / f".{directory.name}.lock"), torch.random.fork_rng():
            return _cached(directory, "qformer.json", force, lambda out: self._build(clip, train_split, out, progress))

    def summary(self, cached: bool) -> str:
        report = json.loads((self.directory() / "qformer.json").read_text())
        timing = "cached" if cached else f"{report['itc']['seconds']:.0f}s"
        return f"stage 0 (Q-Former) {self.directory()} ({timing}; final ITC loss {report['itc']['last_loss']})"

    def _build(self, clip: Path, train_split: Any, out: Path, progress: bool) -> dict:
        data = _TrainingData(train_split)
        torch.manual_seed(self.clip.params.seed)
        generator = torch.Generator().manual_seed(self.clip.params.seed)
        corpus = [*data.texts, *(t.caption for t in train_split.triplets), *template_corpus()]
        tokenizer = train_word_tokenizer(corpus, max_length=self.sizes.max_text_length)
        encoded = tokenizer(data.texts, padding=True, truncation=True, return_tensors="pt")
        tower = VisionTower.from_directory(clip / "vision").eval().requires_grad_(False)
        qformer = QFormer.build(self.sizes.config(len(tokenizer), tower.hidden_size, tokenizer.pad_token_id),
                                self.sizes.num_query_tokens, self.sizes.embed_dim)
        temperature = torch.nn.Parameter(torch.tensor(self.pretraining.temperature))
        trainable = torch.nn.ModuleDict({"qformer": qformer})
        trainable.register_parameter("temperature", temperature)
        backbone = QFormerBackbone(tower, True, qformer, tokenizer, self.sizes.max_text_length)
        report = _phase(trainable, self.pretraining.steps, self.pretraining.lr, "stage 0: Q-Former image <-> text",
                        progress, lambda: itc_step(backbone, temperature, data.images, encoded,
                                                   self.pretraining.batch_size, generator), self.clip.params.precision)
        shutil.copytree(clip / "vision", out / "vision")
        tokenizer.save_pretrained(str(out / "tokenizer"))
        qformer.save(out / "qformer")
        return {"settings": {"clip": self.clip.vision_key(), "sizes": self.sizes.model_dump(),
                             "pretraining": self.pretraining.model_dump()},
                "images": len(data.names), "itc": report, "temperature": float(temperature.detach())}


def itc_step(backbone: QFormerBackbone, temperature: torch.Tensor, images: torch.Tensor, encoded: dict,
             batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """BLIP-2's image-text contrastive loss on a random batch: the best query output per
    (image, text), both directions, temperature clamped to [0.001, 0.5] as BLIP-2 clamps it."""
    rows = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
    qformer = backbone.qformer
    features = backbone.image_features(images[rows])  # the frozen tower: no graph
    mask = encoded["attention_mask"][rows]
    width = int(mask.sum(1).max())
    image = qformer.image_vectors(qformer.image_queries(features))
    text = qformer.text_vector(qformer.text(encoded["input_ids"][rows, :width], mask[:, :width]))
    scores = similarity(text.float(), image.float()) / temperature.clamp(0.001, 0.5)  # [texts, images]
    labels = torch.arange(batch_size)
    return (F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels)) / 2
