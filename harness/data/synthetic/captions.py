"""Relative captions of the embedded benchmark: several phrasings per edit type.

A caption is a deterministic function of the edit and a phrasing index, so the same seed
gives the same captions. Compound edits join two single-edit captions.

    >>> caption_for([Edit("remove", ("red", "circle"))], phrasing=[1])
    'take away the red circle'
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.data.synthetic.scene import SIZES, Edit, SceneObject, cell_name

_SIZE_CHANGE = {"large": ("bigger", "enlarge", "grow"), "small": ("smaller", "shrink", "reduce")}


def _phrasings(edit: Edit) -> list[str]:
    """All phrasings of one edit; every phrasing names the subject and the new value."""
    if edit.type == "add":
        assert isinstance(edit.new, SceneObject)
        obj = edit.new
        what = f"a {obj.size} {obj.colour} {obj.shape}"
        where = cell_name(obj.cell)
        return [f"add {what} in the {where}", f"put {what} in the {where}", f"include {what} at the {where}"]
    assert edit.subject is not None
    colour, shape = edit.subject
    the = f"the {colour} {shape}"
    if edit.type == "remove":
        return [f"remove {the}", f"take away {the}", f"get rid of {the}"]
    if edit.type == "recolour":
        return [f"make {the} {edit.new}", f"paint {the} {edit.new}", f"change the colour of {the} to {edit.new}"]
    if edit.type == "resize":
        assert edit.new in SIZES
        comparative, verb, _ = _SIZE_CHANGE[str(edit.new)]
        return [f"make {the} {comparative}", f"{verb} {the}", f"make {the} {edit.new}"]
    if edit.type == "move":
        assert isinstance(edit.new, tuple)
        where = cell_name(edit.new)
        return [f"move {the} to the {where}", f"put {the} in the {where}", f"shift {the} to the {where}"]
    if edit.type == "replace":
        return [f"turn {the} into a {edit.new}", f"replace {the} with a {colour} {edit.new}",
                f"make {the} a {edit.new}"]
    raise ValueError(f"unknown edit type {edit.type!r}")


NUM_PHRASINGS = 3
COMPOUND_JOINERS: tuple[str, ...] = (" and ", ", then ")


def caption_for(edits: Sequence[Edit], phrasing: Sequence[int], joiner: int = 0) -> str:
    """The caption of one or two edits with the given phrasing indices."""
    parts = [_phrasings(edit)[index] for edit, index in zip(edits, phrasing, strict=True)]
    return COMPOUND_JOINERS[joiner].join(parts)


def random_caption(rng: np.random.Generator, edits: Sequence[Edit]) -> str:
    """A caption of ``edits`` with randomly drawn phrasings."""
    phrasing = [int(rng.integers(NUM_PHRASINGS)) for _ in edits]
    joiner = int(rng.integers(len(COMPOUND_JOINERS))) if len(edits) > 1 else 0
    return caption_for(edits, phrasing, joiner)


def template_corpus() -> list[str]:
    """Fixed phrases (task prompts and templates) a tokenizer should also know."""
    return [
        "a photo of",
        "retrieve the image that shows the reference image modified by the text",
        "summarize this image in one word",
    ]
