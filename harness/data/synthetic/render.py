"""Render scene graphs to RGB images with PIL.

Each rendering draws its own jitter (object offset, shade, rotation, background grey and
pixel noise) from a generator seeded by (dataset seed, image index), so two images of one
scene differ in pixels while the same seed always gives the same bytes. Images are drawn
at twice the size and downsampled for anti-aliasing. ``scene_code_image`` draws instead the
perfect-perception track's code image of a scene (backbone.vision: scene_graph).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from harness.data.synthetic.scene import CELLS, COLOURS, GRID, SHAPES, SIZES, Scene, SceneObject

RGB: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (35, 65, 215),
    "yellow": (235, 205, 30),
    "purple": (140, 55, 180),
    "orange": (245, 135, 25),
    "cyan": (35, 195, 210),
    "black": (25, 25, 25),
}
#: Object radius as a share of the image side, per size (4 px and 7 px at 64 px).
RADIUS = {"small": 0.0625, "large": 0.11}
#: Version of ``scene_code_image``'s drawing: in the keys of the caches built from it (the decoded
#: images' and stage 0's), so a change to the drawing never reuses what the old one built.
SCENE_CODE_VERSION = 1
SUPERSAMPLE = 2


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape centred at (cx, cy) with radius r, rotated by angle."""
    if shape == "square":
        points = [(math.pi / 4 + k * math.pi / 2, r) for k in range(4)]
    elif shape == "diamond":
        points = [(k * math.pi / 2, r * 1.15) for k in range(4)]
    elif shape == "triangle":
        points = [(-math.pi / 2 + k * 2 * math.pi / 3, r * 1.15) for k in range(3)]
    elif shape == "star":
        points = [(-math.pi / 2 + k * math.pi / 5, r * (1.2 if k % 2 == 0 else 0.5)) for k in range(10)]
    elif shape == "cross":
        w = r * 0.38
        corners = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r), (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w),
                   (-w, r)]
        points = [(math.atan2(y, x), math.hypot(x, y)) for x, y in corners]
    else:
        raise ValueError(f"no polygon for shape {shape!r}")
    return [(cx + d * math.cos(a + angle), cy + d * math.sin(a + angle)) for a, d in points]


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, side: int, rng: np.random.Generator) -> None:
    cell = side / GRID
    max_offset = side * 3 / 64
    cx = (obj.cell[1] + 0.5) * cell + rng.uniform(-max_offset, max_offset)
    cy = (obj.cell[0] + 0.5) * cell + rng.uniform(-max_offset, max_offset)
    r = RADIUS[obj.size] * side
    shade = rng.integers(-12, 13, size=3)
    fill = tuple(int(np.clip(v + s, 0, 255)) for v, s in zip(RGB[obj.colour], shade, strict=True))
    angle = math.radians(rng.uniform(-15.0, 15.0))
    if obj.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r, angle), fill=fill)


def render_scene(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    """One jittered rendering of ``scene`` as an ``image_size`` x ``image_size`` RGB image."""
    side = image_size * SUPERSAMPLE
    grey = int(rng.integers(215, 246))
    canvas = Image.new("RGB", (side, side), (grey, grey, grey))
    draw = ImageDraw.Draw(canvas)
    for obj in scene:
        _draw_object(draw, obj, side, rng)
    image = canvas.resize((image_size, image_size), Image.Resampling.BILINEAR)
    noise = rng.integers(-4, 5, size=(image_size, image_size, 3))
    pixels = np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def scene_code_image(scene: Scene, image_size: int) -> np.ndarray:
    """The perfect-perception track's "image" of ``scene`` (backbone.vision: scene_graph): uint8
    [3, image_size, image_size], black but for white one-hot marks in each grid cell's square of
    side ``image_size // GRID``, cut into three bands of rows: the shape band holds one slot per
    shape plus one for "empty", the colour band one per colour, the size band one per size, and
    the slot of the cell's value is filled. A ViT whose patch is that square (21 px at 64 px)
    embeds each cell linearly, so its patch token is the sum of a shape, a colour and a size
    embedding plus its position embedding (the cell's): one token per cell, read exactly, through
    the same tower, caches and methods as pixels. Marks are whole slots, not single pixels, so
    that they weigh in the patch embedding at initialisation as an object's pixels do."""
    side = image_size // GRID
    bands = ((0, len(SHAPES) + 1), (1, len(COLOURS)), (2, len(SIZES)))
    if side < 3 or side < max(slots for _, slots in bands):
        raise ValueError(f"a scene-code image needs cells of at least {len(COLOURS)} px; {image_size} px gives {side}")
    codes = np.zeros((3, image_size, image_size), dtype=np.uint8)
    occupied = {obj.cell: obj for obj in scene}
    for cell in CELLS:
        obj = occupied.get(cell)
        values = ((0, 0), (1, None), (2, None)) if obj is None else (
            (0, 1 + SHAPES.index(obj.shape)), (1, COLOURS.index(obj.colour)), (2, SIZES.index(obj.size)))
        for (band, slots), (_, value) in zip(bands, values, strict=True):
            if value is None:
                continue
            width, height = side // slots, side // 3
            top, left = cell[0] * side + band * height, cell[1] * side + value * width
            codes[:, top:top + height, left:left + width] = 255
    return codes
