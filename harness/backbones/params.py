"""Backbone settings shared by every LVLM-style method."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.data.synthetic.render import SCENE_CODE_VERSION


class BackboneParams(BaseModel):
    """Where the vision tower and the language model come from, and their tiny sizes.

    ``source: tiny`` builds them from transformers configs (CLIPVisionConfig; LlamaConfig or
    Qwen2Config) and warm-starts them with stage 0; ``source: pretrained`` loads local
    directories with the transformers Auto classes: ``vision_dir`` (CLIP or SigLIP) plus
    ``language_dir`` (a causal LM with its tokenizer), or one ``lvlm_dir`` holding a LLaVA-style
    (vision_tower + language_model) or Qwen2-VL / Qwen2.5-VL (visual + language_model) checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Literal["tiny", "pretrained"] = Field("tiny", description="tiny: from config + stage 0; pretrained: local "
                                                                      "dirs")
    vision_hidden: int = Field(128, ge=16, description="tiny vision width (docs/assumptions.md)")
    vision_layers: int = Field(2, ge=1, description="tiny vision layers")
    vision_heads: int = Field(4, ge=1)
    patch_size: int = Field(16, ge=2, description="ViT patch side; 64 px / 16 = 16 patches")
    vision: Literal["pixels", "scene_graph"] = Field(
        "pixels", description="what the tiny vision tower reads: pixels (the rendered images), or scene_graph, the "
        "perfect-perception track: each image drawn as its scene graph's codes, one patch per grid cell, so each "
        "cell's token is the sum of a shape, colour, size and cell embedding (harness.data.synthetic.render."
        "scene_code_image); needs the embedded benchmark and patch_size = image_size // 3 (21 at 64 px)")
    language_family: Literal["llama", "qwen2"] = Field("llama", description="tiny LM architecture")
    language_hidden: int = Field(128, ge=16, description="tiny LM width (docs/assumptions.md)")
    language_layers: int = Field(2, ge=1, description="tiny LM layers")
    language_heads: int = Field(4, ge=1)
    vision_dir: str | None = Field(None, description="pretrained: CLIP/SigLIP checkpoint directory")
    language_dir: str | None = Field(None, description="pretrained: causal LM directory (with tokenizer)")
    lvlm_dir: str | None = Field(None, description="pretrained: one LLaVA-, Qwen2-VL- or Qwen2.5-VL-style checkpoint "
                                                   "directory (with tokenizer)")
    lora_rank: int = Field(8, ge=1, description="LoRA rank on the LM (a CIR-LVLM with lm_adaptation: lora); ReCALL "
                                                "uses 16 on Qwen2.5-VL-7B")
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None, description="attention kernel of every transformers model of the method (flash_attention_2 needs the "
        "flash-attn package and a GPU); null: transformers' default (SDPA where it applies). Not part of the run id")
    freeze_vision: bool | None = Field(
        None, description="freeze the vision tower (default: frozen when it starts pretrained or warm-started, as "
        "TRACE; trained when built from scratch)")

    @model_validator(mode="after")
    def _scene_graph_is_tiny(self) -> BackboneParams:
        if self.vision == "scene_graph" and self.source != "tiny":
            raise ValueError("vision: scene_graph replaces a tiny tower's pixels by scene codes; a pretrained "
                             "checkpoint reads pixels (set source: tiny, or vision: pixels)")
        return self

    def vision_frozen(self, warm_started: bool) -> bool:
        if self.freeze_vision is not None:
            return self.freeze_vision
        return self.source == "pretrained" or warm_started

    def tiny_key(self) -> dict[str, object]:
        """The settings that define a tiny backbone (for the stage-0 cache key)."""
        key = self.model_dump(include={"vision_hidden", "vision_layers", "vision_heads", "patch_size",
                                       "language_family", "language_hidden", "language_layers", "language_heads"})
        if self.vision != "pixels":  # pixels left out, so the keys of before the setting stay valid
            key.update(vision=self.vision, scene_codes=SCENE_CODE_VERSION)
        return key
