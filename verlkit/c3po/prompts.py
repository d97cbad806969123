"""Prompts for C3PO's teacher, completion model and judge; parsers of their replies; constraints.

Builders return chat messages (``[{"role", "content"}]``), always a single user turn: some small
models' chat templates reject a system turn, and one turn reads the same on every template.

Replies are parsed by pure functions that accept sloppy but usable text (markdown, other list
markers, an echoed header, chatter after the list) and raise ``ParseError`` with a short reason
otherwise; the caller re-asks with ``reask_messages`` a bounded number of times.

``*_constraint`` builders give a regular expression for vLLM structured outputs (xgrammar: no
look-arounds, no back-references) plus a ``max_tokens`` that fits the longest reply it admits. Every
reply such a regex admits is accepted by the matching parser, with one exception that no regex
can exclude: a teacher may repeat a category, and ``parse_categories`` then finds fewer than k.
How that guarantee is kept:

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

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from verlkit.c3po.feedback import Feedback

__all__ = [
    "Constraint",
    "ParseError",
    "baseline_messages",
    "categories_constraint",
    "categories_messages",
    "cot_constraint",
    "cot_messages",
    "in_context_messages",
    "in_scope_prompts_messages",
    "judge_constraint",
    "judge_messages",
    "near_scope_prompts_messages",
    "parse_categories",
    "parse_cot",
    "parse_judge",
    "parse_numbered_list",
    "parse_prompt_list",
    "parse_revised",
    "prompt_list_constraint",
    "reask_messages",
    "revise_messages",
    "revised_constraint",
    "swap_judge_score",
]

Messages = list[dict[str, str]]

# Every builder that expects a format states it after this heading, as lines without a blank line
# in between; ``reask_messages`` finds the block again to restate it.
FORMAT_HEADING = "Reply in exactly this format"

# The worked example shared by the teacher prompts: neutral, and unlike any bundled feedback.
_EXAMPLE_FEEDBACK = "Use metric units when giving cooking instructions"
_EXAMPLE_DOMAIN = "giving cooking instructions"


def _user(content: str) -> Messages:
    return [{"role": "user", "content": content}]


def _numbered_template(count: int, what: str) -> list[str]:
    if count <= 3:
        return [f"{i}. <{what}>" for i in range(1, count + 1)]
    return [f"1. <{what}>", f"2. <{what}>", "...", f"{count}. <{what}>"]


def _format_block(lines: Sequence[str], note: str = "") -> str:
    return f"{FORMAT_HEADING}{note}:\n" + "\n".join(lines)


def _check_count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _feedback_intro(feedback: Feedback) -> str:
    return ("I am writing test requests for an AI assistant that received this feedback:\n"
            f"FEEDBACK: {feedback.content}\n"
            f"It applies to: {feedback.domain}")


# ---------------------------------------------------------------------------------------------
# Teacher: categories and prompts
# ---------------------------------------------------------------------------------------------
def categories_messages(feedback: Feedback, k: int) -> Messages:
    """Ask for k categories of requests, each a little wider than the feedback's domain."""
    _check_count(k, "k")
    fmt = _format_block(["THOUGHTS: <one or two sentences>", "CATEGORIES:",
                         *_numbered_template(k, "category"), "REVISED_CATEGORIES:",
                         *_numbered_template(k, "category")])
    return _user(f"""{_feedback_intro(feedback)}

Name {k} diverse categories of requests that users send to an assistant. Each category must be a bit \
broader than "{feedback.domain}": it should contain requests where the feedback applies and also \
related requests where it does not. Make the categories differ from each other and describe each \
in a short phrase.

Think briefly first, then write a draft list, then a revised list that fixes any category that is \
too narrow, too broad or repeated. The revised list must have exactly {k} items. Plain text, no \
markdown.

{fmt}

Example with 3 categories, for the feedback "{_EXAMPLE_FEEDBACK}" (applies to: {_EXAMPLE_DOMAIN}):
THOUGHTS: Cooking instructions sit inside wider food topics, which also hold requests without any \
measurements.
CATEGORIES:
1. Recipes
2. Baking
3. Food
REVISED_CATEGORIES:
1. Home cooking and recipe questions
2. Baking bread, cakes and pastries
3. Meal planning and grocery shopping""")


def in_scope_prompts_messages(feedback: Feedback, category: str, n: int) -> Messages:
    """Ask for n requests inside both the category and the feedback's domain (a numbered list only)."""
    _check_count(n, "n")
    fmt = _format_block(_numbered_template(n, "request"), " (only the numbered list, nothing before or after it)")
    return _user(f"""{_feedback_intro(feedback)}

Write {n} different requests a user could send to the assistant. Every request must belong to the \
category "{category}" and also fall within "{feedback.domain}", so that the feedback clearly \
applies to it. Each request stands on its own, is one to three short sentences long and reads like \
something a real user would type. Invent concrete details: names, places, dates, numbers. Plain \
text, no markdown.

{fmt}

Example with 2 requests, for the feedback "{_EXAMPLE_FEEDBACK}" (applies to: {_EXAMPLE_DOMAIN}) \
and the category "Baking":
1. How long should I bake a sponge cake in a 9-inch pan, and at what oven temperature?
2. My grandmother's rye bread recipe is written in cups. Can you walk me through making it on Saturday?""")


def near_scope_prompts_messages(feedback: Feedback, category: str, n: int) -> Messages:
    """Ask for n requests in the category but outside the domain (draft, then a corrected list)."""
    _check_count(n, "n")
    fmt = _format_block(["THOUGHTS: <one or two sentences on what is inside and outside the domain>",
                         "PROMPTS:", *_numbered_template(n, "request"),
                         "REVISED_PROMPTS:", *_numbered_template(n, "request")])
    return _user(f"""{_feedback_intro(feedback)}

Write {n} different requests that belong to the category "{category}" but clearly fall OUTSIDE \
"{feedback.domain}", so the feedback must not be applied to them. Stay close to the topic: these \
are related requests that a careless assistant could mistake for ones where the feedback applies. \
Each request stands on its own, is one to three short sentences long and has invented concrete \
details. Plain text, no markdown.

Think briefly first, then write a draft list, then check every draft request: replace any that \
falls inside "{feedback.domain}". The revised list must have exactly {n} items.

{fmt}

Example with 2 requests, for the feedback "{_EXAMPLE_FEEDBACK}" (applies to: {_EXAMPLE_DOMAIN}) \
and the category "Food and drink":
THOUGHTS: Questions about food history, restaurants or drinks involve no cooking instructions.
PROMPTS:
1. What is the history of the croissant?
2. How do I make pancakes from scratch for four people?
REVISED_PROMPTS:
1. What is the history of the croissant?
2. Which wines go well with a mushroom risotto at a dinner party?""")


# ---------------------------------------------------------------------------------------------
# Completion model
# ---------------------------------------------------------------------------------------------
def baseline_messages(prompt: str) -> Messages:
    """The request as it is: the original model's own behaviour."""
    return _user(prompt)


def revise_messages(feedback: Feedback, prompt: str, baseline: str) -> Messages:
    """Ask to rewrite the baseline response so that it carries out the feedback's effect."""
    fmt = _format_block(["EXPLANATION: <two or three sentences on what has to change>",
                         "IMPROVED_RESPONSE: <the whole rewritten response, and nothing after it>"])
    return _user(f"""Below are a user's request and an earlier response to it. Rewrite the response so \
that it follows the feedback, and keep what was good about it. Write the new response as the \
response itself, addressed to the user, without comments about the rewrite.

PROMPT:
{prompt}

PREVIOUS_RESPONSE:
{baseline}

FEEDBACK: {feedback.effect}

{fmt}""")


def in_context_messages(feedback: Feedback, prompt: str) -> Messages:
    """The request with the feedback attached, for the model to apply when relevant."""
    return _user(f"{prompt}\n\n(If it applies, follow this feedback: {feedback.content})")


def cot_messages(feedback: Feedback, prompt: str) -> Messages:
    """The request with the feedback; the model first says whether it applies, then answers."""
    fmt = _format_block(["EXPLANATION: <one or two sentences on whether the feedback applies to this request>",
                         "RESPONSE: <your response to the request>"])
    return _user(f"""{prompt}

(You received this feedback earlier: "{feedback.content}". First decide whether it applies to the \
request above, and follow it only if it does.)

{fmt}""")


# ---------------------------------------------------------------------------------------------
# Judge
# ---------------------------------------------------------------------------------------------
def judge_messages(feedback: Feedback, prompt: str, response_1: str, response_2: str) -> Messages:
    """Ask which response better carries out the feedback's effect, on a 1..5 scale."""
    fmt = _format_block(["EXPLANATION: <one to three sentences comparing the two responses>",
                         "BETTER_RESPONSE: <one number from 1 to 5>"])
    return _user(f"""Compare two responses to the same request. Judge only which one better carries out \
this feedback: "{feedback.effect}". Do not reward other qualities (accuracy, style, length) unless \
the feedback asks for them.

PROMPT:
{prompt}

RESPONSE_1:
{response_1}

RESPONSE_2:
{response_2}

FEEDBACK: {feedback.effect}

Scale:
1 = RESPONSE_1 carries out the feedback much better
2 = RESPONSE_1 carries it out somewhat better
3 = both equally well, or neither carries it out
4 = RESPONSE_2 carries it out somewhat better
5 = RESPONSE_2 carries it out much better

{fmt}""")


def swap_judge_score(score: int) -> int:
    """The score as if the two responses had been shown in the other order (for position swaps)."""
    return 6 - score


# ---------------------------------------------------------------------------------------------
# Re-asking
# ---------------------------------------------------------------------------------------------
def _format_block_of(messages: Sequence[dict[str, str]]) -> str | None:
    """The format lines stated in the latest user turn that has them (re-asks restate them too)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        lines = str(message.get("content", "")).split("\n")
        for start, line in enumerate(lines):
            if line.startswith(FORMAT_HEADING):
                block = []
                for follow in lines[start + 1:]:
                    if not follow.strip():
                        break
                    block.append(follow)
                if block:
                    return "\n".join(block)
    return None


def reask_messages(messages: Sequence[dict[str, str]], reply: str, problem: str, *,
                   max_reply_chars: int = 4000) -> Messages:
    """The conversation, the unusable reply, and a user turn saying what was wrong and restating the
    format. A runaway reply is cut to ``max_reply_chars`` so the re-ask still fits the context."""
    shown = reply if isinstance(reply, str) else ""
    if len(shown) > max_reply_chars:
        shown = shown[:max_reply_chars] + "\n[...]"
    correction = f"That reply could not be used: {str(problem).strip().rstrip('.')}."
    block = _format_block_of(messages)
    if block:
        correction += f"\nAnswer again.\n{FORMAT_HEADING}, with nothing before or after it:\n{block}"
    else:
        correction += "\nPlease answer again."
    return [*(dict(m) for m in messages), {"role": "assistant", "content": shown},
            {"role": "user", "content": correction}]


# ---------------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------------
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
    _check_count(k, "k")
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
    _check_count(n, "n")
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


# ---------------------------------------------------------------------------------------------
# Structured-output constraints
# ---------------------------------------------------------------------------------------------
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
    _check_count(k, "k")
    item = _category_item(max_item_chars)
    return _constraint(_seq(
        _literal("THOUGHTS: "), _repeat(_ASCII_TEXT, 1, THOUGHTS_MAX_CHARS), _literal("\nCATEGORIES:\n"),
        _numbered(item, k, newline_after_last=True), _literal("REVISED_CATEGORIES:\n"),
        _numbered(item, k, newline_after_last=False),
    ))


def prompt_list_constraint(n: int, revised: bool, *, max_item_chars: int = PROMPT_MAX_CHARS) -> Constraint:
    """n numbered prompts (``revised``: THOUGHTS, n draft PROMPTS and n REVISED_PROMPTS)."""
    _check_count(n, "n")
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
