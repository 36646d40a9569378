"""Read a version-2 caption back into its program: the inverse of ``phrasing.render``, built
from the same cores, frames, fillers and lexicons. The tests use it to check that every
caption of every family and style says exactly its program, and says it unambiguously.

    >>> parse("could you move the red circle one cell left?")
    [{'family': 'relative_move', 'subject': ['red', 'circle'], 'direction': 'left', 'distance': 1}]
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from harness.data.synthetic.phrasing import CORE_STYLE, CORES, FILLERS, FRAMES, JOINERS, LEXICONS

CLASSIC_VARIANTS = ("add", "remove", "recolour", "resize", "move", "replace")
#: The slots each variant fixes without a word for them.
FIXED: dict[str, dict[str, Any]] = {
    "swap/position": {"attribute": "position"}, "swap/colour": {"attribute": "colour"},
    "copy_attribute/size": {"attribute": "size"}, "copy_attribute/colour": {"attribute": "colour"},
    "rule/colour_all": {"rule": "colour_all"}, "rule/remove_colour": {"rule": "remove_colour"},
    "move_beside/adjacent": {"wording": "adjacent"},
    **{f"referent_edit/{a}": {"action": a} for a in ("remove", "recolour", "resize", "replace")},
}


@cache
def _words(lexicon: str, seen_only: bool = False) -> dict[str, Any]:
    """Every surface word of a lexicon (only the seen ones with ``seen_only``) -> its value."""
    return {word: value for value, (seen, held) in LEXICONS[lexicon].items()
            for word in (seen if seen_only else (*seen, *held))}


def _alt(lexicon: str, group: str | None, seen_only: bool) -> str:
    body = "|".join(re.escape(w) for w in sorted(_words(lexicon, seen_only), key=len, reverse=True))
    return f"(?P<{group}>{body})" if group else f"(?:{body})"


def _identity(name: str, seen_only: bool) -> str:
    """An object's noun phrase: colour and shape, or (version 3) its shape alone."""
    return f"the (?:{_alt('colour', name + '__colour', seen_only)} )?{_alt('shape', name + '__shape', seen_only)}"


def _anchor(seen_only: bool) -> str:
    return f"the (?:{_alt('colour', 'anchor__colour', seen_only)} )?{_alt('shape', 'anchor__shape', seen_only)}"


def _core_regex(text: str, seen_only: bool) -> re.Pattern[str]:
    parts: list[str] = []
    for index, piece in enumerate(re.split(r"\{(\w+)\}", text)):
        if index % 2 == 0:
            parts.append(re.escape(piece))
        elif piece in ("subject", "other"):
            parts.append(_identity(piece, seen_only))
        elif piece == "anchor":
            parts.append(_anchor(seen_only))
        elif piece == "ref":
            parts.append(f"the {_alt('thing', None, seen_only)} {_alt('relation', 'relation', seen_only)} "
                         f"{_anchor(seen_only)}")
        elif piece == "object":
            size, colour = _alt("size", "object__size", seen_only), _alt("colour", "object__colour", seen_only)
            shape, cell = _alt("shape", "object__shape", seen_only), _alt("cell", "object__cell", seen_only)
            parts.append(f"an? {size} {colour} {shape} in the {cell}")
        elif piece == "a":
            parts.append("an?")
        elif piece in ("colourword", "thing"):
            parts.append(_alt(piece, None, seen_only))
        else:
            parts.append(_alt(piece, piece, seen_only))
    return re.compile("".join(parts))


@cache
def _cores(core_style: str, seen_only: bool) -> list[tuple[str, re.Pattern[str]]]:
    return [(name, _core_regex(text, seen_only)) for name, cores in CORES.items()
            for style, text, held in cores if style == core_style and not (seen_only and held)]


def _slots(name: str, groups: dict[str, str | None]) -> dict[str, Any]:
    """The program (as JSON) of a matched core."""
    family = name.split("/")[0]
    out: dict[str, Any] = {"family": family, **FIXED.get(name, {})}
    for key, word in groups.items():
        if word is None:
            continue
        slot, _, part = key.partition("__")
        lexicon = {"size_cmp": "size_cmp", "size_verb": "size_verb"}.get(slot, part or slot)
        value = _words(lexicon)[word]
        slot = {"size_cmp": "size", "size_verb": "size", "adjacent": "relation"}.get(slot, slot)
        if slot == "object":
            out.setdefault("object", {})[part] = list(value) if part == "cell" else value
        elif part:
            out.setdefault(slot, {})[part] = value
        else:
            out[slot] = list(value) if slot == "cell" else value
    for slot in ("subject", "other", "anchor"):
        if isinstance(out.get(slot), dict):
            identity = out.pop(slot)
            if "colour" in identity:
                out[slot] = [identity["colour"], identity["shape"]]
            else:
                out[f"{slot}_shape"] = identity["shape"]
    if family == "referent_edit":
        out["value"] = next((out.pop(k) for k in ("colour", "size", "shape") if k in out), None)
    return out


def _parse_core(text: str, core_style: str, seen_only: bool, classic_only: bool = False) -> list[dict[str, Any]]:
    found = [_slots(name, match.groupdict()) for name, pattern in _cores(core_style, seen_only)
             if (not classic_only or name in CLASSIC_VARIANTS) and (match := pattern.fullmatch(text))]
    if not classic_only:
        for joiner, held in JOINERS[core_style]:
            if seen_only and held:
                continue
            for at in (m.start() for m in re.finditer(re.escape(joiner), text)):
                first = _parse_core(text[:at], core_style, seen_only, True)
                second = _parse_core(text[at + len(joiner):], core_style, seen_only, True)
                found += [{"family": "compound", "steps": [a, b]} for a in first for b in second]
    return found


def parse(caption: str, seen_only: bool = False) -> list[dict[str, Any]]:
    """Every program (as ``Program.to_json``) the caption can be read as; one when it is
    unambiguous. ``seen_only``: read with the seen phrasings alone (none for a held-out caption)."""
    readings: list[dict[str, Any]] = []
    for style, frames in FRAMES.items():
        for frame, held in frames:
            if seen_only and held:
                continue
            before, after = frame.split("{c}")
            if not (caption.startswith(before) and caption.endswith(after)):
                continue
            core = caption[len(before):len(caption) - len(after)]
            for filler, held_filler in FILLERS:
                if (seen_only and held_filler) or (filler and not core.endswith(filler)):
                    continue
                text = core[:len(core) - len(filler)] if filler else core
                readings += [r for r in _parse_core(text, CORE_STYLE[style], seen_only) if r not in readings]
    return readings
