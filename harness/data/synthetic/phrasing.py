"""Captions of the embedded benchmark, version 2: many phrasings per family in three styles
(an imperative, a wish, a description of the wanted image), synonyms, fillers and irrelevant
clauses, with a held-out set of phrasings and synonyms that only val/test use; and a parser
that maps a caption back to its program (the round-trip the tests check).

A phrasing is a *core* (the family's own words, in the imperative or descriptive style), a
*frame* around it (plain, "please ...", "could you ...?", "the same picture but ...") and a
*filler* ("and keep everything else as it is"). Cores, frames, fillers and synonyms each carry
a held-out flag; a caption is held out when it uses any held-out element.

    >>> caption, held_out = render(prog, rng, held_out=False)
    >>> parse(caption) == prog.to_json()       # harness.data.synthetic.caption_parser
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.data.synthetic.programs import Program
from harness.data.synthetic.scene import CELLS, COLOURS, SHAPES, cell_name

Lexicon = dict[Any, tuple[tuple[str, ...], tuple[str, ...]]]
"""value -> (seen words, held-out words)."""

LEXICONS: dict[str, Lexicon] = {
    "colour": {c: ((c,), {"purple": ("violet",), "cyan": ("turquoise",)}.get(c, ())) for c in COLOURS},
    "shape": {s: ((s,), {"diamond": ("rhombus",), "cross": ("plus sign",)}.get(s, ())) for s in SHAPES},
    "size": {"large": (("large", "big"), ("huge",)), "small": (("small", "tiny"), ("little",))},
    "size_cmp": {"large": (("bigger", "larger"), ()), "small": (("smaller",), ("tinier",))},
    "size_verb": {"large": (("enlarge", "grow"), ("scale up",)), "small": (("shrink",), ("scale down",))},
    "direction": {"left": (("left", "to the left"), ("leftwards",)),
                  "right": (("right", "to the right"), ("rightwards",)),
                  "up": (("up", "upwards"), ("higher",)), "down": (("down", "downwards"), ("lower",))},
    "distance": {1: (("one cell", "one step"), ("a single cell",)),
                 2: (("two cells", "two steps"), ("a couple of cells",))},
    "relation": {"left of": (("left of", "to the left of"), ("on the left side of",)),
                 "right of": (("right of", "to the right of"), ("on the right side of",)),
                 "above": (("above", "just above"), ("straight above",)),
                 "below": (("below", "just below", "under"), ("beneath",))},
    #: version 3: a relation that always means the adjacent cell
    "adjacent": {"left of": (("directly left of", "immediately to the left of"), ("just to the left of",)),
                 "right of": (("directly right of", "immediately to the right of"), ("just to the right of",)),
                 "above": (("directly above", "immediately above"), ("right on top of",)),
                 "below": (("directly below", "immediately below"), ("right underneath",))},
    "cell": {cell: ((cell_name(cell),),
                    (cell_name(cell).replace("centre", "center"),) if "centre" in cell_name(cell) else ())
             for cell in CELLS},
    "colourword": {None: (("colour",), ("color",))},
    "thing": {None: (("shape", "object"), ("figure",))},
}

#: Cores per family variant: (style, text, held out). {slot} names a program value rendered
#: through its lexicon; {subject}/{other}/{anchor}/{ref}/{object} are noun phrases; {a} is "a"/"an".
_CLASSIC_CORES: dict[str, list[tuple[str, str, bool]]] = {
    "remove": [("imp", "remove {subject}", False), ("imp", "take away {subject}", False),
               ("imp", "get rid of {subject}", False), ("imp", "delete {subject}", True),
               ("desc", "without {subject}", False), ("desc", "with {subject} gone", False)],
    "recolour": [("imp", "make {subject} {colour}", False), ("imp", "paint {subject} {colour}", False),
                 ("imp", "change the {colourword} of {subject} to {colour}", False),
                 ("imp", "turn {subject} {colour}", True),
                 ("desc", "with {subject} in {colour}", False), ("desc", "where {subject} is now {colour}", False)],
    "resize": [("imp", "make {subject} {size}", False), ("imp", "make {subject} {size_cmp}", False),
               ("imp", "{size_verb} {subject}", False), ("imp", "change {subject} to {a} {size} one", True),
               ("desc", "with {subject} {size_cmp}", False), ("desc", "where {subject} is {size} now", False)],
    "replace": [("imp", "turn {subject} into {a} {shape}", False), ("imp", "make {subject} {a} {shape}", False),
                ("imp", "swap {subject} for {a} {shape} of its {colourword}", False),
                ("imp", "change {subject} into {a} {shape}", True),
                ("desc", "with {subject} turned into {a} {shape}", False),
                ("desc", "where {subject} has become {a} {shape}", False)],
}
CORES: dict[str, list[tuple[str, str, bool]]] = {
    **_CLASSIC_CORES,
    "add": [("imp", "add {object}", False), ("imp", "put {object}", False), ("imp", "include {object}", False),
            ("imp", "place {object}", True), ("desc", "with {object} added", False),
            ("desc", "showing {object} as well", False)],
    "move": [("imp", "move {subject} to the {cell}", False), ("imp", "put {subject} in the {cell}", False),
             ("imp", "shift {subject} to the {cell}", False), ("imp", "relocate {subject} to the {cell}", True),
             ("desc", "with {subject} in the {cell}", False), ("desc", "where {subject} sits in the {cell}", False)],
    "relative_move": [("imp", "move {subject} {distance} {direction}", False),
                      ("imp", "shift {subject} {distance} {direction}", False),
                      ("imp", "slide {subject} {distance} {direction}", False),
                      ("imp", "push {subject} {distance} {direction}", True),
                      ("desc", "with {subject} {distance} further {direction}", False),
                      ("desc", "where {subject} has moved {distance} {direction}", False)],
    "move_beside": [("imp", "move {subject} {relation} {anchor}", False),
                    ("imp", "put {subject} {relation} {anchor}", False),
                    ("imp", "place {subject} {relation} {anchor}", False),
                    ("imp", "bring {subject} {relation} {anchor}", True),
                    ("desc", "with {subject} now {relation} {anchor}", False),
                    ("desc", "where {subject} sits {relation} {anchor}", False)],
    "swap/position": [("imp", "swap {subject} and {other}", False), ("imp", "switch {subject} and {other}", False),
                      ("imp", "let {subject} and {other} trade places", False),
                      ("imp", "swap the positions of {subject} and {other}", True),
                      ("desc", "with {subject} and {other} swapped", False),
                      ("desc", "where {subject} and {other} have traded places", False)],
    "swap/colour": [("imp", "swap the {colourword}s of {subject} and {other}", False),
                    ("imp", "exchange the {colourword}s of {subject} and {other}", False),
                    ("imp", "let {subject} and {other} trade {colourword}s", False),
                    ("imp", "switch the {colourword}s of {subject} and {other}", True),
                    ("desc", "with the {colourword}s of {subject} and {other} swapped", False),
                    ("desc", "where {subject} and {other} have traded {colourword}s", False)],
    "copy_attribute/size": [("imp", "make {subject} the same size as {anchor}", False),
                            ("imp", "give {subject} the size of {anchor}", False),
                            ("imp", "resize {subject} to match {anchor}", False),
                            ("imp", "make {subject} as big as {anchor}", True),
                            ("desc", "with {subject} the same size as {anchor}", False),
                            ("desc", "where {subject} matches {anchor} in size", False)],
    "copy_attribute/colour": [("imp", "make {subject} the same {colourword} as {anchor}", False),
                              ("imp", "give {subject} the {colourword} of {anchor}", False),
                              ("imp", "paint {subject} to match {anchor}", False),
                              ("imp", "colour {subject} like {anchor}", True),
                              ("desc", "with {subject} the same {colourword} as {anchor}", False),
                              ("desc", "where {subject} matches {anchor} in {colourword}", False)],
    "rule/colour_all": [("imp", "make every {thing} the {colourword} of {anchor}", False),
                        ("imp", "paint all the shapes the {colourword} of {anchor}", False),
                        ("imp", "give every {thing} the {colourword} of {anchor}", False),
                        ("imp", "recolour everything to match {anchor}", True),
                        ("desc", "with every {thing} the {colourword} of {anchor}", False),
                        ("desc", "where all shapes share the {colourword} of {anchor}", False)],
    "rule/remove_colour": [("imp", "remove {anchor} and every {thing} of its {colourword}", False),
                           ("imp", "take away {anchor} and all shapes of the same {colourword}", False),
                           ("imp", "get rid of {anchor} and every other {thing} with its {colourword}", False),
                           ("imp", "delete {anchor} along with the shapes that share its {colourword}", True),
                           ("desc", "without {anchor} or any {thing} of its {colourword}", False),
                           ("desc", "with {anchor} and the shapes of its {colourword} gone", False)],
}
#: version 3's move beside names the adjacent cell ("directly left of")
CORES["move_beside/adjacent"] = [(s, t.replace("{relation}", "{adjacent}"), h) for s, t, h in CORES["move_beside"]]
for _action, _cores in _CLASSIC_CORES.items():  # a referent edit: a classic core whose subject is "the shape left of X"
    CORES[f"referent_edit/{_action}"] = [(s, t.replace("{subject}", "{ref}"), h) for s, t, h in _cores]

#: Frames per style: (text, held out); {c} is the core with its filler.
FRAMES: dict[str, list[tuple[str, bool]]] = {
    "imperative": [("{c}", False), ("please {c}", False), ("now {c}", True)],
    "wish": [("i want you to {c}", False), ("could you {c}?", False), ("i would like you to {c}", False),
             ("can you {c}?", True)],
    "description": [("the same picture but {c}", False), ("same scene, {c}", False),
                    ("i am looking for this image {c}", False), ("an image like this one but {c}", True)],
}
CORE_STYLE = {"imperative": "imp", "wish": "imp", "description": "desc"}
FILLERS: list[tuple[str, bool]] = [("", False), ("", False), (" and keep everything else as it is", False),
                                   (", leaving the rest unchanged", False), ("; the background stays white", False),
                                   (", nothing else should change", True)]
#: How the two steps of a compound are joined, per core style.
JOINERS: dict[str, list[tuple[str, bool]]] = {"imp": [(" and ", False), (", then ", False), (" and then ", True)],
                                              "desc": [(" and ", False), (", also ", False), (", and also ", True)]}


def variant(prog: Program) -> str:
    """The key of a program's cores: the family, with its fixed choice when it has one."""
    fixed = {"swap": "attribute", "copy_attribute": "attribute", "rule": "rule",
             "referent_edit": "action", "move_beside": "wording"}.get(prog.family)
    if fixed is None or prog.get(fixed) is None:  # version 2's move beside has no wording slot
        return prog.family
    return f"{prog.family}/{prog[fixed]}"


# --- rendering ---------------------------------------------------------------------------

@dataclass
class _Draw:
    """Draws words, allowing held-out ones or not, and remembers whether one was used."""

    rng: np.random.Generator
    allow_held: bool
    used_held: bool = False

    def choose(self, options: list[tuple[Any, bool]]) -> Any:
        pool = options if self.allow_held else [o for o in options if not o[1]]
        value, held = pool[int(self.rng.integers(len(pool)))]
        self.used_held |= held
        return value

    def word(self, lexicon: str, value: Any) -> str:
        seen, held = LEXICONS[lexicon][value]
        return self.choose([(w, False) for w in seen] + [(w, True) for w in held])


def _identity_phrase(draw: _Draw, identity: tuple[str, str] | None, shape_only: str | None = None) -> str:
    if identity is None:
        return f"the {draw.word('shape', shape_only)}"
    return f"the {draw.word('colour', identity[0])} {draw.word('shape', identity[1])}"


def _values(prog: Program) -> dict[str, Any]:
    """The slot values a core refers to, by placeholder name."""
    values = dict(prog.slots)
    if prog.family == "recolour":
        values["colour"] = prog["colour"]
    if prog.family == "referent_edit":
        values[{"recolour": "colour", "resize": "size",
                "replace": "shape"}.get(prog["action"], "value")] = prog["value"]
    for name in ("size_cmp", "size_verb"):
        values[name] = values.get("size")
    values["adjacent"] = values.get("relation")
    return values


_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _render_core(draw: _Draw, text: str, prog: Program) -> str:
    values = _values(prog)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in ("subject", "other"):  # version 3 names some by shape alone
            return _identity_phrase(draw, values.get(name), values.get(f"{name}_shape"))
        if name == "anchor":
            return _identity_phrase(draw, values.get("anchor"), values.get("anchor_shape"))
        if name == "ref":
            anchor = _identity_phrase(draw, values.get("anchor"), values.get("anchor_shape"))
            return f"the {draw.word('thing', None)} {draw.word('relation', values['relation'])} {anchor}"
        if name == "object":
            obj = values["object"]
            return (f"{{a}} {draw.word('size', obj.size)} {draw.word('colour', obj.colour)} "
                    f"{draw.word('shape', obj.shape)} in the {draw.word('cell', obj.cell)}")
        if name in ("a",):
            return "{a}"
        if name in ("colourword", "thing"):
            return draw.word(name, None)
        return draw.word(name, values[name])

    return _articles(_PLACEHOLDER.sub(fill, text))


def _articles(text: str) -> str:
    return re.sub(r"\{a\} (\w)", lambda m: ("an " if m.group(1) in "aeiou" else "a ") + m.group(1), text)


def _core_text(draw: _Draw, prog: Program, core_style: str) -> str:
    if prog.family == "compound":
        first, second = prog["steps"]
        joiner = draw.choose(JOINERS[core_style])
        return _core_text(draw, first, core_style) + joiner + _core_text(draw, second, core_style)
    cores = [(text, held) for style, text, held in CORES[variant(prog)] if style == core_style]
    return _render_core(draw, draw.choose(cores), prog)


def render(prog: Program, rng: np.random.Generator, held_out: bool) -> tuple[str, bool]:
    """A caption of ``prog`` and whether it is held out. ``held_out=False`` draws only seen
    phrasings (train and most eval queries); ``True`` draws until a held-out element is used."""
    for _ in range(100):
        draw = _Draw(rng, allow_held=held_out)
        style = draw.choose([(s, False) for s in FRAMES])
        core = _core_text(draw, prog, CORE_STYLE[style]) + draw.choose(FILLERS)
        caption = draw.choose(FRAMES[style]).replace("{c}", core)
        if draw.used_held == held_out:
            return caption, held_out
    raise AssertionError(f"no {'held-out' if held_out else 'seen'} phrasing of {prog.family}")


def render_style(prog: Program, rng: np.random.Generator, style: str, held_out: bool) -> str:
    """A caption of ``prog`` in one style (for the round-trip tests)."""
    draw = _Draw(rng, allow_held=held_out)
    return draw.choose(FRAMES[style]).replace("{c}", _core_text(draw, prog, CORE_STYLE[style]) + draw.choose(FILLERS))


def phrasing_count(family_variant: str) -> int:
    """Distinct (core, frame) phrasings of a family variant, fillers and synonyms not counted."""
    cores = CORES[family_variant]
    return sum(len(FRAMES[style]) * sum(s == CORE_STYLE[style] for s, _, _ in cores) for style in FRAMES)

