"""Spellings of a prompt that the blocklist also checks, beyond what the original catches: the original turns every
non-ASCII character into a space, so "ｇｏｒｅ" (full-width) or "gоre" (Cyrillic o) pass it, and its word matching
misses "nerve-gas" for "nerve gas" and "g.o.r.e" for "gore".

Every variant is checked with the original's rules unchanged; the prompt itself is always checked first, so these
only ever add blocks.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# letters joined by punctuation inside a word: nerve-gas, nerve_gas, bomb.making
_JOINED = re.compile(r"(?<=[A-Za-z])[-_./\\·•'’]+(?=[A-Za-z])")
# three or more single letters spelled out: g.o.r.e, G O R E, g-o-r-e, g*o*r*e
_SPELLED = re.compile(r"(?<![A-Za-z])(?:[A-Za-z][\s._\-*·•]+){2,}[A-Za-z](?![A-Za-z])")


@lru_cache(maxsize=4096)
def _latin(ch: str) -> str:
    """The ASCII look-alike of one character per Unicode's confusables (the confusable_homoglyphs data), else it."""
    from confusable_homoglyphs import confusables

    found = confusables.is_confusable(ch, preferred_aliases=[])
    if found:
        for glyph in found[0]["homoglyphs"]:
            if glyph["c"].isascii():
                return str(glyph["c"])
    return ch


def fold(text: str) -> str:
    """NFKC (full-width and compatibility forms), invisible format characters removed, look-alikes replaced by
    their ASCII letters, then accents stripped (NFKD without combining marks)."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch if ch.isascii() else _latin(ch) for ch in text if unicodedata.category(ch) != "Cf")
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))


def variants(prompt: str) -> list[str]:
    """The prompt, then its folded spelling, with joined words split and spelled-out letters joined."""
    folded = fold(prompt)
    split = _JOINED.sub(" ", folded)
    joined = _SPELLED.sub(lambda m: re.sub(r"[^A-Za-z]", "", m.group()), folded)
    out: list[str] = []
    for text in (prompt, folded, split, joined):
        if text not in out:
            out.append(text)
    return out
