"""A split's images: names mapped to files, decoded once into uint8 tensors, large loads kept as
memory-mapped files in the cache so that later processes map them instead of decoding.

    store = ImageStore(paths, image_size=64, resize="squash")
    store.load(["dev-0-0-img0", ...])   # uint8 [N, 3, H, W]
    store = DrawnImageStore(paths, 64, draw=lambda name: ...)   # images drawn from data, not decoded
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from harness.core.cache import note_size
from harness.core.errors import HarnessError
from harness.core.files import staged_file

log = logging.getLogger(__name__)


#: Fewer images than this are decoded in the calling thread (a pool costs more than it saves).
PARALLEL_DECODE_MIN = 64
#: Loads of at least this many images keep their decoded tensor on disk (<cache>/images/), so
#: a later process (another run, sweep worker or evaluation) reads it instead of decoding.
DISK_CACHE_MIN = 1024


def squared(image: Image.Image, side: int, mode: str = "squash") -> Image.Image:
    """``image`` as a ``side`` x ``side`` RGB square: stretched (squash), shortest side resized then
    centre-cropped (crop, as CLIPImageProcessor), or padded to a square with its mean colour then
    resized (pad, LLaVA-1.5's expand2square). Bicubic resampling throughout."""
    width, height = image.size
    if mode == "crop" and width != height:
        scale = side / min(width, height)
        image = image.resize((max(side, round(width * scale)), max(side, round(height * scale))),
                             Image.Resampling.BICUBIC)
        left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
        return image.crop((left, top, left + side, top + side))
    if mode == "pad" and width != height:
        mean = tuple(int(v) for v in np.asarray(image).reshape(-1, 3).mean(0))
        square = Image.new("RGB", (max(width, height),) * 2, mean)
        square.paste(image, ((square.size[0] - width) // 2, (square.size[1] - height) // 2))
        image = square
    return image if image.size == (side, side) else image.resize((side, side), Image.Resampling.BICUBIC)


class ImageStore:
    """Maps image names to files and decodes them once into a uint8 tensor cache."""

    def __init__(self, paths: dict[str, Path], image_size: int, resize: str = "squash"):
        self.paths = paths
        self.image_size = image_size
        self.resize = resize  # squash | crop | pad (DatasetConfig.resize)
        self._cache: dict[str, torch.Tensor] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.paths

    def read(self, name: str) -> torch.Tensor:
        """One image as uint8 [3, H, W], resized to ``image_size`` if needed (not cached)."""
        path = self.paths[name]
        try:
            with Image.open(path) as raw:
                image = raw.convert("RGB")
        except (OSError, UnidentifiedImageError) as error:
            raise HarnessError(f"cannot read image {name!r}: {error}", file=path,
                               fix="replace the file or remove it from the split") from None
        except Image.DecompressionBombError as error:  # checked from the header, before any pixel is decoded
            raise HarnessError(f"image {name!r} is too large to decode ({' '.join(str(error).split())})", file=path,
                               fix="check the file; PIL refuses images over twice Image.MAX_IMAGE_PIXELS") from None
        image = squared(image, self.image_size, self.resize)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous()

    def decode(self, name: str) -> torch.Tensor:
        """Like ``read``, decoding each image once per store."""
        cached = self._cache.get(name)
        if cached is None:
            cached = self._cache[name] = self.read(name)
        return cached

    def load(self, names: list[str]) -> torch.Tensor:
        """Images as one uint8 tensor [N, 3, H, W] in the order of ``names``. Images not decoded
        yet are decoded by a thread per core (PIL's decoding and resizing release the GIL:
        about 1.9x on 2 cores for 3000 PNGs, measured with another job beside it). A load of
        ``DISK_CACHE_MIN`` images or more is decoded once, straight into a memory-mapped file in
        the cache, and handed back mapped: it is never held in memory whole (a 123k-image CIRCO
        gallery at 224 px is 18.6 GB), and a later process maps the same file."""
        if not names:
            return torch.empty(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        disk = self._disk_file(names) if len(names) >= DISK_CACHE_MIN else None
        if disk is None:
            return self._decode_all(names)
        if not disk.is_file() or (mapped := self._mapped(disk, len(names))) is None:
            self._decode_to_disk(names, disk)
            mapped = self._mapped(disk, len(names))
        return mapped  # type: ignore[return-value]

    def _mapped(self, disk: Path, count: int) -> torch.Tensor | None:
        """The decoded file mapped copy-on-write (pages read as the batches use them); None when it
        is unreadable or of another shape (it is then decoded again)."""
        try:
            stored = np.load(disk, allow_pickle=False, mmap_mode="c")
        except (OSError, ValueError) as error:
            log.warning("decoded-image cache %s is unreadable (%s); decoding again", disk, error)
            return None
        if stored.shape != (count, 3, self.image_size, self.image_size) or stored.dtype != np.uint8:
            return None
        return torch.from_numpy(stored)

    def _decode_to_disk(self, names: list[str], disk: Path) -> None:
        """Decode ``names`` row by row into a .npy memory map beside ``disk``, then rename it into
        place (a crash leaves no half-written cache file)."""
        shape = (len(names), 3, self.image_size, self.image_size)
        with staged_file(disk) as staging:
            self._fill(np.lib.format.open_memmap(staging, mode="w+", dtype=np.uint8, shape=shape), names)
        note_size()  # the decoded images are what makes a cache large: say so past the threshold

    def _fill(self, array: np.ndarray, names: list[str]) -> None:
        """Decode image i of ``names`` into row i of the mapped ``array`` (a thread per core)."""
        def fill(row: int) -> None:
            array[row] = self.read(names[row]).numpy()

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(fill, range(len(names))))
        array.flush()  # type: ignore[attr-defined]

    def _disk_file(self, names: list[str]) -> Path | None:
        """Where the decoded tensor of this list of images is kept across processes: a file
        named by a hash of the image size and each image's name, path, size and modification
        time (a changed file gives another name). None when disabled (CIR_HARNESS_IMAGE_CACHE=0)."""
        if os.environ.get("CIR_HARNESS_IMAGE_CACHE", "1") == "0":
            return None
        import hashlib

        from harness.core.paths import cache_dir

        digest = hashlib.sha256(f"v1:{self.image_size}".encode() if self.resize == "squash"
                                else f"v2:{self.image_size}:{self.resize}".encode())
        for name in names:
            path = self.paths[name]
            try:
                stat = path.stat()
            except OSError:
                return None  # a missing file is reported by read()
            digest.update(f"\n{name}\t{path}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
        return cache_dir() / "images" / f"{digest.hexdigest()[:32]}.npy"

    def _decode_all(self, names: list[str]) -> torch.Tensor:
        missing = list(dict.fromkeys(n for n in names if n not in self._cache))
        if len(missing) >= PARALLEL_DECODE_MIN:
            with ThreadPoolExecutor(max_workers=min(len(missing) // 32 + 1, os.cpu_count() or 1)) as pool:
                self._cache.update(zip(missing, pool.map(self.read, missing)))
        return torch.stack([self.decode(name) for name in names])


class DrawnImageStore(ImageStore):
    """An ImageStore whose images are drawn by ``draw(name)`` (uint8 [3, H, W]) instead of decoded
    from their files: the perfect-perception track draws each image's scene graph
    (harness.data.synthetic.render.scene_code_image). ``mode`` names the drawing in the
    disk cache's key, as ``resize`` does for decoded images."""

    def __init__(self, paths: dict[str, Path], image_size: int, draw, mode: str):
        super().__init__(paths, image_size, resize=mode)
        self.draw = draw

    def read(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.draw(name))
