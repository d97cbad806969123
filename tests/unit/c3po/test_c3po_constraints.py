"""C3PO's structured-output constraints (verlkit.c3po.constraints) against the reply parsers.

The tests sample replies from each regular expression (a small sampler for the regex subset the
builders emit, with adversarial chunks such as header words; and hypothesis' ``from_regex``) and
check that the matching parser accepts every one of them. xgrammar, when installed, must compile
each regex and accept the same replies; with a tokenizer in the local model cache, a uniformly
random "model" constrained by xgrammar must finish within ``max_tokens``.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verlkit.c3po.constraints import (
    Constraint,
    categories_constraint,
    cot_constraint,
    judge_constraint,
    prompt_list_constraint,
    revised_constraint,
)
from verlkit.c3po.parsers import ParseError, parse_categories, parse_cot, parse_judge, parse_prompt_list, parse_revised


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


def letters_and_digits(item: str) -> str:
    """The item without case, spaces and punctuation: two items the parser treats as the same
    category or prompt always agree here (the converse need not hold: "ab c" and "a bc")."""
    return "".join(ch for ch in item.casefold() if ch.isalnum())


def check_kept_items(result: list[str], items: list[str], limit: int) -> None:
    """``result`` keeps ``items`` in order, drops only repeats, and stops at ``limit``."""
    assert result and len(result) <= limit and result[0] == items[0]
    position = 0
    for kept in result:  # an ordered subsequence of the items
        position = items.index(kept, position) + 1
    assert len({item.casefold() for item in result}) == len(result)
    if len({letters_and_digits(item) for item in items}) == len(items):  # no repeat at all: nothing dropped
        assert result == items[:limit]


def check_categories(text: str, k: int = 3) -> None:
    items = list_items_after(text, "\nREVISED_CATEGORIES:\n")
    try:
        result = parse_categories(text, k)
    except ParseError as e:
        # the one documented gap: a repeated category, so fewer than k distinct ones
        assert "distinct" in str(e)
        assert len({letters_and_digits(item) for item in items}) < len(items), text
        return
    assert len(result) == k
    check_kept_items(result, items, k)


def check_prompts(text: str, n: int, revised: bool) -> None:
    items = list_items_after(text, "\nREVISED_PROMPTS:\n" if revised else "")
    assert all(len(item.split()) >= 3 for item in items)
    check_kept_items(parse_prompt_list(text, n, revised), items, n)


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
