"""Verdict parsers: the final True/False word, option letter or ``reward:`` value of a judge's reply,
with its position in the reply (for probability-weighted verdicts). The total score's parser is
``grade.find_total_score``. Presets built on these: ``verl.utils.reward_score.verdicts``.
"""

from __future__ import annotations

import re
from typing import Sequence


def after_think(reply: str | None, is_think_model: bool) -> tuple[str, int] | None:
    """(the text after the last ``</think>``, its offset in ``reply``); for other models without the
    tag the whole reply; None for a think-style model that never closed its thinking."""
    if not isinstance(reply, str):
        return None
    cut = reply.rfind("</think>")
    if cut >= 0:
        return reply[cut + len("</think>"):], cut + len("</think>")
    return (None if is_think_model else (reply, 0))


# ---------------------------------------------------------------------------------------------
# Words: binary True/False (+ an invalid word)
# ---------------------------------------------------------------------------------------------
_NEGATION = r"(?:\bnot|n't|\bnever|\bno)"
_NEGATION_BEFORE = re.compile(_NEGATION + r"\s*[*_`'\"]*\s*$", re.IGNORECASE)
_MARKER_WORDS = r"\b(?:final\s+answer|answer|verdict|judg(?:e)?ment|decision|output|result)"
_DECORATION = re.compile(r"[*_`'\"\s.!()\[\]{}$]|\\boxed|\\text")


def _word_patterns(words: tuple[str, ...]) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    alternatives = "|".join(re.escape(w) for w in words)
    word = re.compile(rf"\b({alternatives})\b", re.IGNORECASE)
    marked = re.compile(
        _MARKER_WORDS + r"\s*(?:is)?\s*[:=\-]?\s*(?:[*_`'\"(\[{]|\\boxed|\\text)*\s*(" + alternatives + r")\b",
        re.IGNORECASE,
    )
    # a negated verdict word anywhere in a line, in one pass: testing each word's prefix with
    # _NEGATION_BEFORE is quadratic (a 20k-character reply of "True True ..." took seconds)
    negated = re.compile(_NEGATION + rf"\s*[*_`'\"]*\s*\b(?:{alternatives})\b", re.IGNORECASE)
    return word, marked, negated


def find_word(reply: str | None, words: Sequence[str] = ("true", "false"),
              is_think_model: bool = False) -> tuple[str, int] | None:
    """(the final verdict word, lower-cased, and its index in ``reply``), or None.

    Strict on purpose: "untrue", "not true", "isn't false" or a line naming two different words
    without a marker are not verdicts. Tiers: (1) the whole reply is the word ("True", "**False**.",
    "\\boxed{True}"); (2) the last marked word ("Answer: True", "Final answer: **False**"); (3) the
    last line holding a verdict word, if it holds only one kind and it is not negated.
    """
    split = after_think(reply, is_think_model)
    if split is None:
        return None
    text, offset = split
    lowered = tuple(w.lower() for w in words)
    word_re, marked_re, negated_re = _word_patterns(lowered)
    stripped = text.strip()
    if not stripped:
        return None
    offset += len(text) - len(text.lstrip())
    bare = _DECORATION.sub("", stripped).lower()
    if bare in lowered:
        return bare, offset + stripped.lower().index(bare)
    marked = list(marked_re.finditer(stripped))
    if marked:
        last = marked[-1]
        if _NEGATION_BEFORE.search(stripped[: last.start(1)]):
            return None
        return last.group(1).lower(), offset + last.start(1)
    starts, position = [], 0
    for line in stripped.splitlines(keepends=True):
        starts.append((position, line))
        position += len(line)
    for start, line in reversed(starts):
        found = list(word_re.finditer(line))
        if not found:
            continue
        kinds = {w.group(1).lower() for w in found}
        if len(kinds) != 1:
            return None
        if negated_re.search(line):
            return None
        return kinds.pop(), offset + start + found[0].start(1)
    return None


def parse_verdict(reply: str | None, is_think_model: bool = False) -> bool | None:
    """True/False if the reply's final verdict is a whole-word True/False, else None (see
    :func:`find_word`). For think-style models only the text after the last ``</think>`` is read
    (no ``</think>`` = the model never finished thinking = no verdict)."""
    found = find_word(reply, ("true", "false"), is_think_model)
    return None if found is None else found[0] == "true"


# ---------------------------------------------------------------------------------------------
# Letters and reward values
# ---------------------------------------------------------------------------------------------
_BARE_LETTER = re.compile(r"^[\s*_`'\"(\[{]*([A-Z])[\s*_`'\")\]}.:]*$")
_MARKED_LETTER = re.compile(
    r"\b(?i:final\s+answer|answer|verdict|judg(?:e)?ment|decision|option|choice|grade)\s*(?i:is)?\s*[:=\-]?\s*"
    r"[*_`'\"(\[{]*\s*([A-Z])\b"
)


def find_letter(reply: str | None, letters: str, is_think_model: bool = False) -> tuple[str, int] | None:
    """(the final option letter, its index in ``reply``): a reply that is only the letter, else the
    last marked one (``Answer: B``, ``the answer is (C)``); only ``letters`` count."""
    split = after_think(reply, is_think_model)
    if split is None:
        return None
    text, offset = split
    bare = _BARE_LETTER.match(text)
    if bare:
        return (bare.group(1), offset + bare.start(1)) if bare.group(1) in letters else None
    marked = [m for m in _MARKED_LETTER.finditer(text)]
    if marked and marked[-1].group(1) in letters:
        return marked[-1].group(1), offset + marked[-1].start(1)
    return None


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_REWARD_IN_REPLY = re.compile(r"reward\s*[:=]\s*(" + _NUMBER + ")", re.IGNORECASE)


def find_reward_value(reply: str | None) -> tuple[float, int] | None:
    """The number after the last ``reward:`` (hosted reward judges answer ``reward:<float>``) and
    its index, or None (never a silent 0)."""
    if not reply:
        return None
    found = list(_REWARD_IN_REPLY.finditer(reply))
    if not found:
        return None
    value = float(found[-1].group(1))
    if value != value or abs(value) == float("inf"):
        return None
    return value, found[-1].start(1)
