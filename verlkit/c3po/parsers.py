"""Parsers of the replies of C3PO's teacher, completion model and judge.

Replies are parsed by pure functions that accept sloppy but usable text (markdown, other list
markers, an echoed header, chatter after the list) and raise ``ParseError`` with a short reason
otherwise; the caller re-asks with ``verlkit.c3po.prompts.reask_messages`` a bounded number of
times. A reply is model output, not user input: a ``ParseError`` is never an input error, it is
re-asked and then counted.

Headers count only where a constrained reply puts them (see ``verlkit.c3po.constraints``): list
section headers at the start of a line; answer headers (``IMPROVED_RESPONSE:``, ``RESPONSE:``,
``BETTER_RESPONSE:``) also mid-line when written in capitals. The last header found wins.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

__all__ = [
    "ParseError",
    "check_count",
    "parse_categories",
    "parse_cot",
    "parse_judge",
    "parse_numbered_list",
    "parse_prompt_list",
    "parse_revised",
]


def check_count(value: Any, name: str) -> int:
    """``value`` when it is a positive int (not a bool); else a ``ValueError`` naming ``name``. The
    item counts of prompts, parsers and constraints (k categories, n prompts) are checked with it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class ParseError(ValueError):
    """A reply that cannot be used; ``reason`` is short enough to put in a re-ask."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _reply_text(reply: Any) -> str:
    if reply is None:
        raise ParseError("the reply is empty")
    if not isinstance(reply, str):
        raise ParseError(f"the reply is not text ({type(reply).__name__})")
    if not reply.strip():
        raise ParseError("the reply is empty")
    return reply


def _snippet(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return repr(text if len(text) <= limit else text[:limit] + "...")


# A header may be dressed in markdown ("**REVISED_CATEGORIES:**", "## Revised categories:"), carry a
# short parenthetical ("CATEGORIES (draft):") and use a space for the underscore. Closing emphasis
# is consumed only when the header opened it, so a response starting with "__init__" or "**Subject**"
# keeps it. Every run of spaces is followed by a token that cannot be a space (or ends the
# pattern), so a line of thousands of spaces costs linear time, not a backtracking explosion.
_EMPHASIS = r"(?:\*{1,2}|_{1,2})"
_MD_LEAD = rf"^[ \t>#]*(?:(?P<open>{_EMPHASIS})[ \t]*)?"
_INLINE_LEAD = rf"(?<![A-Za-z0-9_*])(?P<open>{_EMPHASIS})?"
_MD_TAIL = (rf"[ \t]*(?(open)(?:{_EMPHASIS}[ \t]*)?)(?:\([^()\n]{{0,40}}\)[ \t]*)?:[ \t]*"
            rf"(?(open){_EMPHASIS}?)")


def _header_words(name: str) -> str:
    return r"[ _]".join(re.escape(word) for word in name.split("_"))


def _line_header(name: str) -> re.Pattern[str]:
    """A header at the start of a line, any case. List sections use only this form: a list item is
    never at a line start after its number, so no item text can pose as a header."""
    return re.compile(rf"{_MD_LEAD}{_header_words(name)}{_MD_TAIL}", re.IGNORECASE | re.MULTILINE)


def _inline_header(name: str) -> re.Pattern[str]:
    """The header in capitals anywhere in a line ("... applies. RESPONSE: Sure"), not glued to a
    longer word (so RESPONSE never matches inside IMPROVED_RESPONSE or RESPONSE_1)."""
    return re.compile(rf"{_INLINE_LEAD}{_header_words(name)}{_MD_TAIL}")


_CATEGORIES = _line_header("CATEGORIES")
_REVISED_CATEGORIES = _line_header("REVISED_CATEGORIES")
_PROMPTS = _line_header("PROMPTS")
_REVISED_PROMPTS = _line_header("REVISED_PROMPTS")
_ANSWER_HEADERS = {
    name: (_line_header(name), _inline_header(name))
    for name in ("IMPROVED_RESPONSE", "RESPONSE", "BETTER_RESPONSE")
}
# An all-capitals header line ("THOUGHTS:", "REVISED_PROMPTS:") ends the list item above it.
_HEADER_LINE = re.compile(rf"{_MD_LEAD}[A-Z][A-Z0-9]{{2,}}(?:[ _][A-Z0-9]+)*{_MD_TAIL}")


def _after_last(text: str, *patterns: re.Pattern[str]) -> str | None:
    """The text after the last match of any of the patterns (None when none matches)."""
    best: re.Match[str] | None = None
    for pattern in patterns:
        for match in pattern.finditer(text):
            if best is None or (match.start(), match.end()) > (best.start(), best.end()):
                best = match
    return None if best is None else text[best.end():]


# "1. x", "1) x", "(1) x", "[1] x", "1 - x", "1: x", "**1.** x", "- 1. x". The separator must be
# followed by a space, the line end or a non-digit, so "1.5 cups" or "3:30 pm" never start an item.
_NUMBERED_ITEM = re.compile(
    r"^[ \t]*(?:[-*+•][ \t]+)?(?:\*\*|__)?[(\[]?[0-9]{1,3}(?:\*\*|__)?[ \t]*(?:[.):\]]|[-–—])"
    r"(?:\*\*|__)?(?:[ \t]+|$|(?=[^0-9\s]))(?P<body>.*)$"
)
_BULLET_ITEM = re.compile(r"^[ \t]*[-*+•][ \t]+(?P<body>\S.*)$")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_QUOTE_PAIRS = (('"', '"'), ("“", "”"), ("'", "'"), ("‘", "’"), ("«", "»"))


def _collect_items(lines: Sequence[str], item: re.Pattern[str]) -> list[str]:
    items: list[list[str]] = []
    current: list[str] | None = None
    after_blank = False
    for line in lines:
        match = item.match(line)
        if match:
            current = [match.group("body")]
            items.append(current)
            after_blank = False
        elif current is None:
            continue  # text before the first item, or chatter after an item was closed
        elif not line.strip():
            after_blank = True
        elif _HEADER_LINE.match(line):
            current = None
        elif after_blank and not line.startswith((" ", "\t")):
            current = None  # unindented text after a blank line: chatter, not the item
        else:
            current.append(line)
            after_blank = False
    return [" ".join(parts) for parts in items]


def _clean_item(text: str) -> str:
    text = " ".join(_BOLD.sub(r"\1", text).split()).strip("* ")
    stripped = True
    while stripped and len(text) >= 2:
        stripped = False
        for opening, closing in _QUOTE_PAIRS:
            inner = text[1:-1]
            if text[0] == opening and text[-1] == closing and opening not in inner and closing not in inner:
                text, stripped = inner.strip("* "), True
                break
    return text


def _items_or_none(text: str | None) -> list[str] | None:
    if text is None:
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    raw = _collect_items(lines, _NUMBERED_ITEM) or _collect_items(lines, _BULLET_ITEM)
    items = [cleaned for cleaned in map(_clean_item, raw) if cleaned]
    return items or None


def _dedupe(items: Sequence[str]) -> list[str]:
    """First occurrences, comparing case-insensitively and ignoring punctuation."""
    seen: set[str] = set()
    kept = []
    for item in items:
        key = " ".join(re.sub(r"[\W_]+", " ", item.casefold()).split()) or item.casefold()
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def parse_numbered_list(text: str) -> list[str]:
    """The items of a numbered list (markdown bullets when there are no numbers). Text before the
    first item is ignored; a line right below an item continues it; after a blank line or an
    all-capitals header line, only indented lines continue it."""
    items = _items_or_none(_reply_text(text))
    if items is None:
        raise ParseError("no numbered list found")
    return items


def parse_categories(text: str, k: int) -> list[str]:
    """The k categories of the last REVISED_CATEGORIES: list; the last CATEGORIES: list when there
    is no revised section or it holds no list. Duplicates are dropped; fewer than k is an error."""
    check_count(k, "k")
    text = _reply_text(text)
    items = _items_or_none(_after_last(text, _REVISED_CATEGORIES))
    section = "REVISED_CATEGORIES:"
    if items is None:
        fallback = _after_last(text, _CATEGORIES)
        if fallback is None:
            raise ParseError("no REVISED_CATEGORIES: section with a numbered list")
        items, section = _items_or_none(fallback), "CATEGORIES:"
        if items is None:
            raise ParseError("no numbered list after REVISED_CATEGORIES: or CATEGORIES:")
    items = _dedupe(items)
    if len(items) < k:
        raise ParseError(f"the {section} list has {len(items)} distinct categories, {k} are needed")
    return items[:k]


def parse_prompt_list(text: str, n: int, revised: bool) -> list[str]:
    """Up to n distinct prompts of at least 3 words. ``revised``: from the last REVISED_PROMPTS:
    list (the last PROMPTS: list when there is none); otherwise from the whole reply. Fewer than n
    is fine (the caller counts the shortfall); none is an error."""
    check_count(n, "n")
    text = _reply_text(text)
    if revised:
        items = _items_or_none(_after_last(text, _REVISED_PROMPTS))
        if items is None:
            fallback = _after_last(text, _PROMPTS)
            if fallback is None:
                raise ParseError("no REVISED_PROMPTS: section with a numbered list")
            items = _items_or_none(fallback)
    else:
        items = _items_or_none(text)
    if items is None:
        raise ParseError("no numbered list of prompts found")
    prompts = [item for item in _dedupe(items) if len(item.split()) >= 3]
    if not prompts:
        raise ParseError("no usable prompt in the list (each needs at least 3 words)")
    return prompts[:n]


def _answer_after(text: str, name: str) -> str:
    text = _reply_text(text)
    rest = _after_last(text, *_ANSWER_HEADERS[name])
    if rest is None:
        raise ParseError(f"no {name}: section")
    answer = rest.strip()
    if not answer:
        raise ParseError(f"nothing after {name}:")
    return answer


def parse_revised(text: str) -> str:
    """The rewritten response: the text after the last IMPROVED_RESPONSE:, stripped."""
    return _answer_after(text, "IMPROVED_RESPONSE")


def parse_cot(text: str) -> str:
    """The answer: the text after the last RESPONSE: (not IMPROVED_RESPONSE:), stripped."""
    return _answer_after(text, "RESPONSE")


_JUDGE_NUMBER = re.compile(r"[\s*_\"'`(\[]*([0-9]+)((?:[.,][0-9]+)?)(?:\s*/\s*([0-9]+))?")


def parse_judge(text: str) -> int:
    """The score 1..5 after the last BETTER_RESPONSE: ("**4**", "4/5" and "4." are fine)."""
    text = _reply_text(text)
    rest = _after_last(text, *_ANSWER_HEADERS["BETTER_RESPONSE"])
    if rest is None:
        raise ParseError("no BETTER_RESPONSE: line")
    match = _JUDGE_NUMBER.match(rest)
    if match is None:
        raise ParseError(f"BETTER_RESPONSE: must be followed by a number from 1 to 5, got {_snippet(rest)}")
    digits, fraction, denominator = match.groups()
    if fraction and fraction[1:].strip("0"):
        raise ParseError(f"BETTER_RESPONSE: must be a whole number from 1 to 5, got {digits}{fraction}")
    if denominator is not None and denominator.lstrip("0") != "5":
        raise ParseError(f"BETTER_RESPONSE: must be on the 1-5 scale, got {digits}/{denominator}")
    # Length first: int() of thousands of digits is slow or refused.
    value = int(digits) if len(digits) <= 3 else 0
    if not 1 <= value <= 5:
        raise ParseError(f"BETTER_RESPONSE: must be a number from 1 to 5, got {digits}")
    return value
