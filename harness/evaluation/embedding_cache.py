"""Gallery embeddings of frozen target encoders, cached on disk.

    key = embedding_key(method, split, device)        # None: the method's target side is trained
    cached = load_embeddings(key)                      # [G, D] or None
    save_embeddings(key, embeddings)

A method whose target encoder never changes (Pic2Word's and SEARLE's frozen CLIP) encodes the
same gallery to the same embeddings in every run, seed and sweep trial; the cache pays it
once. The key hashes everything the embeddings depend on: the target encoder's weights and
buffers (which hold the preprocessing statistics), the method class, the image size, the
dataset's root, split and gallery names, the device type and the resolved precision (bf16
autocast gives other numbers than float32). Any change gives another key. Files live in
``<cache>/embeddings/<key>.safetensors`` and are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from harness.core.cache import hash_tensors
from harness.core.files import staged_file
from harness.core.paths import cache_dir

CACHE_VERSION = 2  # 2: the precision joined the key


def _root() -> Path:
    return cache_dir() / "embeddings"


def embedding_key(method, split, device: torch.device, precision: str = "fp32") -> str | None:
    """The cache key of ``method``'s gallery embeddings of ``split``, or None when its target
    encoder is not frozen (``CIRMethod.frozen_target_state``)."""
    state = method.frozen_target_state()
    if state is None:
        return None
    digest = hashlib.sha256()
    header = {"version": CACHE_VERSION, "method": f"{type(method).__module__}.{type(method).__qualname__}",
              "image_size": split.images.image_size, "root": str(Path(split.root).resolve()), "split": split.split,
              "device": torch.device(device).type, "precision": precision}
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update("\n".join(split.gallery).encode())
    hash_tensors(digest, state)
    return digest.hexdigest()[:32]


def load_embeddings(key: str) -> torch.Tensor | None:
    path = _root() / f"{key}.safetensors"
    if not path.is_file():
        return None
    return load_file(str(path))["embeddings"]


def save_embeddings(key: str, embeddings: torch.Tensor) -> Path:
    path = _root() / f"{key}.safetensors"
    with staged_file(path) as staging:
        save_file({"embeddings": embeddings.contiguous()}, str(staging))
    return path
