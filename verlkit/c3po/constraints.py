"""Regular-expression constraints for vLLM structured outputs that only admit parseable replies.

Each ``*_constraint`` builder gives a regular expression for vLLM structured outputs (xgrammar: no
look-arounds, no back-references) plus a ``max_tokens`` that fits the longest reply it admits. Every
reply such a regex admits is accepted by the matching parser of ``verlkit.c3po.parsers``, with one
exception that no regex can exclude: a teacher may repeat a category, and ``parse_categories`` then
finds fewer than k. How that guarantee is kept:

- headers the parsers look for sit on their own line, and every free-text field before them is a
  single line, so the last header found is the real one;
- list items start with a letter and hold no newline and no ``*`` (markdown bold is stripped by the
  parser); a prompt item's first two words are forced, so it always has the 3 words a prompt needs;
- a free response ends with a visible character other than ``*``, ``_`` and ``:``, so text remains
  after the last header even if the response itself contains one;
- xgrammar ignores non-ASCII characters inside a negated class (they are always allowed), so
  negated classes here exclude ASCII only and the parsers are safe with any non-ASCII character.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verlkit.c3po.parsers import check_count

__all__ = [
    "CATEGORY_MAX_CHARS",
    "EXPLANATION_MAX_CHARS",
    "PROMPT_MAX_CHARS",
    "THOUGHTS_MAX_CHARS",
    "Constraint",
    "categories_constraint",
    "cot_constraint",
    "judge_constraint",
    "prompt_list_constraint",
    "revised_constraint",
]


@dataclass(frozen=True)
class Constraint:
    """A regular expression for vLLM structured outputs and a ``max_tokens`` that lets the longest
    reply it admits finish (one token per character, plus slack for multi-byte characters)."""

    regex: str
    max_tokens: int

    def request_fields(self) -> dict[str, Any]:
        """The fields to add to a vLLM chat/completions request."""
        return {"max_tokens": self.max_tokens, "structured_outputs": {"regex": self.regex}}


THOUGHTS_MAX_CHARS = 300
EXPLANATION_MAX_CHARS = 300
CATEGORY_MAX_CHARS = 100
PROMPT_MAX_CHARS = 200
# A prompt item's first two words are written out in the regex (that is what guarantees 3 words),
# each at most this long; a longer word simply cannot come first.
_PROMPT_WORD_MAX_CHARS = 30

# Printable ASCII without "*": the single-line explanations (ASCII keeps 1 token per character exact).
_ASCII_TEXT = r"[ -)+-~]"
# One character of a list item: anything but ASCII control characters (so no newline) and "*".
_ITEM_CHAR = r"[^\x00-\x1f\x7f*]"
# A visible ASCII character other than "*": the letters of an item's first two words.
_WORD_CHAR = r"[!-)+-~]"
# The last character of a free response: visible (not str.isspace) and not "*", "_" or ":", which
# a header's markdown could swallow. Listed positively because xgrammar cannot exclude non-ASCII.
_FINAL_CHAR = (r"[!-)+-9;-^`-~\u00a1-\u167f\u1681-\u1fff\u200b-\u2027\u202a-\u202e\u2030-\u205e"
               r"\u2060-\u2fff\u3001-\ud7ff\ue000-\U0010ffff]")
_ANY_CHAR = r"[\s\S]"
_REGEX_SPECIAL = frozenset("\\.^$|?*+()[]{}")


@dataclass(frozen=True)
class _Piece:
    regex: str
    max_chars: int


def _literal(text: str) -> _Piece:
    # Not re.escape: it escapes spaces and other characters xgrammar need not accept escaped.
    escaped = "".join("\\n" if ch == "\n" else "\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)
    return _Piece(escaped, len(text))


def _repeat(char_class: str, low: int, high: int) -> _Piece:
    return _Piece(f"{char_class}{{{low},{high}}}", high)


def _one(char_class: str) -> _Piece:
    return _Piece(char_class, 1)


def _seq(*pieces: _Piece) -> _Piece:
    return _Piece("".join(p.regex for p in pieces), sum(p.max_chars for p in pieces))


def _numbered(item: _Piece, count: int, *, newline_after_last: bool) -> _Piece:
    parts = []
    for number in range(1, count + 1):
        parts += [_literal(f"{number}. "), item]
        if number < count or newline_after_last:
            parts.append(_literal("\n"))
    return _seq(*parts)


def _category_item(max_chars: int) -> _Piece:
    if max_chars < 3:
        raise ValueError(f"max_item_chars must be at least 3, got {max_chars}")
    return _seq(_one("[A-Za-z]"), _repeat(_ITEM_CHAR, 2, max_chars - 1))


def _prompt_item(max_chars: int) -> _Piece:
    # letter + word, space, word, space, visible char + free rest: three words whatever follows.
    fixed = 1 + (_PROMPT_WORD_MAX_CHARS - 1) + 1 + _PROMPT_WORD_MAX_CHARS + 1 + 1
    if max_chars < fixed + 10:
        raise ValueError(f"max_item_chars must be at least {fixed + 10}, got {max_chars}")
    return _seq(_one("[A-Za-z]"), _repeat(_WORD_CHAR, 0, _PROMPT_WORD_MAX_CHARS - 1), _literal(" "),
                _repeat(_WORD_CHAR, 1, _PROMPT_WORD_MAX_CHARS), _literal(" "), _one(_WORD_CHAR),
                _repeat(_ITEM_CHAR, 0, max_chars - fixed))


def _constraint(piece: _Piece) -> Constraint:
    return Constraint(regex=piece.regex, max_tokens=piece.max_chars + piece.max_chars // 10 + 16)


def _free_response(max_chars: int) -> _Piece:
    if not isinstance(max_chars, int) or max_chars < 1:
        raise ValueError(f"max_response_chars must be a positive integer, got {max_chars!r}")
    if max_chars == 1:
        return _one(_FINAL_CHAR)
    return _seq(_repeat(_ANY_CHAR, 0, max_chars - 1), _one(_FINAL_CHAR))


def categories_constraint(k: int, *, max_item_chars: int = CATEGORY_MAX_CHARS) -> Constraint:
    """THOUGHTS line, then k draft and exactly k revised categories (3..max_item_chars chars each)."""
    check_count(k, "k")
    item = _category_item(max_item_chars)
    return _constraint(_seq(
        _literal("THOUGHTS: "), _repeat(_ASCII_TEXT, 1, THOUGHTS_MAX_CHARS), _literal("\nCATEGORIES:\n"),
        _numbered(item, k, newline_after_last=True), _literal("REVISED_CATEGORIES:\n"),
        _numbered(item, k, newline_after_last=False),
    ))


def prompt_list_constraint(n: int, revised: bool, *, max_item_chars: int = PROMPT_MAX_CHARS) -> Constraint:
    """n numbered prompts (``revised``: THOUGHTS, n draft PROMPTS and n REVISED_PROMPTS)."""
    check_count(n, "n")
    item = _prompt_item(max_item_chars)
    if not revised:
        return _constraint(_numbered(item, n, newline_after_last=False))
    return _constraint(_seq(
        _literal("THOUGHTS: "), _repeat(_ASCII_TEXT, 1, THOUGHTS_MAX_CHARS), _literal("\nPROMPTS:\n"),
        _numbered(item, n, newline_after_last=True), _literal("REVISED_PROMPTS:\n"),
        _numbered(item, n, newline_after_last=False),
    ))


def revised_constraint(max_response_chars: int) -> Constraint:
    """EXPLANATION line, then IMPROVED_RESPONSE: and a response of at most max_response_chars."""
    return _constraint(_seq(_literal("EXPLANATION: "), _repeat(_ASCII_TEXT, 1, EXPLANATION_MAX_CHARS),
                            _literal("\nIMPROVED_RESPONSE: "), _free_response(max_response_chars)))


def cot_constraint(max_response_chars: int) -> Constraint:
    """EXPLANATION line, then RESPONSE: and a response of at most max_response_chars."""
    return _constraint(_seq(_literal("EXPLANATION: "), _repeat(_ASCII_TEXT, 1, EXPLANATION_MAX_CHARS),
                            _literal("\nRESPONSE: "), _free_response(max_response_chars)))


def judge_constraint() -> Constraint:
    """EXPLANATION line, then BETTER_RESPONSE: and one digit 1..5."""
    return _constraint(_seq(_literal("EXPLANATION: "), _repeat(_ASCII_TEXT, 1, EXPLANATION_MAX_CHARS),
                            _literal("\nBETTER_RESPONSE: "), _one("[1-5]")))
