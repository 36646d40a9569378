"""CIR-LVLM: a vision-language model used as a user-intent-aware encoder (Sun et al., AAAI 2025).

family: lvlm | paper: "Leveraging Large Vision-Language Model as User Intent-aware Encoder for
Composed Image Retrieval", arXiv 2412.11087 | assumes: everything marked below as NOT FOUND
(the full text was not available; see docs/assumptions.md).

One LVLM encodes both sides in a single forward pass each, guided by a hybrid intent
instruction:

    query : [BOS] [visual prompt tokens of the reference] [caption] [task prompt (query)]  [soft prompt] [EMB]
    target: [BOS] [visual prompt tokens of the candidate]           [task prompt (target)] ([soft prompt]) [EMB]

the order of the seed's Figure 3 (task input, task prompt, instance-specific soft prompt);
``instruction_order: task_first`` puts the task prompt right after [BOS] instead.

The visual prompt tokens come from a connector (learnable queries by default, as the paper
describes); the soft prompt is picked per instance from a learnable prompt pool. The
embedding is the final hidden state at [EMB] -> linear -> L2-normalised; both sides share
every parameter. Loss: in-batch InfoNCE + ``key_loss_weight`` x the pool's key loss.
Variants (task prompt on/off, soft prompt pool/universal/off, pool size, prompt length,
top-k, selection features, connector type) are parameters of this one class.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_model
from torch import nn
from transformers import AutoModelForImageTextToText, AutoTokenizer

from harness.backbones.connector import ConnectorParams, build_connector
from harness.backbones.language import (
    adapted,
    decoder,
    language_model_from_directory,
    tiny_language_model,
)
from harness.backbones.loading import pretrained_model
from harness.backbones.params import BackboneParams
from harness.backbones.tokenization import (
    EMBEDDING_TOKEN,
    QUERY_TASK_PROMPT,
    TARGET_TASK_PROMPT,
    train_lvlm_tokenizer,
)
from harness.backbones.vision import QwenVisionTower, VisionTower, preprocessor_stats
from harness.core.device import full_precision, in_weights_dtype, to_device
from harness.core.errors import HarnessError
from harness.methods.base import (
    CIRMethod,
    ImageBatch,
    MethodContext,
    MethodParams,
    TripletBatch,
    info_nce,
)
from harness.methods.cir_lvlm.chat import ChatTemplate, chat_frame
from harness.methods.cir_lvlm.prompt_pool import PromptPool, RunningStandardiser
from harness.methods.registry import register_method
from harness.pretraining.stage0 import Stage0Params, Stage0Request, ensure_stage0
from harness.pretraining.warm_start import Stage0WarmStart

# Default task prompts (harness.backbones.tokenization): NOT FOUND in the paper (only that query and target
# prompts differ); worded in the "... in one word:" style of LVLM embedding work (E5-V, Jiang
# et al. 2024; TRACE's <|emb|> token, arXiv 2603.02929) - an assumption.


class CIRLVLMParams(MethodParams):
    """CIR-LVLM settings; defaults not in the paper are assumptions with their source named."""

    unread_settings: ClassVar[tuple[str, ...]] = ()  # it reads every stage-0 phase

    backbone: BackboneParams = Field(default_factory=BackboneParams, description="vision tower + language model")
    connector: ConnectorParams = Field(default_factory=ConnectorParams, description="vision -> visual prompt tokens")
    stage0: Stage0Params = Field(default_factory=Stage0Params, description="warm start of tiny backbones")
    task_prompt: bool = Field(True, description="task-level instruction on (query/target wording differs)")
    lm_adaptation: Literal["full", "lora", "frozen"] = Field(
        "lora", description="how the language model adapts to the CIR task, tiny and pretrained alike: lora (adapters "
        "on its projections, every LM weight frozen; the recipe of LVLM-for-CIR work: TRACE and ReCALL put LoRA on the "
        "LLM with the vision tower frozen), full (every LM weight trains) or frozen (none; only connector, prompts, "
        "[EMB] and head train)")
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="names of the LM modules that get LoRA adapters (the vision tower's never do); default the "
        "attention projections, an assumption (neither TRACE nor ReCALL names its targets)")
    instruction_order: Literal["paper", "task_first"] = Field(
        "paper", description="paper: task input (visual prompt tokens, caption) -> task prompt -> soft prompt -> "
        "[EMB], the order of the seed's Figure 3, whose Figure 5 measures the task prompt's attention to the task "
        "input (under causal attention only a prompt after the input can attend to it); task_first: the task prompt "
        "before the image (this harness's layout before issue 18, kept selectable)")
    soft_prompt: Literal["pool", "universal", "off"] = Field("pool", description="instance-specific pool, one "
                                                                                 "universal prompt, or none")
    pool_size: int = Field(10, ge=1, description="prompts in the pool (NOT FOUND; L2P uses 10)")
    prompt_length: int = Field(4, ge=1, description="tokens per prompt (NOT FOUND; the prototype used 4, "
                                                    "docs/assumptions.md; L2P uses 5)")
    top_k: int = Field(1, ge=1,
                       description="prompts selected per instance (NOT FOUND; top-1 here, L2P selects 5 of 10)")
    selection: Literal["visual", "text", "both"] = Field(
        "both", description="selection feature: mean visual prompt token, mean caption embedding, or both concatenated "
                            "(NOT FOUND)")
    standardise_selection: bool = Field(
        True, description="standardise each selection feature per dimension (running mean/std) before matching keys; "
        "harness assumption: raw mean features share a large common component and the pool collapses to one prompt")
    selection_calibration: int = Field(
        1024, ge=0, description="after training, set the selection standardiser's moments from this many training "
        "queries with the final weights (0: keep the moving average of training's batch moments); harness assumption, "
        "as precise BatchNorm statistics (Wu & Johnson 2021): the moving average lags features that still drift at "
        "the last steps and a short run then sends every query to one prompt")
    target_soft_prompt: bool = Field(False, description="also give the target side a selected soft prompt (NOT FOUND)")
    key_loss_weight: float = Field(0.1, ge=0, description="weight of the key-matching loss (NOT FOUND; the prototype "
                                                          "used 0.1, docs/assumptions.md)")
    query_task_prompt: str = Field(QUERY_TASK_PROMPT, description="task prompt of the query side")
    target_task_prompt: str = Field(TARGET_TASK_PROMPT, description="task prompt of the target side")
    embed_dim: int = Field(256, ge=8, description="embedding width after the projection (NOT FOUND)")
    learnable_temperature: bool = Field(False, description="learn the InfoNCE temperature (starts at `temperature`)")
    max_caption_tokens: int = Field(32, ge=4, description="captions are truncated to this many tokens")
    chat_template: ChatTemplate = Field(
        "auto", description="frame the instruction with the checkpoint's chat template and its image between the "
        "vision delimiters (harness.methods.cir_lvlm.chat); auto: when the checkpoint has a template "
        "(instruction-tuned), never for tiny backbones; on: require one; off: the bare instruction")


def stage0_request(params: CIRLVLMParams, dataset_key: str) -> Stage0Request:
    """The stage-0 checkpoint a tiny CIR-LVLM with these parameters starts from."""
    return Stage0Request(dataset_key, params.backbone, params.connector.model_dump(), params.stage0,
                         extra_corpus=(params.query_task_prompt, params.target_task_prompt, EMBEDDING_TOKEN),
                         task_prompts=(params.query_task_prompt, params.target_task_prompt))


@register_method("cir_lvlm", family="lvlm_encoder", paper="arXiv 2412.11087 (AAAI 2025)",
                 description="LVLM as intent-aware encoder: task prompt + pooled soft prompt, [EMB] token embedding")
class CIRLVLM(CIRMethod):
    Params = CIRLVLMParams
    params: CIRLVLMParams

    @classmethod
    def warm_starts(cls, params: CIRLVLMParams, dataset_key: str) -> list[Stage0WarmStart]:
        if params.backbone.source != "tiny" or not params.stage0.enabled:
            return []
        return [Stage0WarmStart(stage0_request(params, dataset_key), full=True)]

    def __init__(self, params: CIRLVLMParams, context: MethodContext):
        super().__init__(params, context)
        self._chat_source: tuple[Any, Path | None] = (None, None)  # (LVLM config, directory) of a checkpoint
        self.vision, self.language_model, self.tokenizer, connector_file, projector = self._backbones(params, context)
        hidden = self.language_model.get_input_embeddings().embedding_dim
        if params.connector.type == "checkpoint":
            self.connector = checkpoint_connector(projector)
        else:
            self.connector = build_connector(params.connector, self.vision.hidden_size, hidden)
        if connector_file is not None:
            load_model(self.connector, str(connector_file))
        self.mrope_grid = self._mrope_grid(params)
        warn_low_resolution(context.image_size, self.vision)
        vocabulary = len(self.tokenizer)
        added = self._ensure_vocabulary([params.query_task_prompt, params.target_task_prompt, EMBEDDING_TOKEN])
        self.embedding_token_id = self.tokenizer.convert_tokens_to_ids(EMBEDDING_TOKEN)
        self.chat = chat_frame(self.tokenizer, params.chat_template, *self._chat_source)
        self.language_model = adapted(self.language_model, params.backbone, params.lm_adaptation, params.lora_targets)
        self.embedding_row = self._trainable_embedding_row(vocabulary if EMBEDDING_TOKEN in added else None)
        self.pool: PromptPool | None = None
        self._whole_batch_moments: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        if params.soft_prompt != "off":
            size = params.pool_size if params.soft_prompt == "pool" else 1
            top_k = params.top_k if params.soft_prompt == "pool" else 1
            if top_k > size:
                raise HarnessError(f"top_k {top_k} is larger than pool_size {size}", field="method.params.top_k",
                                   fix="lower top_k or raise pool_size")
            parts = ["visual", "text"] if params.selection == "both" else [params.selection]
            self.selection_parts = parts
            self.pool = PromptPool(size, params.prompt_length, hidden, top_k, key_dim=hidden * len(parts))
            self.standardisers = nn.ModuleDict({part: RunningStandardiser(hidden) if params.standardise_selection
                                                else nn.Identity() for part in parts})
        self.head = nn.Linear(hidden, params.embed_dim)
        self.log_inverse_temperature = nn.Parameter(
            torch.tensor(math.log(1.0 / params.temperature)), requires_grad=params.learnable_temperature)
        for tensor in self.vision.parameters():
            tensor.requires_grad_(not params.backbone.vision_frozen(warm_started=params.stage0.enabled))
        self._task_ids = {side: self._token_ids(text) for side, text in
                          (("query", params.query_task_prompt), ("target", params.target_task_prompt))}
        bos = self.tokenizer.bos_token_id
        self._bos = [bos] if bos is not None and self.chat is None else []

    # ------------------------------------------------------------------ construction

    def _backbones(self, params: CIRLVLMParams, context: MethodContext):
        """(vision tower, LM decoder, tokenizer, connector weights or None, the checkpoint's own
        projector or None) for the source."""
        backbone = params.backbone
        if backbone.source == "pretrained":
            return self._pretrained(backbone, context.image_size)
        if params.stage0.enabled:
            if context.train_split is None:
                raise HarnessError("stage 0 needs the training split", field="method.params.stage0.enabled",
                                   fix="run through `harness run`, or set stage0.enabled: false")
            directory = ensure_stage0(stage0_request(params, context.dataset_key), context.train_split,
                                      progress=context.progress)
            vision = VisionTower.from_directory(directory / "vision")
            lm, tokenizer = language_model_from_directory(directory / "language_model", field="stage0",
                                                          tokenizer_dir=directory / "tokenizer")
            return vision, decoder(lm), tokenizer, directory / "connector.safetensors", None
        tokenizer = train_lvlm_tokenizer([*context.corpus, params.query_task_prompt, params.target_task_prompt])
        vision = VisionTower.tiny(backbone, context.image_size)
        return vision, decoder(tiny_language_model(backbone, tokenizer)), tokenizer, None, None

    def _pretrained(self, backbone: BackboneParams, image_size: int):
        if backbone.lvlm_dir:
            directory = Path(backbone.lvlm_dir)
            if not (directory / "config.json").is_file():
                raise HarnessError("no config.json in the LVLM directory", file=directory,
                                   field="method.params.backbone.lvlm_dir",
                                   fix="point it at a LLaVA-style save_pretrained() directory")
            model = pretrained_model(AutoModelForImageTextToText, directory)
            inner = getattr(model, "model", model)
            if hasattr(inner, "visual") and hasattr(inner, "language_model") and not _is_deepstack(inner.visual):
                # Qwen2-VL / Qwen2.5-VL: the merger already maps patches to the LM width.
                mean, std = preprocessor_stats(directory, inner.visual.config)
                vision = QwenVisionTower(inner.visual, image_size, mean, std)
                projector = nn.Identity()  # the merger is the tower's last module
            elif hasattr(inner, "vision_tower") and hasattr(inner, "language_model"):
                vision_config = inner.vision_tower.config
                mean, std = preprocessor_stats(directory, vision_config)
                layer = model.config.vision_feature_layer  # LLaVA-1.5: -2, the layer its projector was trained on
                if not isinstance(layer, int):
                    raise HarnessError(f"vision_feature_layer {layer} (several layers) is not supported",
                                       file=directory,
                                       field="method.params.backbone.lvlm_dir", fix="use a single-layer LLaVA "
                                                                                    "checkpoint")
                vision = VisionTower(inner.vision_tower, int(vision_config.image_size), mean, std, feature_layer=layer,
                                     drop_cls=model.config.vision_feature_select_strategy == "default")
                projector = inner.multi_modal_projector
            else:
                raise HarnessError(f"{type(model).__name__} is neither LLaVA-style (vision_tower + language_model) "
                                   "nor Qwen2-VL-style (visual + language_model)",
                                   file=directory, field="method.params.backbone.lvlm_dir",
                                   fix="give vision_dir and language_dir separately")
            language = inner.language_model
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, padding_side="right")
            self._chat_source = (model.config, directory)
        elif backbone.vision_dir and backbone.language_dir:
            vision = VisionTower.from_directory(backbone.vision_dir)
            lm, tokenizer = language_model_from_directory(backbone.language_dir,
                                                          field="method.params.backbone.language_dir")
            language, projector = decoder(lm), None
            self._chat_source = (None, Path(backbone.language_dir))
        else:
            raise HarnessError("source 'pretrained' needs lvlm_dir, or vision_dir and language_dir",
                               field="method.params.backbone", fix="set the local checkpoint directories")
        return vision, language, with_pad_token(tokenizer), None, projector

    def _mrope_grid(self, params: CIRLVLMParams) -> int | None:
        """Side of the merged-patch grid whose tokens get M-RoPE positions (Qwen2-VL's merger
        tokens as the checkpoint lays them out); None where positions are 1-D."""
        rope = getattr(getattr(self.language_model, "config", None), "rope_parameters", None) or {}
        if (params.connector.type != "checkpoint" or "mrope_section" not in rope
                or not isinstance(self.vision, QwenVisionTower)):
            return None
        return self.vision.image_size // (self.vision.patch * self.vision.merge)

    def _ensure_vocabulary(self, texts: list[str]) -> set[str]:
        """Add words the tokenizer maps to [UNK] (and the [EMB] token), growing the LM's input
        embeddings only when the tokenizer outgrows them: released checkpoints pad their
        vocabulary (Qwen2.5-VL: 152064 rows for 151665 tokens), and resizing to the tokenizer's
        length would cut those rows off. Returns the words added."""
        unknown: list[str] = []
        unk = self.tokenizer.unk_token_id
        for text in texts:
            for word in text.split():
                ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
                own = self.tokenizer.convert_tokens_to_ids(word) if word == EMBEDDING_TOKEN else None
                if (unk is not None and unk in ids) or (word == EMBEDDING_TOKEN and (ids != [own] or own == unk)):
                    unknown.append(word)
        if unknown:
            self.tokenizer.add_tokens(sorted(set(unknown)), special_tokens=False)
            if len(self.tokenizer) > self.language_model.get_input_embeddings().num_embeddings:
                self.language_model.resize_token_embeddings(len(self.tokenizer))
        return set(unknown)

    def _trainable_embedding_row(self, new_after: int | None) -> nn.Parameter | None:
        """[EMB]'s input embedding as a float32 parameter of its own when the LM's embedding table
        is frozen (LoRA), so the token the embedding is read at is learned; None when the table
        trains (the row trains with it). A token new to the checkpoint (``new_after``: the
        vocabulary's size before it was added) starts at the mean of the vocabulary's rows, as
        transformers' ``resize_token_embeddings`` initialises new rows, not at the untrained
        padding row its id may fall on."""
        table = self.language_model.get_input_embeddings().weight
        if table.requires_grad:
            return None
        start = (table[:new_after].mean(0, dtype=torch.float32) if new_after is not None
                 else table[self.embedding_token_id].float())
        return nn.Parameter(start.detach().clone())

    def _token_ids(self, text: str) -> list[int]:
        """The task prompt's ids (none when the task prompt is off)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if self.params.task_prompt else []

    # ------------------------------------------------------------------ input assembly

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings in float32 (segments are joined in float32, then cast to the LM's dtype)."""
        return self.language_model.get_input_embeddings()(ids).float()

    def perception_features(self, images: torch.Tensor) -> torch.Tensor:
        """The connector's visual prompt tokens: all the language model sees of an image."""
        return self._visual_prompt_tokens(images)

    def _visual_prompt_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """The connector's visual prompt tokens of ``images``, float32 [B, N, hidden]."""
        features = self.vision(to_device(images, self.head.weight.device))
        with full_precision(features.device):
            # float32 connector: the prompt pool selects on the mean visual token, whose instance-to-instance
            # spread (std ~0.007 on the toy model) bf16 rounding at the tokens' magnitude would erase
            return self.connector(features.float())

    def _caption_embeds(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token embeddings [B, T, hidden], mask [B, T]) of the captions, right-padded."""
        device = self.head.weight.device
        tokens = self.tokenizer(captions, add_special_tokens=False, padding=True, truncation=True,
                                max_length=self.params.max_caption_tokens, return_tensors="pt")
        return self._embed(to_device(tokens["input_ids"], device)), to_device(tokens["attention_mask"], device).float()

    def build_inputs(
        self, images: torch.Tensor, captions: list[str] | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, tuple[int, int]], torch.Tensor]:
        """(inputs_embeds, attention_mask, layout, key_loss per item) of a query (captions given)
        or a target (captions None). ``layout`` maps each segment to its [start, end) positions."""
        side = "target" if captions is None else "query"
        batch = images.shape[0]
        device = self.head.weight.device
        visual = self._visual_prompt_tokens(images)
        chat = self.chat
        segments: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        task_first = self.params.instruction_order == "task_first"
        self._add_tokens(segments, "chat_head", chat.head if chat else [], batch)
        self._add_tokens(segments, "bos", self._bos, batch)  # after the head: a chat frame's head carries its own
        self._add_tokens(segments, "task", self._task_ids[side] if task_first else [], batch)
        self._add_tokens(segments, "vision_open", chat.vision_open if chat else [], batch)
        segments.append(("image", visual, torch.ones(visual.shape[:2], device=device)))
        self._add_tokens(segments, "vision_close", chat.vision_close if chat else [], batch)
        caption_embeds = caption_mask = None
        if captions is not None:
            caption_embeds, caption_mask = self._caption_embeds(captions)
            segments.append(("caption", caption_embeds, caption_mask))
        self._add_tokens(segments, "task", [] if task_first else self._task_ids[side], batch)
        key_loss = torch.zeros(batch, device=device)
        if self.pool is not None and (side == "query" or self.params.target_soft_prompt):
            raw = self._raw_selection(visual, caption_embeds, caption_mask)
            prompts, key_loss, self._selected = self.pool(self._standardised(raw, side))  # diagnostics read it
            if self.params.soft_prompt == "universal":
                key_loss = torch.zeros(batch, device=device)
            segments.append(("soft_prompt", prompts, torch.ones(prompts.shape[:2], device=device)))
        self._add_tokens(segments, "chat_tail", chat.tail if chat else [], batch)
        if self.embedding_row is not None:
            emb = self.embedding_row.view(1, 1, -1).expand(batch, 1, -1)
        else:
            emb = self._embed(torch.full((batch, 1), self.embedding_token_id, device=device))
        segments.append(("embedding", emb, torch.ones(batch, 1, device=device)))
        layout, position = {}, 0
        for name, embeds, _ in segments:
            layout[name] = (position, position + embeds.shape[1])
            position += embeds.shape[1]
        inputs = torch.cat([embeds for _, embeds, _ in segments], dim=1)
        mask = torch.cat([mask for _, _, mask in segments], dim=1)
        return inputs, mask, layout, key_loss

    def _add_tokens(self, segments: list[tuple[str, torch.Tensor, torch.Tensor]], name: str, ids: list[int],
                    batch: int) -> None:
        """Append the fixed tokens ``ids`` as segment ``name`` (nothing when there are none)."""
        if not ids:
            return
        device = self.head.weight.device
        embeds = self._embed(torch.tensor(ids, dtype=torch.long, device=device))
        segments.append((name, embeds.unsqueeze(0).expand(batch, -1, -1), torch.ones(batch, len(ids), device=device)))

    def _raw_selection(self, visual, caption_embeds, caption_mask) -> dict[str, torch.Tensor | None]:
        """The detached features that pick soft prompts, per part: the mean visual prompt token
        and/or the mean caption embedding (L2P selects on frozen features); None for the caption
        part of a side without one (a target)."""
        raw: dict[str, torch.Tensor | None] = {}
        for part in self.selection_parts:
            if part == "visual":
                raw[part] = visual.mean(1).detach().float()
            elif caption_embeds is not None:
                mask = caption_mask.unsqueeze(-1)
                raw[part] = ((caption_embeds * mask).sum(1) / mask.sum(1).clamp(min=1)).detach().float()
            else:
                raw[part] = None
        return raw

    def _standardised(self, raw: dict[str, torch.Tensor | None], side: str) -> torch.Tensor:
        """The selection feature: each part standardised (with the whole batch's moments inside
        ``whole_batch``) and concatenated; a missing part contributes the running mean, i.e. zeros."""
        parts = []
        for part, feature in raw.items():
            if feature is None:
                parts.append(torch.zeros_like(next(f for f in raw.values() if f is not None)))
                continue
            moments = self._whole_batch_moments.get((side, part))
            standardiser = self.standardisers[part]
            parts.append(standardiser(feature) if moments is None else standardiser(feature, moments))
        return torch.cat(parts, dim=-1)

    @contextlib.contextmanager
    def whole_batch(self, batch: TripletBatch, parts: list[TripletBatch]) -> Iterator[None]:
        """Micro-batches standardise their selection features with the whole batch's moments, as
        one batch does (and the running moments are updated once per side, as one batch updates
        them): the selection features of every part are computed first, without a graph. This
        costs one more vision + connector forward per micro-batch."""
        if self.pool is None or not self.params.standardise_selection or not self.training:
            yield
            return
        sides = ["query", "target"] if self.params.target_soft_prompt else ["query"]
        with torch.no_grad():
            raws = {side: [self._raw_selection(self._visual_prompt_tokens(part.target_images if side == "target"
                                                                          else part.reference_images),
                                               *(self._caption_embeds(part.captions) if side == "query"
                                                 else (None, None)))
                           for part in parts] for side in sides}
            for side in sides:
                for name in self.selection_parts:
                    if raws[side][0][name] is not None:
                        features = torch.cat([raw[name] for raw in raws[side]])
                        self._whole_batch_moments[(side, name)] = self.standardisers[name].observe(features)
        try:
            yield
        finally:
            self._whole_batch_moments = {}

    def finish_training(self, batches: Iterable[TripletBatch | ImageBatch]) -> None:
        """Re-estimate the selection standardisers' moments on the first ``selection_calibration``
        training queries with the final weights (their targets too where targets select prompts)."""
        limit = self.params.selection_calibration
        if self.pool is None or not self.params.standardise_selection or limit == 0:
            return
        features: dict[str, list[torch.Tensor]] = {part: [] for part in self.selection_parts}
        seen = 0
        for batch in batches:
            assert isinstance(batch, TripletBatch)
            take = min(len(batch), limit - seen)
            sides = [self._raw_selection(self._visual_prompt_tokens(batch.reference_images[:take]),
                                         *self._caption_embeds(batch.captions[:take]))]
            if self.params.target_soft_prompt:
                sides.append(self._raw_selection(self._visual_prompt_tokens(batch.target_images[:take]), None, None))
            for raw in sides:
                for part, feature in raw.items():
                    if feature is not None:
                        features[part].append(feature)
            seen += take
            if seen >= limit:
                break
        for part, chunks in features.items():
            if chunks:
                self.standardisers[part].calibrate(torch.cat(chunks))

    def _encode(self, images: torch.Tensor, captions: list[str] | None) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, mask, layout, key_loss = self.build_inputs(images, captions)
        hidden = self._language_model(inputs, mask, layout).last_hidden_state
        with full_precision(hidden.device):  # the embedding itself stays float32
            return F.normalize(self.head(hidden[:, -1].float()), dim=-1), key_loss

    def _language_model(self, inputs: torch.Tensor, mask: torch.Tensor, layout: dict[str, tuple[int, int]], **kwargs):
        """The LM over assembled float32 inputs, in its weights' dtype (a half-precision checkpoint
        computes as released; a float32 one under the run's autocast). Padding inside the sequence
        takes no position; Qwen's merged patch tokens get their M-RoPE grid positions."""
        positions = (mask.long().cumsum(1) - 1).clamp(min=0)
        if self.mrope_grid is not None:
            positions = mrope_positions(positions, layout["image"], self.mrope_grid)
        with in_weights_dtype(self.language_model) as dtype:
            return self.language_model(inputs_embeds=inputs.to(dtype), attention_mask=mask.long(),
                                       position_ids=positions, use_cache=False, **kwargs)

    # ------------------------------------------------------------------ the method interface

    def encode_query(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return self._encode(images, captions)[0]

    def encode_target(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode(images, None)[0]

    def loss_inputs(self, batch: TripletBatch) -> dict[str, torch.Tensor]:
        query, query_key_loss = self._encode(batch.reference_images, batch.captions)
        target, target_key_loss = self._encode(batch.target_images, None)
        return {"query": query, "target": target, "key_loss": query_key_loss + target_key_loss}

    def loss_from(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """InfoNCE + ``key_loss_weight`` x the mean key loss (query side, plus the target's own
        when it selects a soft prompt)."""
        temperature = float(self.params.temperature)
        if self.params.learnable_temperature:
            temperature = 1.0 / self.log_inverse_temperature.clamp(max=math.log(100.0)).exp()
        contrastive = info_nce(inputs["query"], inputs["target"], temperature, self.params.symmetric_loss)
        return contrastive + self.params.key_loss_weight * inputs["key_loss"].mean()

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``new`` (connector, prompt pool, [EMB] row, head, temperature: trained from scratch),
        ``language_model`` (its LoRA adapters, or all of it when no adapter) and ``vision`` (when
        the tower trains): what ``train.group_lr`` sets apart."""
        trained = {id(p) for p in self.optimizer_parameters()}
        groups: dict[str, list[nn.Parameter]] = {
            "language_model": [p for p in self.language_model.parameters() if id(p) in trained],
            "vision": [p for p in self.vision.parameters() if id(p) in trained]}
        taken = {id(p) for group in groups.values() for p in group}
        groups["new"] = [p for p in self.optimizer_parameters() if id(p) not in taken]
        return groups

    def provenance(self) -> dict[str, Any]:
        """The embedding is the language model's last hidden state at [EMB] (after its final
        norm) through the head; the exact task prompts, their order, the chat template's digest
        and the vision tower's preprocessing go with it."""
        template = getattr(self.tokenizer, "chat_template", None)
        return {"embedding": "the language model's last hidden state (after its final norm) at the [EMB] token, "
                             "through the head",
                "task_prompts": {"query": self.params.query_task_prompt, "target": self.params.target_task_prompt,
                                 "on": self.params.task_prompt},
                "instruction_order": self.params.instruction_order,
                "chat_template_sha256": hashlib.sha256(str(template).encode()).hexdigest()[:16] if template else None,
                "vision": self.vision.provenance()}

    def statistics(self) -> dict[str, Any]:
        return {} if self.pool is None else self.pool.usage_statistics()

    def reset_statistics(self) -> None:
        if self.pool is not None:
            self.pool.reset_usage()

    def diagnostics(self, reference_images: torch.Tensor, captions: list[str]) -> dict[str, Any]:
        """Where the prompts attend, as the paper's Figure 5 shows it: for the soft prompt, the
        task prompt and the [EMB] token, the attention weight summed over the visual prompt
        tokens and over the caption tokens, averaged over heads, layers, prompt tokens and
        queries. In the paper's order both prompts follow the task input; with
        ``instruction_order: task_first`` the task prompt comes first, so under causal attention it
        cannot see either (its shares are 0 by construction, and reported so). Beside each share:
        what uniform causal attention over the same tokens gives (a softmax makes every share
        non-zero, so only the difference from it says where a prompt looks), and the per-query
        values the report's intervals are drawn from; with a pool, each query's top-1 prompt (the
        report tests it against the query's edit family)."""
        if not captions:
            return {}
        inputs, mask, layout, _ = self.build_inputs(reference_images, captions)
        model = self.language_model
        previous = model.config._attn_implementation
        model.set_attn_implementation("eager")  # fused kernels do not return attention weights
        try:
            output = self._language_model(inputs, mask, layout, output_attentions=True)
        finally:
            model.set_attn_implementation(previous)
        attention = torch.stack([a.float() for a in output.attentions]).mean(dim=(0, 2))  # [B, T, T]
        observed, uniform = _segment_shares(attention, layout), _segment_shares(uniform_attention(mask), layout)
        found = {"attention_share": _means(observed), "attention_share_uniform": _means(uniform),
                 "attention_share_per_query": observed, "attention_share_uniform_per_query": uniform,
                 "attention_queries": len(captions)}
        if self.pool is not None and self.pool.pool_size > 1:  # which prompt each diagnosed query chose (top-1)
            found["prompt_choice"] = [int(i) for i in self._selected[:, 0].tolist()]
        return found

    def statistics_counters(self) -> list[torch.Tensor]:
        return [] if self.pool is None else [self.pool.usage]


def checkpoint_connector(projector: nn.Module | None) -> nn.Module:
    """The LVLM's own alignment (``connector.type: checkpoint``): LLaVA's projector, trained on,
    or identity after Qwen's merger, which its vision tower already applies."""
    if projector is None:
        raise HarnessError("connector type 'checkpoint' needs an LVLM checkpoint with its own projector",
                           field="method.params.connector.type",
                           fix="set backbone.lvlm_dir (LLaVA, Qwen2-VL, Qwen2.5-VL), or use type queries or mlp")
    return projector.requires_grad_(True)


def mrope_positions(positions: torch.Tensor, image: tuple[int, int], grid: int) -> torch.Tensor:
    """[3, B, T] M-RoPE position ids (temporal, height, width) from 1-D ``positions`` [B, T]: as
    Qwen2-VL's get_rope_index lays out one still image, the image's g x g merged tokens starting at
    position s sit at (s, s + row, s + column), and the tokens after it continue from s + g."""
    start, stop = image
    if stop - start != grid * grid:
        raise ValueError(f"{stop - start} visual tokens are not a {grid} x {grid} grid")
    index = torch.arange(grid * grid, device=positions.device)
    first = positions[:, start : start + 1]
    rows = positions.unsqueeze(0).repeat(3, 1, 1)
    rows[0, :, start:stop] = first
    rows[1, :, start:stop] = first + index // grid
    rows[2, :, start:stop] = first + index % grid
    rows[:, :, stop:] -= grid * grid - grid
    return rows


def warn_low_resolution(image_size: int, vision: nn.Module) -> None:
    """One line on stderr when the images are smaller than the tower's resolution (they are
    upsampled to it): e.g. a config still at the embedded benchmark's 64 px on real data."""
    tower = int(getattr(vision, "image_size", 0) or 0)
    if tower and image_size < tower:
        print(f"note: dataset.image_size {image_size} is below the vision tower's {tower} px; images are upsampled "
              f"(set dataset.image_size: {tower} for real data)", file=sys.stderr)


def with_pad_token(tokenizer):
    """``tokenizer``, given a pad token if it has none (LLaMA-2/3 and Mistral ship without one): its
    EOS (else UNK), the usual choice. Padded positions are masked out and never read, so which
    existing token pads does not matter; no row is added to the vocabulary."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    return tokenizer


def _is_deepstack(visual: torch.nn.Module) -> bool:
    """Qwen3-VL feeds vision features into several LM layers (deepstack), which a single
    sequence of visual prompt tokens cannot reproduce: refused rather than silently wrong."""
    return bool(getattr(visual.config, "deepstack_visual_indexes", None))


def uniform_attention(mask: torch.Tensor) -> torch.Tensor:
    """[B, T, T] attention that spreads each position's weight evenly over the positions causal
    attention lets it see (itself and every earlier unmasked token): Figure 5's null reference."""
    length = mask.shape[1]
    causal = torch.tril(torch.ones(length, length, device=mask.device))
    allowed = causal[None] * mask[:, None, :].float()
    return allowed / allowed.sum(-1, keepdim=True).clamp_min(1.0)


def _segment_shares(attention: torch.Tensor, layout: dict) -> dict[str, dict[str, list[float]]]:
    """Per query, the attention weight a segment's rows put on the visual and the caption tokens
    (summed over those tokens, averaged over the segment's rows)."""
    shares: dict[str, dict[str, list[float]]] = {}
    for segment in ("soft_prompt", "task", "embedding"):
        if segment in layout:
            rows = slice(*layout[segment])
            shares[segment] = {part: attention[:, rows, slice(*layout[part])].sum(-1).mean(-1).tolist()
                               for part in ("image", "caption") if part in layout}
    return shares


def _means(shares: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    return {segment: {part: float(sum(values) / len(values)) for part, values in parts.items()}
            for segment, parts in shares.items()}

