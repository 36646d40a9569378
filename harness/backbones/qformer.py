"""BLIP-2's Q-Former as a backbone: learned queries that read an image by cross-attention, and a
BERT text path that shares their self-attention layers.

    backbone = QFormerBackbone.tiny(directory)              # stage 0's CLIP tower + a Q-Former pre-trained here
    backbone = QFormerBackbone.from_directory(blip2_dir)    # a BLIP-2 retrieval checkpoint (blip2-itm-vit-g layout)
    features = backbone.image_features(images_uint8)        # [B, N, Hv]: ln_vision(ViT(x))
    ids, mask = backbone.tokenize(captions)                 # [CLS] caption [SEP]
    queries = backbone.qformer.image_queries(features)      # [B, M, H]: the query outputs over an image
    fused = backbone.qformer.fuse(ids, mask, features)      # [B, M, H]: queries + text, cross-attending the image
    cls = backbone.qformer.text(ids, mask, prefix=fused)    # [B, H]: the text's [CLS], an image-free pass

The parts carry transformers' names (Blip2ForImageTextRetrieval: query_tokens, embeddings,
qformer, vision_projection, text_projection), so a checkpoint's modules are used as they are.
An image-free pass runs with ``query_length`` 0: every token, a prefix of fused prompts too,
then takes the text feed-forward block and no cross-attention, as in SPRC's modified LAVIS
Q-Former (docs/sources.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoTokenizer, Blip2QFormerConfig, Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

from harness.backbones.loading import pretrained_model
from harness.backbones.vision import VisionTower, preprocessor_stats
from harness.core.errors import HarnessError
from harness.core.files import read_json_object


class QFormerParams(BaseModel):
    """Sizes and dropout of a tiny Q-Former (a pretrained one brings its own) and the text length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hidden: int = Field(128, ge=16, description="tiny Q-Former width (BLIP-2: 768; sized like the tiny LM)")
    layers: int = Field(2, ge=1, description="tiny Q-Former layers (BLIP-2: 12)")
    heads: int = Field(4, ge=1)
    cross_attention_frequency: int = Field(2, ge=1, description="a cross-attention block every n layers (BLIP-2: 2)")
    num_query_tokens: int = Field(8, ge=1, description="learned queries, so vectors per target image (BLIP-2 / SPRC: "
                                  "32 over ViT-g's 257 tokens; assumption: 8 over the tiny ViT's 17, our choice)")
    embed_dim: int = Field(128, ge=8, description="tiny projection width (BLIP-2: 256)")
    max_text_length: int = Field(32, ge=4, description="caption tokens kept (SPRC / BLIP-2: max_txt_len 32)")
    dropout: float = Field(0.0, ge=0, lt=1, description="hidden and attention dropout of a tiny Q-Former: none, as "
                           "the harness's other tiny transformers (transformers' CLIP configs); BLIP-2's BERT-base "
                           "uses 0.1, under which stage 0's 300 ITC steps ended at loss 2.74 instead of 1.02")

    def config(self, vocab_size: int, vision_hidden: int, pad_token_id: int) -> Blip2QFormerConfig:
        return Blip2QFormerConfig(
            vocab_size=vocab_size, hidden_size=self.hidden, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, intermediate_size=4 * self.hidden,
            max_position_embeddings=self.num_query_tokens + self.max_text_length + 8, pad_token_id=pad_token_id,
            cross_attention_frequency=self.cross_attention_frequency, encoder_hidden_size=vision_hidden,
            use_qformer_text_input=True, hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout)


class QFormer(nn.Module):
    """Learned query tokens, the text embeddings and the Q-Former, with the two ITC projections."""

    def __init__(self, query_tokens: nn.Parameter, embeddings: nn.Module, qformer: nn.Module,
                 vision_projection: nn.Linear, text_projection: nn.Linear):
        super().__init__()
        self.query_tokens = query_tokens
        self.embeddings = embeddings
        self.qformer = qformer
        self.vision_projection = vision_projection
        self.text_projection = text_projection

    @classmethod
    def build(cls, config: Blip2QFormerConfig, num_query_tokens: int, embed_dim: int) -> QFormer:
        """Fresh weights, initialised as BLIP-2 initialises them (normal, std initializer_range)."""
        std = config.initializer_range
        embeddings = Blip2TextEmbeddings(config)
        for table in (embeddings.word_embeddings, embeddings.position_embeddings):
            nn.init.normal_(table.weight, std=std)
        return cls(nn.Parameter(torch.randn(1, num_query_tokens, config.hidden_size) * std), embeddings,
                   Blip2QFormerModel(config), nn.Linear(config.hidden_size, embed_dim),
                   nn.Linear(config.hidden_size, embed_dim))

    @property
    def num_query_tokens(self) -> int:
        return int(self.query_tokens.shape[1])

    def _run(self, embeds: torch.Tensor, mask: torch.Tensor, query_length: int,
             features: torch.Tensor | None = None) -> torch.Tensor:
        image = {} if features is None else {
            "encoder_hidden_states": features,
            "encoder_attention_mask": torch.ones(features.shape[:2], dtype=torch.long, device=features.device)}
        return self.qformer(query_embeds=embeds, query_length=query_length, attention_mask=mask,
                            **image).last_hidden_state

    def _queries(self, batch: int) -> torch.Tensor:
        return self.query_tokens.expand(batch, -1, -1)

    def image_queries(self, features: torch.Tensor) -> torch.Tensor:
        """[B, M, H]: the learned queries after reading ``features`` (BLIP-2's image side)."""
        queries = self._queries(len(features))
        ones = torch.ones(queries.shape[:2], dtype=torch.long, device=features.device)
        return self._run(queries, ones, self.num_query_tokens, features)

    def fuse(self, ids: torch.Tensor, mask: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """[B, M, H]: the queries' outputs when they self-attend with the text and cross-attend
        the image (SPRC's fusion pass: its sentence-level prompts)."""
        queries = self._queries(len(ids))
        embeds = self.embeddings(input_ids=ids, query_embeds=queries)
        ones = torch.ones(queries.shape[:2], dtype=mask.dtype, device=mask.device)
        return self._run(embeds, torch.cat([ones, mask], dim=1), self.num_query_tokens, features)[:, : queries.shape[1]]

    def text(self, ids: torch.Tensor, mask: torch.Tensor, prefix: torch.Tensor | None = None) -> torch.Tensor:
        """[B, H]: the text's first token ([CLS]) after an image-free pass over [prefix ; text]."""
        embeds = self.embeddings(input_ids=ids, query_embeds=prefix)
        width = 0 if prefix is None else prefix.shape[1]
        if width:
            mask = torch.cat([torch.ones(len(ids), width, dtype=mask.dtype, device=mask.device), mask], dim=1)
        return self._run(embeds, mask, 0)[:, width]

    def prompted_text(self, ids: torch.Tensor, mask: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """[B, H]: position 0 of an image-free pass over [CLS] + prompts + the rest of the text,
        positions counted over every token (SPRC's ``no_img`` embedding path)."""
        words = self.embeddings.word_embeddings(ids)
        prompts = prompts.expand(len(ids), -1, -1).to(words.dtype)
        sequence = torch.cat([words[:, :1], prompts, words[:, 1:]], dim=1)
        positions = self.embeddings.position_ids[:, : sequence.shape[1]]
        sequence = sequence + self.embeddings.position_embeddings(positions)
        ones = torch.ones(len(ids), prompts.shape[1], dtype=mask.dtype, device=mask.device)
        return self._run(sequence, torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1), 0)[:, 0]

    def image_vectors(self, queries: torch.Tensor) -> torch.Tensor:
        """[B, M, E]: each query output projected and normalised (a target's vectors)."""
        return F.normalize(self.vision_projection(queries), dim=-1)

    def text_vector(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, E]: a text position projected and normalised."""
        return F.normalize(self.text_projection(hidden), dim=-1)

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.qformer.config.save_pretrained(str(directory))
        (directory / "qformer.json").write_text(json.dumps(
            {"num_query_tokens": self.num_query_tokens, "embed_dim": self.vision_projection.out_features}))
        save_model(self, str(directory / "model.safetensors"))

    @classmethod
    def load(cls, directory: Path) -> QFormer:
        sizes = json.loads((directory / "qformer.json").read_text())
        qformer = cls.build(Blip2QFormerConfig.from_pretrained(str(directory)), sizes["num_query_tokens"],
                            sizes["embed_dim"])
        load_model(qformer, str(directory / "model.safetensors"))
        return qformer


class QFormerBackbone(nn.Module):
    """A vision tower (``ln_vision`` on its tokens), a Q-Former and its tokenizer.
    ``post_layernorm``: apply the tower's own post-layernorm to every token (a CLIP tower, whose
    last hidden state lacks it); a BLIP-2 tower's last hidden state has it already."""

    def __init__(self, tower: VisionTower, post_layernorm: bool, qformer: QFormer, tokenizer, max_text_length: int,
                 temperature: float | None = None):
        super().__init__()
        self.temperature = temperature  # the ITC temperature the Q-Former was pre-trained with, if known
        self.tower = tower
        self.post_layernorm = post_layernorm
        self.qformer = qformer
        self.tokenizer = tokenizer
        self.max_text_length = max_text_length

    @classmethod
    def tiny(cls, directory: Path, max_text_length: int) -> QFormerBackbone:
        """Stage 0's Q-Former directory (harness.pretraining.blip2_stage1): the CLIP tower, whose own
        post-layernorm plays BLIP-2's ``ln_vision``, the Q-Former and its word tokenizer."""
        tower = VisionTower.from_directory(directory / "vision")
        tokenizer = AutoTokenizer.from_pretrained(str(directory / "tokenizer"), local_files_only=True)
        report = read_json_object(directory / "qformer.json", fix=f"delete {directory} to build stage 0 again")
        learned = report.get("temperature")
        learned = float(learned) if isinstance(learned, (int, float)) and 0 < learned else None
        return cls(tower, True, QFormer.load(directory / "qformer"), tokenizer, max_text_length, learned)

    @classmethod
    def from_directory(cls, directory: str | Path, max_text_length: int,
                       field: str = "method.params.backbone.blip2_dir") -> QFormerBackbone:
        """A BLIP-2 retrieval checkpoint (``Blip2ForImageTextRetrieval``, as blip2-itm-vit-g) with
        its tokenizer; its vision model's last hidden state already has ``ln_vision`` applied."""
        from transformers import Blip2ForImageTextRetrieval

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise HarnessError("no config.json in the BLIP-2 directory", file=directory, field=field,
                               fix="point it at a Blip2ForImageTextRetrieval save_pretrained() directory")
        model = pretrained_model(Blip2ForImageTextRetrieval, directory, role="vision")
        if not getattr(model.config.qformer_config, "use_qformer_text_input", False):
            raise HarnessError("the Q-Former has no text input (use_qformer_text_input false)", file=directory,
                               field=field, fix="give a BLIP-2 retrieval (ITM / ITC) checkpoint, not a captioning one")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except (OSError, ValueError) as error:
            raise HarnessError(f"no usable tokenizer: {error}", file=directory, field=field,
                               fix="save the checkpoint's tokenizer into the same directory") from None
        mean, std = preprocessor_stats(directory, model.config.vision_config)
        tower = VisionTower(model.vision_model, int(model.config.vision_config.image_size), mean, std)
        qformer = QFormer(model.query_tokens, model.embeddings, model.qformer, model.vision_projection,
                          model.text_projection)
        return cls(tower, False, qformer, tokenizer, max_text_length)

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """[B, N, Hv]: ``ln_vision(ViT(images))`` from uint8 images; without a graph when the
        tower is frozen."""
        frozen = not any(p.requires_grad for p in self.tower.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            features = self.tower(images)
            return self.tower.model.post_layernorm(features) if self.post_layernorm else features

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, attention mask) of ``texts``, [CLS] first, on the backbone's device."""
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_text_length,
                                 return_tensors="pt")
        device = self.qformer.query_tokens.device
        return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
