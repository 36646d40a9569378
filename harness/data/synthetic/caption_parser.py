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
    **{f"referent_edit/{a}": {"action": a} for a in ("remove", "recolour", "resize", "replace")},
}


def _words(lexicon: str) -> dict[str, Any]:
    """Every surface word of a lexicon -> its value."""
    return {word: value for value, (seen, held) in LEXICONS[lexicon].items() for word in (*seen, *held)}


def _alt(lexicon: str, group: str | None) -> str:
    body = "|".join(re.escape(w) for w in sorted(_words(lexicon), key=len, reverse=True))
    return f"(?P<{group}>{body})" if group else f"(?:{body})"


def _identity(name: str) -> str:
    return f"the {_alt('colour', name + '__colour')} {_alt('shape', name + '__shape')}"


def _anchor() -> str:
    return f"the (?:{_alt('colour', 'anchor__colour')} )?{_alt('shape', 'anchor__shape')}"


def _core_regex(text: str) -> re.Pattern[str]:
    parts: list[str] = []
    for index, piece in enumerate(re.split(r"\{(\w+)\}", text)):
        if index % 2 == 0:
            parts.append(re.escape(piece))
        elif piece in ("subject", "other"):
            parts.append(_identity(piece))
        elif piece == "anchor":
            parts.append(_anchor())
        elif piece == "ref":
            parts.append(f"the {_alt('thing', None)} {_alt('relation', 'relation')} {_anchor()}")
        elif piece == "object":
            parts.append(f"an? {_alt('size', 'object__size')} {_alt('colour', 'object__colour')} "
                         f"{_alt('shape', 'object__shape')} in the {_alt('cell', 'object__cell')}")
        elif piece == "a":
            parts.append("an?")
        elif piece in ("colourword", "thing"):
            parts.append(_alt(piece, None))
        else:
            parts.append(_alt(piece, piece))
    return re.compile("".join(parts))


@cache
def _cores(core_style: str) -> list[tuple[str, re.Pattern[str]]]:
    return [(name, _core_regex(text)) for name, cores in CORES.items() for style, text, _ in cores if style == core_style]


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
        slot = {"size_cmp": "size", "size_verb": "size"}.get(slot, slot)
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


def _parse_core(text: str, core_style: str, classic_only: bool = False) -> list[dict[str, Any]]:
    found = [_slots(name, match.groupdict()) for name, pattern in _cores(core_style)
             if (not classic_only or name in CLASSIC_VARIANTS) and (match := pattern.fullmatch(text))]
    if not classic_only:
        for joiner, _ in JOINERS[core_style]:
            for at in (m.start() for m in re.finditer(re.escape(joiner), text)):
                first = _parse_core(text[:at], core_style, True)
                second = _parse_core(text[at + len(joiner):], core_style, True)
                found += [{"family": "compound", "steps": [a, b]} for a in first for b in second]
    return found


def parse(caption: str) -> list[dict[str, Any]]:
    """Every program (as ``Program.to_json``) the caption can be read as; one when it is
    unambiguous."""
    readings: list[dict[str, Any]] = []
    for style, frames in FRAMES.items():
        for frame, _ in frames:
            before, after = frame.split("{c}")
            if not (caption.startswith(before) and caption.endswith(after)):
                continue
            core = caption[len(before):len(caption) - len(after)]
            for filler, _ in FILLERS:
                if filler and not core.endswith(filler):
                    continue
                text = core[:len(core) - len(filler)] if filler else core
                readings += [r for r in _parse_core(text, CORE_STYLE[style]) if r not in readings]
    return readings
