"""C3PO's reply parsers (verlkit.c3po.parsers): lenient where the meaning is clear, a ParseError with
a short reason otherwise, and never anything but a ParseError whatever the text."""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verlkit.c3po.parsers import (
    ParseError,
    check_count,
    parse_categories,
    parse_cot,
    parse_judge,
    parse_numbered_list,
    parse_prompt_list,
    parse_revised,
)


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


@pytest.mark.parametrize("items,expected", [
    # case, punctuation and underscores do not make a category different
    (["Home cooking", "home-cooking!", "HOME COOKING", "Baking", "Grocery_shopping", "grocery shopping"],
     ["Home cooking", "Baking", "Grocery_shopping"]),
    # but accents, and words split differently, do
    (["Café life", "Cafe life", "ab c", "a bc"], ["Café life", "Cafe life", "ab c"]),
    (["Travel.", "Travel", "travel?!", "Food", "Sport"], ["Travel.", "Food", "Sport"]),
])
def test_parse_categories_keeps_the_first_of_each_repeat(items, expected):
    text = "REVISED_CATEGORIES:\n" + "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
    assert parse_categories(text, 3) == expected


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


def test_parse_prompt_list_drops_repeats_written_differently():
    text = ("1. Email my boss about the budget\n2. email my boss about the budget!\n"
            "3. E-mail my boss about the budget\n4. Email   my boss, about the budget\n"
            "5. Email my boss about the café\n6. Email my boss about the cafe")
    assert parse_prompt_list(text, 10, revised=False) == [
        "Email my boss about the budget", "E-mail my boss about the budget",
        "Email my boss about the café", "Email my boss about the cafe",
    ]


def test_counts_must_be_positive_integers():
    assert check_count(3, "k") == 3
    for bad in (0, -2, 1.5, True, "3", None):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            check_count(bad, "k")
    with pytest.raises(ValueError, match="n must be"):
        parse_prompt_list("1. one two three", 0, revised=False)


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
    # Runs of spaces next to optional markup once made the header patterns backtrack for minutes; the
    # generous bound catches that regression (minutes), not a slow machine (milliseconds here).
    start = time.monotonic()
    for parse in PARSERS:
        try:
            parse(text)
        except ParseError:
            pass
    assert time.monotonic() - start < 60.0
