"""The dual-encoder backbone (CLIP / SigLIP) of the early-fusion and textual-inversion methods.

    encoder = DualEncoder.from_stage0(directory)   # stage 0's tiny CLIP (the method asks stage 0 for it)
    encoder = DualEncoder.from_directory(path)     # a pretrained CLIP / SigLIP directory
    image = encoder.image_features(images_uint8)                   # [B, d], not normalised
    text = encoder.text_features(["a red circle", ...])            # [B, d]
    query = encoder.prompt_features(["a photo of * , make it blue"], pseudo_tokens)  # * <- pseudo_tokens [B, w]

``tiny`` is the CLIP that stage 0's first phase trains contrastively on (image, scene
description) pairs: the same checkpoint CIR-LVLM's vision tower starts from, so every method
starts from one shared "public" model. ``pretrained`` is a CLIP or SigLIP ``save_pretrained``
directory with its tokenizer. Pseudo-word tokens (textual inversion) replace the token
embedding at the placeholder's position through a forward hook on the token embedding, so
the text transformer, its pooling and its projection stay the checkpoint's own.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer

from harness.backbones.loading import pretrained_model
from harness.backbones.vision import TINY_MEAN, TINY_STD, preprocessing_record, preprocessor_stats
from harness.core.device import HALF_DTYPES, in_weights_dtype, to_device
from harness.core.errors import HarnessError


class DualEncoder(nn.Module):
    """A transformers CLIPModel / SiglipModel with its tokenizer and pixel statistics."""

    def __init__(self, model: nn.Module, tokenizer, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.siglip = "siglip" in str(model.config.model_type)
        self.image_size = int(model.config.vision_config.image_size)
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_directory(cls, directory: str | Path, tokenizer_dir: str | Path | None = None,
                       field: str = "method.params.backbone.vision_dir") -> DualEncoder:
        """A whole CLIP / SigLIP checkpoint (both towers) and its tokenizer from local directories."""
        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise HarnessError("no config.json in the dual-encoder directory", file=directory, field=field,
                               fix="point it at a CLIP or SigLIP save_pretrained() directory")
        model = pretrained_model(AutoModel, directory)
        if not (hasattr(model, "text_model") and hasattr(model, "vision_model")):
            raise HarnessError(f"{type(model).__name__} has no text and vision towers", file=directory, field=field,
                               fix="give a whole CLIP or SigLIP checkpoint (CLIPModel / SiglipModel), not one tower")
        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or directory, local_files_only=True)
        except (OSError, ValueError) as error:
            raise HarnessError(f"no usable tokenizer: {error}", file=tokenizer_dir or directory, field=field,
                               fix="save the checkpoint's tokenizer into the same directory") from None
        mean, std = preprocessor_stats(directory, model.config.vision_config)
        return cls(model, tokenizer, mean, std)

    @classmethod
    def from_stage0(cls, directory: Path) -> DualEncoder:
        """Stage 0's tiny CLIP from its cache directory (clip/, tokenizer/), with the tiny
        backbone's preprocessing statistics."""
        model = AutoModel.from_pretrained(directory / "clip", local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(directory / "tokenizer", local_files_only=True, padding_side="right")
        return cls(model, tokenizer, TINY_MEAN, TINY_STD)

    # ------------------------------------------------------------------ sizes

    @property
    def feature_dim(self) -> int:
        """Width of the joint image-text space."""
        config = self.model.config
        return int(getattr(config, "projection_dim", None) or config.text_config.hidden_size)

    @property
    def token_width(self) -> int:
        """Width of one token embedding of the text tower (what a pseudo-word must match)."""
        return int(self.model.text_model.embeddings.token_embedding.embedding_dim)

    @property
    def image_tower(self) -> nn.Module:
        return self.model.vision_model

    @property
    def text_tower(self) -> nn.Module:
        return self.model.text_model

    @property
    def image_projection(self) -> nn.Module:
        """CLIP's ``visual_projection``; SigLIP has none (its pooling head lives in the tower)."""
        return getattr(self.model, "visual_projection", None) or _NO_PROJECTION

    @property
    def text_projection(self) -> nn.Module:
        """CLIP's ``text_projection``; SigLIP's text head is inside its tower."""
        return getattr(self.model, "text_projection", None) or _NO_PROJECTION

    def provenance(self) -> dict:
        """Where the image and text embeddings are taken and how an image is prepared (recorded in
        result.json; `harness score` warns where two results differ)."""
        image, text = (("the attention-pooling head over the last hidden state (after post_layernorm)",
                        "the head over the last token of the final layer norm") if self.siglip else
                       ("visual_projection of the CLS token after post_layernorm",
                        "text_projection of the EOS token after the final layer norm"))
        return {"image_embedding": image, "text_embedding": text,
                "image": preprocessing_record(self.image_size, "bicubic to size when the stored image differs",
                                              self.mean, self.std)}

    # ------------------------------------------------------------------ features

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.float() / 255.0
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        pixels = (pixels - self.mean) / self.std
        with in_weights_dtype(self.image_tower) as dtype:
            return _as_computed(_pooled(self.model.get_image_features(pixel_values=pixels.to(dtype))), dtype)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        ids, mask, _ = self._tokenize(texts, placeholder=None)
        return self._text(ids, mask)

    def prompt_features(self, prompts: list[str], pseudo: torch.Tensor, placeholder: str = "*") -> torch.Tensor:
        """Text features of ``prompts`` where the first ``placeholder`` in each is the pseudo-word
        whose token embedding is row i of ``pseudo`` [B, token_width]."""
        ids, mask, positions = self._tokenize(prompts, placeholder=placeholder)
        with self._spliced(positions, pseudo):
            return self._text(ids, mask)

    def _text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        device = self.mean.device
        kwargs = {} if self.siglip else {"attention_mask": to_device(mask, device)}  # SigLIP was trained without a mask
        with in_weights_dtype(self.text_tower) as dtype:
            return _as_computed(_pooled(self.model.get_text_features(input_ids=to_device(ids, device), **kwargs)),
                                dtype)

    def _tokenize(self, texts: list[str], placeholder: str | None) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Token ids (BOS and EOS added by hand, so one rule serves our word-level tokenizers and
        the CLIP / SigLIP ones), the attention mask, and the placeholder's position per text."""
        tok = self.tokenizer
        bos = [tok.bos_token_id] if tok.bos_token_id is not None and not self.siglip else []
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        stand_in = self._stand_in(placeholder) if placeholder is not None else 0
        pieces: list[tuple[str, str]] = []
        for text in texts:
            if placeholder is None:
                pieces.append((text, ""))
            else:
                if placeholder not in text:
                    raise ValueError(f"prompt {text!r} has no placeholder {placeholder!r}")
                head, tail = text.split(placeholder, 1)
                pieces.append((head, tail))
        # one batched call for every non-blank piece (per-text calls cost 3x as much on a step's captions)
        wanted = [piece for pair in pieces for piece in pair if piece.strip()]
        encoded = iter(tok(wanted, add_special_tokens=False)["input_ids"] if wanted else [])
        middle = [stand_in] if placeholder is not None else []  # replaced by the pseudo-word embedding
        rows, positions = [], []
        for head, tail in pieces:
            head_ids = list(next(encoded)) if head.strip() else []
            tail_ids = list(next(encoded)) if tail.strip() else []
            body = (bos + head_ids + middle + tail_ids)[: self.max_length - len(eos)] + eos
            positions.append(len(bos) + len(head_ids))
            rows.append(body)
        width = self.max_length if self.siglip else max(len(r) for r in rows)  # SigLIP pads to its full length
        pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
        ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], dtype=torch.long)
        mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], dtype=torch.long)
        return ids, mask, positions

    def _stand_in(self, placeholder: str) -> int:
        """A token id to hold the pseudo-word's place: the placeholder's own token, never BOS,
        EOS or PAD (CLIP pools at the first EOS, and CLIP's tokenizer maps unknowns to EOS)."""
        tok = self.tokenizer
        special = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}
        for text in (placeholder, "a"):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if ids and ids[0] not in special:
                return int(ids[0])
        raise ValueError(f"no ordinary token to stand in for {placeholder!r}")

    @contextmanager
    def _spliced(self, positions: list[int], pseudo: torch.Tensor):
        """Within the block, the token embedding at ``positions[i]`` of row i is ``pseudo[i]``."""
        rows = torch.arange(len(positions))
        columns = torch.tensor(positions)

        def splice(_module, _inputs, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            output[to_device(rows, output.device), to_device(columns, output.device)] = pseudo.to(output.dtype)
            return output

        handle = self.model.text_model.embeddings.token_embedding.register_forward_hook(splice)
        try:
            yield
        finally:
            handle.remove()

    def logit_scale(self) -> torch.Tensor:
        """The checkpoint's learned logit scale (exp of the stored log scale), a constant here."""
        return self.model.logit_scale.detach().exp()


#: what ``image_projection`` / ``text_projection`` are for a checkpoint without one: no parameters
_NO_PROJECTION = nn.Identity()


def _as_computed(features: torch.Tensor, weights: torch.dtype) -> torch.Tensor:
    """Features of a tower kept in half precision in float32, so they can meet the run's autocast;
    a float32 tower's features stay as autocast computed them (bf16 under bf16 autocast)."""
    return features.float() if weights in HALF_DTYPES else features


def _pooled(output) -> torch.Tensor:
    """transformers 5 returns a model output with the projected features as ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output

