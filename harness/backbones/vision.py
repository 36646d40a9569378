"""The vision tower: patch features [B, N, D] from uint8 images.

    tower = VisionTower.tiny(params, image_size=64)        # CLIPVisionModel from a config
    tower = VisionTower.from_directory("/models/clip")     # CLIP / SigLIP / CLIPVisionModel
    features = tower(images_uint8)                          # last hidden state, CLS first (CLIP)
    tower = QwenVisionTower(qwen_vl.model.visual, ...)      # Qwen2-VL / Qwen2.5-VL: merged patch tokens
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, CLIPVisionConfig, CLIPVisionModel

from harness.backbones.feature_table import FeatureTable
from harness.backbones.loading import pretrained_model
from harness.backbones.params import BackboneParams
from harness.core.device import in_weights_dtype
from harness.core.errors import HarnessError
from harness.core.files import read_json_object

#: Pixel statistics of the tiny towers (docs/assumptions.md): x / 255 -> (x - 0.5) / 0.25.
TINY_MEAN, TINY_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
#: OpenAI CLIP statistics, used when a pretrained directory has no preprocessor config.
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def preprocessing_record(size: int, resampling: str, mean, std) -> dict:
    """How an image reaches a tower (size, resampling, per-channel mean and std), as result.json's
    provenance records it (harness.methods.base.CIRMethod.provenance)."""
    def rounded(values) -> list[float]:
        return [round(float(v), 6) for v in torch.as_tensor(values).flatten()]

    return {"size": size, "resampling": resampling, "mean": rounded(mean), "std": rounded(std)}


def tiny_vision_config(hidden: int, layers: int, heads: int, image_size: int, patch_size: int) -> CLIPVisionConfig:
    """The config of every tiny ViT in the harness (MLP width 4x, as CLIP)."""
    return CLIPVisionConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                            num_attention_heads=heads, image_size=image_size, patch_size=patch_size)


class VisionTower(nn.Module):
    """A transformers vision model plus its input normalisation and resolution.

    ``feature_layer`` picks the hidden state the features come from (-1: the last; LLaVA-1.5 was
    trained on -2) and ``drop_cls`` drops the first token (LLaVA's "default" selection strategy);
    both are read from a LLaVA checkpoint's config. A tower kept in half precision runs in its own
    dtype (harness.core.device.in_weights_dtype)."""

    def __init__(self, model: nn.Module, image_size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 feature_layer: int = -1, drop_cls: bool = False):
        super().__init__()
        self.model = model
        self.image_size = image_size
        self.feature_layer = feature_layer
        self.drop_cls = drop_cls
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        #: the frozen tower's outputs computed once (harness.backbones.feature_table), or None
        self.feature_table: FeatureTable | None = None

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @classmethod
    def tiny(cls, params: BackboneParams, image_size: int) -> VisionTower:
        config = tiny_vision_config(params.vision_hidden, params.vision_layers, params.vision_heads, image_size,
                                    params.patch_size)
        return cls(CLIPVisionModel(config), image_size, TINY_MEAN, TINY_STD)

    @classmethod
    def from_directory(cls, directory: str | Path, mean=None, std=None) -> VisionTower:
        """Load CLIP / SigLIP (whole model or vision-only) from a local directory."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise HarnessError("no config.json in the vision checkpoint directory", file=directory,
                               field="backbone.vision_dir", fix="point it at a save_pretrained() directory")
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        model = pretrained_model(AutoModel, directory, role="vision")
        vision = getattr(model, "vision_model", model)
        vision_config = getattr(config, "vision_config", config)
        if mean is None:
            mean, std = preprocessor_stats(directory, vision_config)
        return cls(vision, int(vision_config.image_size), tuple(mean), tuple(std))

    def provenance(self) -> dict:
        """What the tower reads and returns (recorded in result.json; harness.methods.base)."""
        layer = "the last hidden state (before post_layernorm)" if self.feature_layer == -1 else \
            f"hidden state {self.feature_layer} (before post_layernorm)"
        return {"features": layer + (", CLS dropped" if self.drop_cls else ", CLS first"),
                "image": preprocessing_record(self.image_size, "bilinear to size when the stored image differs",
                                              self.mean, self.std)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The features of uint8 ``images``: read from the attached table where it holds them all
        and the tower is still frozen, else computed."""
        table = self.feature_table
        if table is not None and not any(p.requires_grad for p in self.parameters()):
            found = table.lookup(images)
            if found is not None:
                return found
        return self.compute(images)

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        """The tower's own pass over uint8 ``images``."""
        pixels = images.float() / 255.0
        if pixels.shape[-1] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        pixels = (pixels - self.mean) / self.std
        with in_weights_dtype(self.model) as dtype:
            if self.feature_layer == -1:
                features = self.model(pixel_values=pixels.to(dtype)).last_hidden_state
            else:
                features = self.model(pixel_values=pixels.to(dtype), output_hidden_states=True).hidden_states[
                    self.feature_layer]
        return features[:, 1:] if self.drop_cls else features


class QwenVisionTower(VisionTower):
    """The vision encoder of a Qwen2-VL / Qwen2.5-VL checkpoint: uint8 images -> merged patch
    tokens [B, (H/p/m) * (W/p/m), D_out], already in the language model's width (its merger).

    Images are resized to ``image_size`` (rounded up to a multiple of patch x merge), normalised
    and cut into the flat patch layout of Qwen2VLImageProcessor (a still image repeated over the
    temporal patch), done here in torch so that a batch stays on the device."""

    def __init__(self, model: nn.Module, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        config = model.config
        self.patch = int(config.patch_size)
        self.merge = int(config.spatial_merge_size)
        self.temporal = int(config.temporal_patch_size)
        factor = self.patch * self.merge
        super().__init__(model, -(-image_size // factor) * factor, mean, std)

    @property
    def hidden_size(self) -> int:
        config = self.model.config
        return int(getattr(config, "out_hidden_size", None) or config.hidden_size)

    def patchify(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] -> (flat patches [B * gh * gw, C * T * p * p], grid_thw [B, 3])."""
        batch, channels, height, width = pixels.shape
        p, m, t = self.patch, self.merge, self.temporal
        gh, gw = height // p, width // p
        patches = pixels.reshape(batch, channels, gh // m, m, p, gw // m, m, p)
        patches = patches.permute(0, 2, 5, 3, 6, 1, 4, 7)  # (B, gh/m, gw/m, m, m, C, p, p)
        patches = patches.unsqueeze(6).expand(*patches.shape[:6], t, p, p)
        flat = patches.reshape(batch * gh * gw, channels * t * p * p)
        grid = torch.tensor([[1, gh, gw]], device=pixels.device).expand(batch, 3)
        return flat, grid

    def compute(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.float() / 255.0
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        pixels = (pixels - self.mean) / self.std
        flat, grid = self.patchify(pixels)
        with in_weights_dtype(self.model) as dtype:
            merged = self.model(flat.to(dtype), grid_thw=grid).pooler_output
        return merged.reshape(images.shape[0], -1, merged.shape[-1])


def processor_resize(directory: Path) -> str | None:
    """The square geometry (harness.data.images.squared) closest to the checkpoint's own image
    processor, from its preprocessor_config.json: ``crop`` where it centre-crops (CLIPImageProcessor,
    LLaVA-1.5's hf conversion), ``pad`` for Qwen2-VL's processor, which keeps the aspect ratio at a
    dynamic resolution (a fixed square cannot; padding keeps the aspect and all the content: an
    assumption), ``squash`` where it resizes to a fixed height and width (SigLIP); None without the
    file."""
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return None
    data = read_json_object(path, field="dataset.resize",
                            fix="restore the checkpoint's file, or set dataset.resize to squash, crop or pad")
    if "Qwen2VL" in str(data.get("image_processor_type", "")):
        return "pad"
    return "crop" if data.get("do_center_crop") else "squash"


def preprocessor_stats(directory: Path, config) -> tuple[tuple[float, ...], tuple[float, ...]]:
    path = directory / "preprocessor_config.json"
    if path.is_file():
        data = read_json_object(path, fix="restore the checkpoint's preprocessor_config.json")
        if "image_mean" in data and "image_std" in data:
            return tuple(data["image_mean"]), tuple(data["image_std"])
    if "siglip" in str(getattr(config, "model_type", "")):
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return CLIP_MEAN, CLIP_STD
