"""Seeded generators of hostile reward inputs for the totality tests: empty, huge, binary, unicode and
adversarial formats (the markers each reward parses, broken, nested, repeated, with absurd numbers),
plus values of the wrong type. Plain ``random.Random`` rather than hypothesis: 10^5 draws per module
must take seconds, and a failure is reproduced by its seed and index (printed by the test)."""

from __future__ import annotations

import math
import random

# Pieces the reward parsers look for; combined and mangled by ``text()``.
MARKERS = (
    "\\boxed{", "\\boxed{}", "}", "{", "####", "#### ", "Total Score", "Total Score:", "/10", " out of ",
    "\\frac{", "the answer is", "answer:", "Final answer:", "with confidence", "confidence", "%",
    "<think>", "</think>", "<answer>", "</answer>", "<analysis>", "</analysis>", "<confidence>",
    "</confidence>", "True", "False", "not True", "**True**", "untrue", "Verdict:", "\n", "$", "(B)", "Option 2",
)  # fmt: skip
NUMBERS = ("0", "1", "-1", "10", "7/10", "11/10", "-3/10", "1e309", "-1e309", "nan", "inf", "-inf", "1e-320",
           "99999999999999999999999", "0.5", "1,000", "3.", ".5", "½", "٣", "١٠", "9^{9^{9^{9}}}", "(10^{10})!",
           "10**10**10", "1/0", "0/0")  # fmt: skip
ODD_CHARS = "\x00\x01\x7f\u200b\u200e\u202e\ufeff\ud800\udfff\U0001f600\u0301\u0660\uff11\u2028\r\t"
WRONG_TYPES = (None, 0, 1.5, math.nan, b"\\boxed{1}", ["\\boxed{1}"], {"text": "1"}, True, object())


def text(rng: random.Random) -> str:
    """One hostile string."""
    kind = rng.random()
    if kind < 0.05:
        return rng.choice(("", " ", "\n\n", "\t"))
    if kind < 0.07:  # huge (kept rare: the whole run must stay in minutes)
        unit = rng.choice(("x", "\\boxed{", "Total Score: 7/10 ", "<answer>", "True ", "{", "9^{", " "))
        return unit * rng.randint(20_000, 60_000)
    if kind < 0.17:  # binary
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400))).decode("latin-1")
    if kind < 0.27:  # unicode, lone surrogates included
        return "".join(rng.choice(ODD_CHARS) if rng.random() < 0.5 else chr(rng.randint(0x20, 0x2FFFF))
                       for _ in range(rng.randint(1, 200)))  # fmt: skip
    # adversarial formats: markers, numbers and junk in random order
    parts = []
    for _ in range(rng.randint(1, 14)):
        roll = rng.random()
        if roll < 0.45:
            parts.append(rng.choice(MARKERS))
        elif roll < 0.8:
            parts.append(rng.choice(NUMBERS))
        elif roll < 0.9:
            parts.append(rng.choice(ODD_CHARS))
        else:
            parts.append(" ".join(rng.choice(("the", "a", "score", "is", "B", "2", ":", "=")) for _ in range(3)))
    return rng.choice(("", " ", "\n")).join(parts)


def value(rng: random.Random, good: tuple = ()) -> object:
    """A hostile value for a field that should hold text: mostly strings, sometimes a well-formed
    value from ``good``, sometimes a value of the wrong type."""
    roll = rng.random()
    if good and roll < 0.3:
        return rng.choice(good)
    if roll < 0.38:
        return rng.choice(WRONG_TYPES)
    return text(rng)


def extra_info(rng: random.Random, fields: dict[str, tuple]) -> object:
    """A hostile ``extra_info``: usually a dict with some of ``fields`` (name -> well-formed values),
    each present, missing or hostile; sometimes not a dict at all."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice((None, {}, "question", ["q"], 3))
    out = {}
    for name, good in fields.items():
        r = rng.random()
        if r < 0.1:
            continue
        out[name] = value(rng, good)
    return out


def options(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.6:
        return [f"option {i}" for i in range(rng.randint(2, 6))]
    if roll < 0.75:
        return [value(rng) for _ in range(rng.randint(0, 6))]
    return rng.choice((None, [], ["only"], "A,B,C", 4, [None, None], ["", ""]))
