"""C3PO prompts, reply parsers, re-asks and structured-output constraints.

The constraint tests sample replies from each regular expression (a small sampler for the regex
subset the builders emit, with adversarial chunks such as header words; and hypothesis'
``from_regex``) and check that the matching parser accepts every one of them. xgrammar, when
installed, must compile each regex and accept the same replies; with a tokenizer in the local model
cache, a uniformly random "model" constrained by xgrammar must finish within ``max_tokens``.
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verlkit.c3po.feedback import Feedback
from verlkit.c3po.prompts import (
    FORMAT_HEADING,
    Constraint,
    ParseError,
    baseline_messages,
    categories_constraint,
    categories_messages,
    cot_constraint,
    cot_messages,
    in_context_messages,
    in_scope_prompts_messages,
    judge_constraint,
    judge_messages,
    near_scope_prompts_messages,
    parse_categories,
    parse_cot,
    parse_judge,
    parse_numbered_list,
    parse_prompt_list,
    parse_revised,
    prompt_list_constraint,
    reask_messages,
    revise_messages,
    revised_constraint,
    swap_judge_score,
)

FEEDBACK = Feedback(content="Be more concise when emailing my boss Jared", domain="writing an email to my boss Jared",
                    effect="be more concise", name="concise-boss-emails")


def only_user_turn(messages) -> str:
    assert isinstance(messages, list) and len(messages) == 1
    assert set(messages[0]) == {"role", "content"} and messages[0]["role"] == "user"
    return messages[0]["content"]


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------
def test_teacher_prompts_state_feedback_counts_and_format():
    text = only_user_turn(categories_messages(FEEDBACK, 7))
    assert FEEDBACK.content in text and FEEDBACK.domain in text
    assert "exactly 7" in text and "7. <category>" in text
    assert text.index("THOUGHTS:") < text.index("\nCATEGORIES:") < text.index("REVISED_CATEGORIES:")

    text = only_user_turn(in_scope_prompts_messages(FEEDBACK, "Workplace email", 12))
    assert "Workplace email" in text and FEEDBACK.domain in text and "12. <request>" in text
    assert "THOUGHTS" not in text  # a numbered list only

    text = only_user_turn(near_scope_prompts_messages(FEEDBACK, "Workplace email", 5))
    assert "OUTSIDE" in text and "PROMPTS:" in text and "REVISED_PROMPTS:" in text and "5. <request>" in text
    with pytest.raises(ValueError):
        categories_messages(FEEDBACK, 0)


def test_completion_and_judge_prompts():
    assert baseline_messages("Hi there") == [{"role": "user", "content": "Hi there"}]
    text = only_user_turn(revise_messages(FEEDBACK, "Email Jared", "Dear Jared, ... long ..."))
    assert "PROMPT:\nEmail Jared" in text and "PREVIOUS_RESPONSE:\nDear Jared" in text
    assert f"FEEDBACK: {FEEDBACK.effect}" in text and "EXPLANATION:" in text and "IMPROVED_RESPONSE:" in text
    text = only_user_turn(in_context_messages(FEEDBACK, "Email Jared"))
    assert text.startswith("Email Jared") and text.endswith(f"(If it applies, follow this feedback: {FEEDBACK.content})")
    text = only_user_turn(cot_messages(FEEDBACK, "Email Jared"))
    assert text.startswith("Email Jared") and FEEDBACK.content in text
    assert text.index("EXPLANATION:") < text.index("\nRESPONSE:")
    text = only_user_turn(judge_messages(FEEDBACK, "Email Jared", "long one", "short one"))
    assert text.index("RESPONSE_1:\nlong one") < text.index("RESPONSE_2:\nshort one")
    assert FEEDBACK.effect in text and "BETTER_RESPONSE:" in text and "3 = " in text
    assert swap_judge_score(1) == 5 and swap_judge_score(3) == 3


# ---------------------------------------------------------------------------------------------
# parse_numbered_list
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("1. a\n2. b\n3. c", ["a", "b", "c"]),
    ("Sure! Here you go:\n\n1) first\n2) second", ["first", "second"]),
    ("1 - alpha\n2 - beta", ["alpha", "beta"]),
    ("1: alpha\n2: beta", ["alpha", "beta"]),
    ("(1) alpha\n(2) beta", ["alpha", "beta"]),
    ("**1.** **Bold item**\n**2.** plain", ["Bold item", "plain"]),
    ('1. "Quoted item"\n2. “Curly quoted”', ["Quoted item", "Curly quoted"]),
    ('1. "Hi" and "bye"', ['"Hi" and "bye"']),  # inner quotes are kept
    ("1. a\n2. b\n5. e\n9. i", ["a", "b", "e", "i"]),  # numbering gaps
    ("1. Write an email to Jared\n   about the budget.\n2. next", ["Write an email to Jared about the budget.", "next"]),
    ("1. a\n2. b\n\nLet me know if you want more!", ["a", "b"]),  # chatter after a blank line
    ("1. a\n\n   indented continuation\n2. b", ["a indented continuation", "b"]),
    ("1.\nitem on the next line\n2. b", ["item on the next line", "b"]),
    ("- apples\n- pears\n* plums", ["apples", "pears", "plums"]),  # markdown bullets, no numbers
    ("1. main\n   - sub point\n2. other", ["main - sub point", "other"]),
    ("1. mix 1.5 cups\n2. at 3:30 pm", ["mix 1.5 cups", "at 3:30 pm"]),
    ("1.5 cups of flour\n1. real item", ["real item"]),  # "1.5" does not start an item
    ("1. a\nTHOUGHTS: not part of a\n2. b", ["a", "b"]),
    ("1. a\r\n2. b\r\n", ["a", "b"]),
    ("1. a\n2.\n3. c", ["a", "c"]),  # an empty item is dropped
])
def test_parse_numbered_list(text, expected):
    assert parse_numbered_list(text) == expected


@pytest.mark.parametrize("text", ["", "   \n ", "no list here at all", "1.5 and 2.5", None, 42])
def test_parse_numbered_list_rejects(text):
    with pytest.raises(ParseError):
        parse_numbered_list(text)


# ---------------------------------------------------------------------------------------------
# parse_categories
# ---------------------------------------------------------------------------------------------
GOOD_CATEGORIES = """THOUGHTS: emails to the boss sit inside workplace writing.
CATEGORIES:
1. Emails
2. Work
3. Writing
REVISED_CATEGORIES:
1. Workplace emails
2. Professional messaging
3. Business writing"""


@pytest.mark.parametrize("text,expected", [
    (GOOD_CATEGORIES, ["Workplace emails", "Professional messaging", "Business writing"]),
    # revised list longer than k: the first k
    (GOOD_CATEGORIES + "\n4. Extra one", ["Workplace emails", "Professional messaging", "Business writing"]),
    # no revised section: the CATEGORIES list
    ("THOUGHTS: x\nCATEGORIES:\n1. A a\n2. B b\n3. C c", ["A a", "B b", "C c"]),
    # a revised header without a list: the CATEGORIES list
    ("CATEGORIES:\n1. A a\n2. B b\n3. C c\nREVISED_CATEGORIES: none needed, same as above.", ["A a", "B b", "C c"]),
    # markdown headers and bold items
    ("**THOUGHTS:** x\n**CATEGORIES:**\n1. q\n2. w\n3. e\n## Revised categories:\n1. **One**\n2. **Two**\n3. **Three**",
     ["One", "Two", "Three"]),
    # header twice (format echoed first): the last one wins
    ("REVISED_CATEGORIES:\n1. <category>\n\nTHOUGHTS: ok\nCATEGORIES:\n1. a\n2. b\n3. c\n"
     "REVISED_CATEGORIES:\n1. x1\n2. x2\n3. x3",
     ["x1", "x2", "x3"]),
    # case-insensitive duplicates are dropped before counting
    ("REVISED_CATEGORIES:\n1. Travel\n2. travel.\n3. Food\n4. Sport", ["Travel", "Food", "Sport"]),
    # trailing chatter after the revised list
    (GOOD_CATEGORIES + "\n\nI revised the list to be broader. Hope this helps!",
     ["Workplace emails", "Professional messaging", "Business writing"]),
    # the header and the first item on one line
    ("REVISED_CATEGORIES: 1. a\n2. b\n3. c", ["a", "b", "c"]),
    # a header with a parenthetical
    ("CATEGORIES (revised):\n1. a\n2. b\n3. c", ["a", "b", "c"]),
])
def test_parse_categories(text, expected):
    assert parse_categories(text, 3) == expected


@pytest.mark.parametrize("text,reason", [
    ("1. a\n2. b\n3. c", "no REVISED_CATEGORIES"),  # no section header at all
    ("", "empty"),
    ("REVISED_CATEGORIES:\n1. a\n2. b", "2 distinct categories, 3 are needed"),
    ("REVISED_CATEGORIES:\n1. a\n2. A\n3. a!", "1 distinct"),
    ("CATEGORIES:\nnone, sorry", "no numbered list"),
    ("Here are my categories: 1. a 2. b 3. c", "no REVISED_CATEGORIES"),
])
def test_parse_categories_rejects(text, reason):
    with pytest.raises(ParseError, match=reason):
        parse_categories(text, 3)


def test_revised_categories_items_cannot_pose_as_headers():
    # An item that mentions the header is not a header: only a header at a line start counts.
    text = "CATEGORIES:\n1. a\n2. b\nREVISED_CATEGORIES:\n1. More REVISED_CATEGORIES: here\n2. b2"
    assert parse_categories(text, 2) == ["More REVISED_CATEGORIES: here", "b2"]


# ---------------------------------------------------------------------------------------------
# parse_prompt_list
# ---------------------------------------------------------------------------------------------
NEAR = """THOUGHTS: requests about work that are not emails to Jared.
PROMPTS:
1. Write an email to Jared about Friday.
2. How should I prepare for my performance review next week?
REVISED_PROMPTS:
1. Draft a toast for my colleague Mia's farewell party.
2. How should I prepare for my performance review next week?
3. Ok
4. Draft a toast for my colleague Mia's farewell party!"""


def test_parse_prompt_list_revised_dedupes_and_drops_short_items():
    assert parse_prompt_list(NEAR, 5, revised=True) == [
        "Draft a toast for my colleague Mia's farewell party.",
        "How should I prepare for my performance review next week?",
    ]
    assert parse_prompt_list(NEAR, 1, revised=True) == ["Draft a toast for my colleague Mia's farewell party."]


def test_parse_prompt_list_fallbacks_and_plain_lists():
    no_revised = "THOUGHTS: x\nPROMPTS:\n1. What is a good gift for a coworker?\n2. How do I ask for a raise?"
    assert parse_prompt_list(no_revised, 4, revised=True) == ["What is a good gift for a coworker?",
                                                              "How do I ask for a raise?"]
    plain = "Here are the prompts:\n1. Email Jared about the Q3 numbers.\n2. Tell Jared I will be late today.\n\nDone!"
    assert parse_prompt_list(plain, 10, revised=False) == ["Email Jared about the Q3 numbers.",
                                                           "Tell Jared I will be late today."]
    bullets = "- Email Jared about lunch plans\n- Ask Jared for a day off"
    assert len(parse_prompt_list(bullets, 10, revised=False)) == 2


@pytest.mark.parametrize("text,revised", [
    ("1. Email Jared about lunch", True),  # no section header
    ("", False),
    ("1. Hi\n2. Ok then\n3. Yes", False),  # all too short
    ("Nothing numbered here.", False),
    ("REVISED_PROMPTS:\n(no changes)", True),  # revised section without a list and no PROMPTS fallback
])
def test_parse_prompt_list_rejects(text, revised):
    with pytest.raises(ParseError):
        parse_prompt_list(text, 3, revised=revised)


# ---------------------------------------------------------------------------------------------
# parse_revised / parse_cot
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("EXPLANATION: shorter.\nIMPROVED_RESPONSE: Hi Jared,\nDone.\n", "Hi Jared,\nDone."),
    ("EXPLANATION: x\n**IMPROVED_RESPONSE:**\n\nHi Jared", "Hi Jared"),
    ("EXPLANATION: x\nImproved response: Hi Jared", "Hi Jared"),
    # the header echoed in the explanation, then the real one
    ("EXPLANATION: I will write the IMPROVED_RESPONSE: below.\nIMPROVED_RESPONSE: Hi", "Hi"),
    ("EXPLANATION: x IMPROVED_RESPONSE: inline answer", "inline answer"),
    # emphasis that the header did not open belongs to the response
    ("EXPLANATION: x\nIMPROVED_RESPONSE: __init__ runs first", "__init__ runs first"),
    ("EXPLANATION: x\nIMPROVED_RESPONSE: **Subject:** Budget", "**Subject:** Budget"),
    ("EXPLANATION: x\n__IMPROVED_RESPONSE__: Hi", "Hi"),
])
def test_parse_revised(text, expected):
    assert parse_revised(text) == expected


@pytest.mark.parametrize("text", ["", "EXPLANATION: x\nHi Jared", "EXPLANATION: x\nIMPROVED_RESPONSE:   \n",
                                  "**IMPROVED_RESPONSE:**  "])
def test_parse_revised_rejects(text):
    with pytest.raises(ParseError):
        parse_revised(text)


@pytest.mark.parametrize("text,expected", [
    ("EXPLANATION: it applies.\nRESPONSE: Hi Jared", "Hi Jared"),
    ("EXPLANATION: it applies. RESPONSE: Hi Jared", "Hi Jared"),
    ("EXPLANATION: no.\nResponse: Sure!", "Sure!"),
    ("EXPLANATION: no.\n**RESPONSE:** Sure!", "Sure!"),
    # IMPROVED_RESPONSE / RESPONSE_1 / BETTER_RESPONSE are not RESPONSE
    ("RESPONSE: real\nIMPROVED_RESPONSE: not this\nBETTER_RESPONSE: 3\nRESPONSE_1: nor this",
     "real\nIMPROVED_RESPONSE: not this\nBETTER_RESPONSE: 3\nRESPONSE_1: nor this"),
])
def test_parse_cot(text, expected):
    assert parse_cot(text) == expected


@pytest.mark.parametrize("text", ["", "EXPLANATION: x", "IMPROVED_RESPONSE: only this", "RESPONSE:\n\n"])
def test_parse_cot_rejects(text):
    with pytest.raises(ParseError):
        parse_cot(text)


# ---------------------------------------------------------------------------------------------
# parse_judge
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("EXPLANATION: x\nBETTER_RESPONSE: 4", 4),
    ("EXPLANATION: x\nBETTER_RESPONSE: **4**", 4),
    ("EXPLANATION: x\n**BETTER_RESPONSE:** 2", 2),
    ("EXPLANATION: x\nBETTER_RESPONSE:5", 5),
    ("EXPLANATION: x\nBETTER_RESPONSE: 4/5", 4),
    ("EXPLANATION: x\nBETTER_RESPONSE: 3.", 3),
    ("EXPLANATION: x\nBETTER_RESPONSE: [1]", 1),
    ("EXPLANATION: x\nBetter response: 2", 2),
    ("BETTER_RESPONSE: 1\nEXPLANATION: changed my mind\nBETTER_RESPONSE: 5", 5),  # the last one
    ("EXPLANATION: x\nBETTER_RESPONSE:\n3", 3),
    ("EXPLANATION: x\nBETTER_RESPONSE: 4 (response 2 is shorter)", 4),
])
def test_parse_judge(text, expected):
    assert parse_judge(text) == expected


@pytest.mark.parametrize("text", [
    "EXPLANATION: x\nBETTER_RESPONSE: 6",
    "EXPLANATION: x\nBETTER_RESPONSE: 0",
    "EXPLANATION: x\nBETTER_RESPONSE: -1",
    "EXPLANATION: x\nBETTER_RESPONSE: 3.5",
    "EXPLANATION: x\nBETTER_RESPONSE: 4/10",
    "EXPLANATION: x\nBETTER_RESPONSE: RESPONSE_2",
    "EXPLANATION: x\nBETTER_RESPONSE: ",
    "BETTER_RESPONSE: 4\nI used the format BETTER_RESPONSE: k",  # the last one has no number
    "EXPLANATION: response 2 is better",
    "EXPLANATION: x\nBETTER_RESPONSE: " + "9" * 5000,
    "",
])
def test_parse_judge_rejects(text):
    with pytest.raises(ParseError):
        parse_judge(text)


# ---------------------------------------------------------------------------------------------
# Parsers never fail with anything but ParseError
# ---------------------------------------------------------------------------------------------
FRAGMENTS = [
    "THOUGHTS:", "CATEGORIES:", "REVISED_CATEGORIES:", "PROMPTS:", "REVISED_PROMPTS:", "IMPROVED_RESPONSE:",
    "RESPONSE:", "BETTER_RESPONSE:", "EXPLANATION:", "**", "__", "\n", "\n\n", "\r", " ", "\t", "1. ", "2) ",
    "(3) ", "10 - ", "- ", "* ", '"', "“", "”", "'", "4", "5", "/5", "9" * 12, "1.5", "a", "word ", "😀", "\u2028",
    "\x85", "\x00", "(", ")", "[", "]", "# ", "> ", ":",
]
ARBITRARY = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map("".join),
)
PARSERS = [
    parse_numbered_list,
    lambda t: parse_categories(t, 3),
    lambda t: parse_prompt_list(t, 3, True),
    lambda t: parse_prompt_list(t, 3, False),
    parse_revised,
    parse_cot,
    parse_judge,
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ARBITRARY)
def test_parsers_raise_only_parse_error(text):
    for parse in PARSERS:
        try:
            result = parse(text)
        except ParseError as exc:
            assert exc.reason and isinstance(exc.reason, str)
            continue
        if isinstance(result, list):
            assert result and all(isinstance(item, str) and item.strip() for item in result)
        elif isinstance(result, str):
            assert result.strip()
        else:
            assert 1 <= result <= 5


@pytest.mark.parametrize("text", [
    "RESPONSE" + " " * 20000 + "x",
    "CATEGORIES" + " \t" * 10000 + "x\n",
    "**" + " " * 20000 + "REVISED_PROMPTS",
    "1." + " " * 20000 + "x",
    "BETTER_RESPONSE:" + " " * 20000 + "/",
    "RESPONSE:" * 5000,
    "+1 " * 10000,
])
def test_parsers_stay_fast_on_pathological_text(text):
    # Runs of spaces next to optional markup once made the header patterns backtrack for minutes.
    start = time.monotonic()
    for parse in PARSERS:
        try:
            parse(text)
        except ParseError:
            pass
    assert time.monotonic() - start < 5.0


# ---------------------------------------------------------------------------------------------
# Re-asking
# ---------------------------------------------------------------------------------------------
def test_reask_restates_problem_and_format():
    messages = categories_messages(FEEDBACK, 4)
    again = reask_messages(messages, "I cannot do that.", "no REVISED_CATEGORIES: section")
    assert again[: len(messages)] == messages and again is not messages
    assert again[-2] == {"role": "assistant", "content": "I cannot do that."}
    last = again[-1]
    assert last["role"] == "user" and "no REVISED_CATEGORIES: section" in last["content"]
    assert "THOUGHTS: <one or two sentences>\nCATEGORIES:" in last["content"]
    assert "4. <category>" in last["content"] and "Example" not in last["content"]
    # a second re-ask still restates the format
    twice = reask_messages(again, "still wrong", "no list")
    assert len(twice) == len(again) + 2 and "REVISED_CATEGORIES:" in twice[-1]["content"]
    assert twice[-1]["content"].count(FORMAT_HEADING) == 1


def test_reask_without_format_and_long_reply():
    again = reask_messages(baseline_messages("hi"), "x" * 10_000, "the reply was cut off")
    assert len(again[-2]["content"]) < 4100 and again[-2]["content"].endswith("[...]")
    assert "the reply was cut off" in again[-1]["content"] and "answer again" in again[-1]["content"]
    judge = reask_messages(judge_messages(FEEDBACK, "p", "a", "b"), "", "BETTER_RESPONSE: must be 1-5, got 6")
    assert "BETTER_RESPONSE: <one number from 1 to 5>" in judge[-1]["content"]


# ---------------------------------------------------------------------------------------------
# Constraints: a sampler for the regex subset the builders emit
# ---------------------------------------------------------------------------------------------
CHAR_POOL = ([chr(c) for c in range(0x20, 0x7F)] + list("\n\t\r\x0b\x0c\x1f\x7f")
             + ["\x85", "\xa0", "\u2028", "\u2029", "\u3000", "\u200b", "\ufeff"]
             + ["é", "ß", "中", "😀", "“", "”", "’"])
ADVERSARIAL = ["REVISED_CATEGORIES:", "CATEGORIES:", "REVISED_PROMPTS:", "PROMPTS:", "IMPROVED_RESPONSE:",
               "RESPONSE:", "BETTER_RESPONSE: 9", "**", "__", "1. ", '"', "“", "  ", "\u2028", "\x85", "😀", "- ",
               "\nRESPONSE:", "\nIMPROVED_RESPONSE: ", "\nBETTER_RESPONSE:", "\n\n", "\n1. ", ":", "_", "*", " \n"]
_CLASS_CHARS: dict[str, list[str]] = {}


def regex_atoms(regex: str) -> list[tuple[str, str, int, int]]:
    """(kind, payload, low, high) for literals, escapes and classes with an optional {m,n}."""
    atoms, i = [], 0
    while i < len(regex):
        if regex[i] == "[":
            j = i + 1
            while regex[j] != "]" or j == i + 1:
                j += 2 if regex[j] == "\\" else 1
            atom, i = ("class", regex[i: j + 1]), j + 1
        elif regex[i] == "\\":
            atom, i = ("lit", {"n": "\n"}.get(regex[i + 1], regex[i + 1])), i + 2
        else:
            assert regex[i] not in "()|?*+{", f"unexpected regex syntax at {i}: {regex[i:i + 20]!r}"
            atom, i = ("lit", regex[i]), i + 1
        low = high = 1
        bounds = re.match(r"\{(\d+),(\d+)\}", regex[i:])
        if bounds:
            low, high, i = int(bounds[1]), int(bounds[2]), i + bounds.end()
        atoms.append((*atom, low, high))
    return atoms


def class_chars(char_class: str) -> list[str]:
    if char_class not in _CLASS_CHARS:
        _CLASS_CHARS[char_class] = [c for c in CHAR_POOL if re.fullmatch(char_class, c)]
        assert _CLASS_CHARS[char_class], char_class
    return _CLASS_CHARS[char_class]


def sample_from_regex(regex: str, rng: random.Random, *, longest: bool = False) -> str:
    out = []
    for kind, payload, low, high in regex_atoms(regex):
        if kind == "lit":
            out.append(payload)
            continue
        count = high if longest else rng.choice([low, high, rng.randint(low, min(high, low + 12)), rng.randint(low, high)])
        chars = class_chars(payload)
        if longest:
            out.append("x" * count if "x" in chars else chars[0] * count)
            continue
        filled: list[str] = []
        while len(filled) < count:
            chunk = rng.choice(ADVERSARIAL) if rng.random() < 0.25 else rng.choice(chars)
            if all(c in chars for c in chunk):
                filled.extend(chunk[: count - len(filled)])
        out.append("".join(filled))
    return "".join(out)


def clean(item: str) -> str:
    return " ".join(item.split())


def list_items_after(text: str, header: str) -> list[str]:
    section = text.split(header, 1)[1] if header else text
    return [clean(line.split(". ", 1)[1]) for line in section.split("\n") if line]


def distinct(items):
    seen, kept = set(), []
    for item in items:
        key = " ".join(re.sub(r"[\W_]+", " ", item.casefold()).split()) or item.casefold()
        if key not in seen:
            seen.add(key)
            kept.append(item)
    return kept


def check_categories(text: str, k: int = 3) -> None:
    expected = distinct(list_items_after(text, "\nREVISED_CATEGORIES:\n"))
    if len(expected) < k:  # the one documented gap: a repeated category
        with pytest.raises(ParseError, match="distinct"):
            parse_categories(text, k)
        return
    assert parse_categories(text, k) == expected[:k]


def check_prompts(text: str, n: int, revised: bool) -> None:
    items = list_items_after(text, "\nREVISED_PROMPTS:\n" if revised else "")
    assert all(len(item.split()) >= 3 for item in items)
    assert parse_prompt_list(text, n, revised) == distinct(items)[:n]


def check_answer(parse, header: str, text: str) -> None:
    result = parse(text)
    body = text.split(header, 1)[1]
    assert result and result[-1] == text[-1] and result in body
    if "response" not in body.casefold():
        assert result == body.strip()


CASES = {
    "categories": (categories_constraint(3), check_categories),
    "in_scope": (prompt_list_constraint(4, revised=False), lambda t: check_prompts(t, 4, False)),
    "near_scope": (prompt_list_constraint(3, revised=True), lambda t: check_prompts(t, 3, True)),
    "revised": (revised_constraint(120), lambda t: check_answer(parse_revised, "\nIMPROVED_RESPONSE: ", t)),
    "cot": (cot_constraint(120), lambda t: check_answer(parse_cot, "\nRESPONSE: ", t)),
    "judge": (judge_constraint(), lambda t: (parse_judge(t) == int(t[-1])) or pytest.fail(t)),
}
FULL_SIZE = [categories_constraint(30), prompt_list_constraint(32, True), prompt_list_constraint(32, False),
             revised_constraint(4000), cot_constraint(4000), judge_constraint()]


@pytest.mark.parametrize("name", list(CASES))
def test_constraint_samples_fullmatch_and_parse(name):
    constraint, check = CASES[name]
    assert isinstance(constraint, Constraint)
    compiled = re.compile(constraint.regex)
    rng = random.Random(name)
    for _ in range(300):
        text = sample_from_regex(constraint.regex, rng)
        assert compiled.fullmatch(text), repr(text)
        check(text)


@pytest.mark.parametrize("name", list(CASES))
def test_constraint_hypothesis_samples_parse(name):
    constraint, check = CASES[name]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(text=st.from_regex(constraint.regex, fullmatch=True))
    def run(text):
        check(text)

    run()


@pytest.mark.parametrize("constraint", [*[c for c, _ in CASES.values()], *FULL_SIZE])
def test_max_tokens_covers_the_longest_reply(constraint):
    longest = sample_from_regex(constraint.regex, random.Random(0), longest=True)
    assert re.fullmatch(constraint.regex, longest)
    assert len(longest) < constraint.max_tokens <= len(longest) * 1.2 + 32
    assert constraint.request_fields() == {"max_tokens": constraint.max_tokens,
                                           "structured_outputs": {"regex": constraint.regex}}


def test_realistic_replies_fullmatch():
    categories = ("THOUGHTS: Emails to Jared are one kind of workplace writing.\nCATEGORIES:\n1. Work emails\n"
                  "2. Office chat\n3. Reports\nREVISED_CATEGORIES:\n1. Emails to managers and colleagues\n"
                  "2. Workplace instant messages\n3. Business reports and summaries")
    assert re.fullmatch(categories_constraint(3).regex, categories)
    in_scope = ("1. Write an email to Jared asking to move our 1:1 to Thursday at 3 pm.\n"
                "2. Tell Jared by email that the Lisbon client signed the contract, café meeting included.")
    assert re.fullmatch(prompt_list_constraint(2, False).regex, in_scope)
    assert parse_prompt_list(in_scope, 2, False)[1].endswith("café meeting included.")
    assert re.fullmatch(revised_constraint(200).regex,
                        "EXPLANATION: Cut the filler.\nIMPROVED_RESPONSE: Hi Jared,\n\nThe report is done.\n\nBest, Sam 😀")
    assert re.fullmatch(cot_constraint(200).regex, "EXPLANATION: It applies.\nRESPONSE: Hi Jared, done. Bon appétit!")
    assert re.fullmatch(judge_constraint().regex, "EXPLANATION: Response 2 is shorter.\nBETTER_RESPONSE: 5")
    # and what the regexes must refuse
    assert not re.fullmatch(judge_constraint().regex, "EXPLANATION: x\nBETTER_RESPONSE: 6")
    assert not re.fullmatch(revised_constraint(200).regex, "EXPLANATION: x\nIMPROVED_RESPONSE: ends in space ")
    assert not re.fullmatch(prompt_list_constraint(1, False).regex, "1. Twowords only")
    assert not re.fullmatch(prompt_list_constraint(1, False).regex, "1. **Bold** is not allowed here")
    assert not re.fullmatch(categories_constraint(1).regex, "THOUGHTS: x\nCATEGORIES:\n1. 9lives\nREVISED_CATEGORIES:\n1. ok")


def test_final_character_is_never_whitespace_or_header_markup():
    final_class = re.search(r"\[!-\)[^\]]*\]$", revised_constraint(10).regex).group(0)
    for code in range(0x110000):
        ch = chr(code)
        if ch.isspace() or ch in "*_:":
            assert not re.fullmatch(final_class, ch), hex(code)


def test_constraint_arguments_are_checked():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            categories_constraint(bad)
    with pytest.raises(ValueError):
        revised_constraint(0)
    with pytest.raises(ValueError):
        prompt_list_constraint(3, True, max_item_chars=40)
    assert re.fullmatch(revised_constraint(1).regex, "EXPLANATION: x\nIMPROVED_RESPONSE: y")


# ---------------------------------------------------------------------------------------------
# xgrammar (vLLM's structured-output backend)
# ---------------------------------------------------------------------------------------------
def test_xgrammar_compiles_and_accepts_the_same_replies():
    xgr = pytest.importorskip("xgrammar")
    if not all(hasattr(xgr, name) for name in ("Grammar", "GrammarCompiler", "GrammarMatcher", "TokenizerInfo")):
        pytest.skip("this xgrammar has no Grammar.from_regex / GrammarMatcher API")
    for constraint in FULL_SIZE:
        xgr.Grammar.from_regex(constraint.regex)  # raises on syntax xgrammar does not support
    def complete(matcher) -> bool:  # is_completed is newer; is_terminated means the same here
        return (matcher.is_completed if hasattr(matcher, "is_completed") else matcher.is_terminated)()

    # An empty vocabulary is enough to match strings (no tokens involved).
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo([]), cache_enabled=False)
    for name, (constraint, _) in CASES.items():
        matcher = xgr.GrammarMatcher(compiler.compile_grammar(xgr.Grammar.from_regex(constraint.regex)),
                                     terminate_without_stop_token=True)
        rng = random.Random(name)
        for _ in range(25):
            text = sample_from_regex(constraint.regex, rng)
            matcher.reset()
            assert matcher.accept_string(text) and complete(matcher), (name, text)
        matcher.reset()
        assert not (matcher.accept_string("nonsense") and complete(matcher))


def _cached_tokenizer_dir() -> Path | None:
    cache = Path(os.environ.get("VERLKIT_CACHE", Path.home() / ".cache" / "verlkit")) / "models"
    found = sorted(cache.glob("*/tokenizer.json")) if cache.is_dir() else []
    return found[0].parent if found else None


def test_random_model_under_xgrammar_finishes_within_max_tokens():
    xgr = pytest.importorskip("xgrammar")
    np = pytest.importorskip("numpy")
    tokenizer_dir = _cached_tokenizer_dir()
    if tokenizer_dir is None:
        pytest.skip("no tokenizer in the local model cache")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer)
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    rng = random.Random(0)
    parsers = {"categories": lambda t: parse_categories(t, 3), "in_scope": lambda t: parse_prompt_list(t, 4, False),
               "near_scope": lambda t: parse_prompt_list(t, 3, True), "revised": parse_revised, "cot": parse_cot,
               "judge": parse_judge}
    for name, (constraint, _) in CASES.items():
        matcher = xgr.GrammarMatcher(compiler.compile_grammar(xgr.Grammar.from_regex(constraint.regex)))
        bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)
        tokens = []
        while not matcher.is_terminated():
            assert len(tokens) < constraint.max_tokens, f"{name}: still going after max_tokens"
            matcher.fill_next_token_bitmask(bitmask)
            bits = np.unpackbits(bitmask[0].numpy().view(np.uint8), bitorder="little")[: info.vocab_size]
            allowed = np.flatnonzero(bits)
            token = int(allowed[rng.randrange(len(allowed))])  # a uniformly random model
            assert matcher.accept_token(token)
            tokens.append(token)
        text = tokenizer.decode([t for t in tokens if t not in info.stop_token_ids])
        parsers[name](text)  # raises ParseError if the reply were unusable
