"""Stage 0 for SPRC's tiny backbone: a Q-Former pre-trained on (image, scene description) with
BLIP-2's first-stage contrastive objective, over stage 0's frozen CLIP vision tower.

BLIP-2 stage 1 trains the Q-Former with three losses, summed unweighted; two are here:
- ITC: an image's query outputs meet the text's [CLS]; the image-text similarity is the best of
  the query outputs (max over M), the temperature is learned, both directions are averaged;
- ITM (``itm``): the queries self-attend with the text while they cross-attend the image (the
  very pass SPRC's fusion uses), a 2-way head on their mean output says whether the pair
  matches; per positive pair, one negative text and one negative image sampled by ITC
  similarity (hard negatives), as BLIP-2's blip2_qformer.py does.
Image-grounded text generation (ITG), BLIP-2's third loss, is left out. The vision tower is the
very stage-0 CLIP every other method starts from, so SPRC gets no better eyes.

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
from harness.backbones.tokenization import train_word_tokenizer
from harness.backbones.vision import VisionTower
from harness.core.files import read_json_object
from harness.core.paths import cache_dir, file_lock
from harness.data.synthetic.captions import template_corpus
from harness.objectives.losses import similarity
from harness.pretraining.stage0 import Stage0Request, _cached, _phase, _TrainingData, ensure_stage0_clip

QFORMER_STAGE0_VERSION = 1


class QFormerPretraining(BaseModel):
    """Budget of the Q-Former's contrastive pre-training (sized like stage 0's CLIP phase)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(300, ge=0, description="image <-> description ITC steps (0: the Q-Former starts random)")
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    temperature: float = Field(0.07, gt=0, description="initial learnable temperature (BLIP-2: 0.07)")
    itm: bool = Field(False, description="add BLIP-2 stage 1's image-text matching loss (fusion pass + 2-way head, "
                      "hard negatives by ITC similarity) to ITC, unweighted as BLIP-2 sums them")


@dataclass(frozen=True)
class QFormerWarmStart:
    """The tiny Q-Former SPRC starts from (harness.pretraining.warm_start.WarmStart)."""

    clip: Stage0Request
    sizes: QFormerParams
    pretraining: QFormerPretraining

    def key(self) -> str:
        # ITC-only settings keep the key they had before ITM existed
        pretraining = self.pretraining.model_dump(exclude=None if self.pretraining.itm else {"itm"})
        blob = json.dumps({"version": QFORMER_STAGE0_VERSION, "clip": self.clip.vision_key(),
                           "sizes": self.sizes.model_dump(), "pretraining": pretraining}, sort_keys=True)
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
        report = read_json_object(self.directory() / "qformer.json", fix=f"delete {self.directory()} to build stage 0 "
                                                                         "again")
        timing = "cached" if cached else f"{report['itc']['seconds']:.0f}s"
        objective = report.get("objective", "itc").upper()
        return f"stage 0 (Q-Former) {self.directory()} ({timing}; final {objective} loss {report['itc']['last_loss']})"

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
        itm_head = torch.nn.Linear(qformer.query_tokens.shape[-1], 2) if self.pretraining.itm else None
        trainable = torch.nn.ModuleDict({"qformer": qformer, **({"itm_head": itm_head} if itm_head else {})})
        trainable.register_parameter("temperature", temperature)
        backbone = QFormerBackbone(tower, True, qformer, tokenizer, self.sizes.max_text_length)
        report = _phase(trainable, self.pretraining.steps, self.pretraining.lr, "stage 0: Q-Former image <-> text",
                        progress, lambda: pretraining_step(backbone, temperature, itm_head, data.images, encoded,
                                                           self.pretraining.batch_size, generator),
                        self.clip.params.precision)
        shutil.copytree(clip / "vision", out / "vision")
        tokenizer.save_pretrained(str(out / "tokenizer"))
        qformer.save(out / "qformer")
        return {"settings": {"clip": self.clip.vision_key(), "sizes": self.sizes.model_dump(),
                             "pretraining": self.pretraining.model_dump()},
                "images": len(data.names), "itc": report, "temperature": float(temperature.detach()),
                "objective": "itc+itm" if itm_head else "itc"}


def pretraining_step(backbone: QFormerBackbone, temperature: torch.Tensor, itm_head: torch.nn.Linear | None,
                     images: torch.Tensor, encoded: dict, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """One BLIP-2 stage-1 step on a random batch: ITC, plus ITM when ``itm_head`` is given."""
    rows = torch.randint(0, images.shape[0], (batch_size,), generator=generator)
    qformer = backbone.qformer
    features = backbone.image_features(images[rows])  # the frozen tower: no graph
    mask = encoded["attention_mask"][rows]
    width = int(mask.sum(1).max())
    ids, mask = encoded["input_ids"][rows, :width], mask[:, :width]
    image = qformer.image_vectors(qformer.image_queries(features))
    text = qformer.text_vector(qformer.text(ids, mask))
    scores = similarity(text.float(), image.float()) / temperature.clamp(0.001, 0.5)  # [texts, images]
    labels = torch.arange(batch_size)
    loss = (F.cross_entropy(scores, labels) + F.cross_entropy(scores.T, labels)) / 2
    if itm_head is not None:
        loss = loss + itm_loss(qformer, itm_head, features, ids, mask, scores.detach(), generator)
    return loss


def itm_loss(qformer, itm_head: torch.nn.Linear, features: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
             scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """BLIP-2's image-text matching: the B matching pairs, each text with a negative image and
    each image with a negative text, sampled in proportion to softmax(ITC similarity) among the
    batch's non-matching pairs (a pair with the very same text counts as matching)."""
    batch = len(ids)
    same = (ids[:, None, :] == ids[None, :, :]).all(dim=-1)  # equal ids pad alike, so their masks are equal too
    text_to_image = scores.softmax(dim=1).masked_fill(same, 0) + (~same) * 1e-12
    image_to_text = scores.T.softmax(dim=1).masked_fill(same, 0) + (~same) * 1e-12
    negative_image = torch.multinomial(text_to_image, 1, generator=generator).squeeze(1)
    negative_text = torch.multinomial(image_to_text, 1, generator=generator).squeeze(1)
    fused = qformer.fuse(torch.cat([ids, ids, ids[negative_text]]), torch.cat([mask, mask, mask[negative_text]]),
                         torch.cat([features, features[negative_image], features]))
    logits = itm_head(fused).mean(dim=1)  # the mean over the query outputs, as Blip2ForImageTextRetrieval
    labels = torch.cat([torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)])
    return F.cross_entropy(logits.float(), labels)
