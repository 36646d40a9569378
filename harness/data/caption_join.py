"""How the relative captions of a multi-caption query (FashionIQ's two) become one text.

Each CIR codebase has its own convention (docs/sources.md), and
numbers are only comparable under the same one, so it is a named, recorded choice:

    clip4cir   "C1 and c2": both stripped of '.?, ', the first capitalised (CLIP4Cir validate.py;
               SPRC, Bi-BLIP4CIR); the default
    plain      "c1 and c2", stripped (CIReVL, DQU-CIR)
    reversed   "c2 and c1", unstripped (Pic2Word's "a photo of * , {cap2} and {cap1}")
    both       "c1 and c2" and "c2 and c1" (stripped), separated by ORDER_SEPARATOR: a method that
               averages the query embeddings of both orders (SEARLE, LinCIR) splits them again

CLIP4Cir also randomises the order (and drops one caption) while training; not done here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

_STRIP = ".?, "


def _clip4cir(captions: Sequence[str]) -> str:
    first, *rest = [c.strip(_STRIP) for c in captions]
    return " and ".join([first.capitalize(), *rest])


def _plain(captions: Sequence[str]) -> str:
    return " and ".join(c.strip(_STRIP) for c in captions)


def _reversed(captions: Sequence[str]) -> str:
    return " and ".join(reversed(list(captions)))


#: Separates the caption orders of the ``both`` convention (ASCII record separator).
ORDER_SEPARATOR = "\x1e"


def _both(captions: Sequence[str]) -> str:
    stripped = [c.strip(_STRIP) for c in captions]
    return ORDER_SEPARATOR.join([" and ".join(stripped), " and ".join(reversed(stripped))])


CONVENTIONS: dict[str, Callable[[Sequence[str]], str]] = {"clip4cir": _clip4cir, "plain": _plain,
                                                         "reversed": _reversed, "both": _both}
DEFAULT_CONVENTION = "clip4cir"


def join_captions(captions: Sequence[str], convention: str = DEFAULT_CONVENTION) -> str:
    """One text from several relative captions; one caption is returned as it is."""
    if len(captions) == 1:
        return captions[0]
    return CONVENTIONS[convention](captions)
