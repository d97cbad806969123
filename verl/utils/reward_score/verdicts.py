"""Verdict presets: how a served judge's reply becomes a value, which structured-output constraint
admits only parseable replies, and the value expected under the verdict token's probabilities.

Presets (option ``verdict``), each with an optional "invalid" class (option ``invalid``: a word or
letter meaning "cannot judge"):

- ``binary``: True/False, parsed strictly (:func:`parse_verdict`); value 1 or 0.
- ``total_score``: ``Total Score: <n>/<score_max>`` (``grade.find_total_score``); value n / score_max
  (a written denominator rescales, a bare number is read out of ``score_max``).
- ``option_letter``: one capital letter, bare (``B``, ``(B)``, ``**B**``) or after a marker
  (``Answer: B``); value ``option_scores[letter]``.
- ``reward_value``: ``reward:<number>`` (hosted reward judges); value the number.

For think-style judges (``is_think_model``) only the text after the last ``</think>`` is read; a
reply without it holds no verdict. A ``</think>`` in any reply is honoured the same way.

Constraints (:meth:`VerdictPreset.constraint`), with R = ``reasoning_chars``: R = 0 and no thinking
gives the bare verdict (a choice list, or the score line alone); otherwise up to R characters of
free reasoning (inside ``<think>...</think>`` for think-style judges) and then one final line
(``Verdict: True``, ``Total Score: 7/10``, ``Answer: B``). Every reply a constraint admits is
accepted by the preset's parser (tests/unit/test_verdict_constraints_on_cpu.py).

Probabilities (:meth:`VerdictPreset.probability`, ``verdict_mode=prob``): the verdict token is the
generated token that holds the first character of the parsed verdict; its top alternatives are
classified (a candidate's text stripped of surrounding non-alphanumerics; for words, a non-empty
prefix of exactly one verdict word counts, so ``T``/``Tr``/``True`` all count for True). binary:
P(True) = mass(True) / (mass(True) + mass(False)); option_letter: the expected score over letters;
total_score: the expected score over number tokens, where the generated token's mass is split
between the number it starts (e.g. ``1`` of ``10``: the probability of the continuation that was
generated) and the number that ends there. Under a constraint the server's log-probabilities are
those of the constrained distribution (vLLM applies the grammar mask before computing them), so the
verdict position holds only verdict tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal, Sequence, get_args

from verlkit.clients.structured import GeneratedToken, StructuredOutput
from verl.utils.reward_score.grade import find_total_score
from verl.utils.reward_score.verdict_parsers import (  # noqa: F401  (parse_verdict: re-exported)
    after_think,
    find_letter,
    find_reward_value,
    find_word,
    parse_verdict,
)

PresetName = Literal["binary", "total_score", "option_letter", "reward_value"]
PRESETS = get_args(PresetName)
VERDICT_WORDS = ("True", "False")
BINARY_LINE = "Verdict: "
SCORE_LINE = "Total Score: "
LETTER_LINE = "Answer: "
REWARD_LINE = "reward:"


@dataclass(frozen=True)
class Verdict:
    """What a reply says: ``value`` (None = no verdict), ``invalid`` (it chose the invalid class),
    and ``start``: the index in the reply of the verdict's first character."""

    value: float | None
    invalid: bool = False
    start: int | None = None

    @property
    def parsed(self) -> bool:
        return self.value is not None or self.invalid


NO_VERDICT = Verdict(None)


# ---------------------------------------------------------------------------------------------
# The preset
# ---------------------------------------------------------------------------------------------
_ANY = r"[\s\S]"
_SLACK_TOKENS = 16


def _literal(text: str) -> str:
    # Not re.escape: it escapes spaces and letters the server's regex engine need not accept escaped.
    return "".join("\\n" if ch == "\n" else "\\" + ch if ch in "\\.^$|?*+()[]{}" else ch for ch in text)


def _alternatives(items: Sequence[str]) -> str:
    return "(?:" + "|".join(_literal(i) for i in items) + ")"


def _budget(max_chars: int) -> int:
    """max_tokens for a reply of at most ``max_chars`` characters (one token per character at worst,
    plus slack for characters that take several byte tokens)."""
    return max_chars + max_chars // 10 + _SLACK_TOKENS


def _strip_candidate(text: str) -> str:
    return re.sub(r"^[^0-9A-Za-z]+|[^0-9A-Za-z]+$", "", text)


@dataclass(frozen=True)
class VerdictPreset:
    """A parser preset and its settings (see the module docstring)."""

    kind: PresetName = "binary"
    score_max: int = 10
    option_scores: tuple[tuple[str, float], ...] = ()
    invalid: str | None = None
    is_think_model: bool = False
    _scores: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in PRESETS:
            raise ValueError(f"verdict must be one of {', '.join(PRESETS)}, got {self.kind!r}")
        if self.score_max < 1:
            raise ValueError(f"score_max must be >= 1, got {self.score_max}")
        if self.kind == "option_letter":
            if not self.option_scores:
                raise ValueError("verdict=option_letter needs option_scores (e.g. {A: 1.0, B: 0.0})")
            if not all(re.fullmatch(r"[A-Z]", letter) for letter, _ in self.option_scores):
                raise ValueError(f"option_scores: keys must be capital letters, got {[k for k, _ in self.option_scores]}")
        if self.invalid is not None:
            self._check_invalid()
        self._scores.update(dict(self.option_scores))

    def _check_invalid(self) -> None:
        invalid = self.invalid
        if self.kind == "reward_value":
            raise ValueError("verdict=reward_value has no invalid class")
        if self.kind == "option_letter" and not re.fullmatch(r"[A-Z]", invalid or ""):
            raise ValueError(f"invalid: a capital letter for verdict=option_letter, got {invalid!r}")
        if self.kind == "option_letter" and invalid in self._letters_of(self.option_scores):
            raise ValueError(f"invalid: {invalid!r} is also a scored option letter")
        if self.kind == "binary" and (not re.fullmatch(r"[A-Za-z][A-Za-z_ -]*[A-Za-z]", invalid or "")
                                      or invalid.lower() in ("true", "false")):
            raise ValueError(f"invalid: a word other than True/False for verdict=binary, got {invalid!r}")
        if self.kind == "total_score" and not re.fullmatch(r"[A-Za-z][A-Za-z/ -]*[A-Za-z]", invalid or ""):
            raise ValueError(f"invalid: a word such as N/A for verdict=total_score, got {invalid!r}")

    @staticmethod
    def _letters_of(option_scores) -> str:
        return "".join(letter for letter, _ in option_scores)

    # ------------------------------------------------------------------ parsing
    def parse(self, reply: str | None) -> Verdict:
        """The reply's verdict (``NO_VERDICT`` when it holds none)."""
        if self.kind == "binary":
            words = ("true", "false") + ((self.invalid.lower(),) if self.invalid else ())
            found = find_word(reply, words, self.is_think_model)
            if found is None:
                return NO_VERDICT
            if found[0] not in ("true", "false"):
                return Verdict(None, invalid=True, start=found[1])
            return Verdict(float(found[0] == "true"), start=found[1])
        if self.kind == "option_letter":
            letters = self._letters_of(self.option_scores) + (self.invalid or "")
            found = find_letter(reply, letters, self.is_think_model)
            if found is None:
                return NO_VERDICT
            if found[0] == self.invalid:
                return Verdict(None, invalid=True, start=found[1])
            return Verdict(self._scores[found[0]], start=found[1])
        split = after_think(reply, self.is_think_model)
        if split is None:
            return NO_VERDICT
        text, offset = split
        if self.kind == "reward_value":
            found = find_reward_value(text)
            return NO_VERDICT if found is None else Verdict(found[0], start=offset + found[1])
        if self.invalid and self._invalid_score(text):
            return Verdict(None, invalid=True, start=None)
        score = find_total_score(text, out_of=float(self.score_max))
        if score is None:
            return NO_VERDICT
        return Verdict(score[0] / 10.0, start=offset + score[1])

    def _invalid_score(self, text: str) -> bool:
        """The last ``Total Score`` marker is followed by the invalid word (``Total Score: N/A``)."""
        markers = list(re.finditer(r"total\s+score", text, re.IGNORECASE))
        if not markers:
            return False
        tail = re.sub(r"^[\s*:=|\[\]]*", "", text[markers[-1].end():])
        return tail[: len(self.invalid)].lower() == self.invalid.lower() and not re.match(r"\w", tail[len(self.invalid):])

    # ------------------------------------------------------------------ constraints
    def verdict_texts(self) -> list[str]:
        """Every final verdict the constraint lets the model write (without reasoning)."""
        if self.kind == "binary":
            return [*VERDICT_WORDS, *([self.invalid] if self.invalid else [])]
        if self.kind == "option_letter":
            return [letter for letter, _ in self.option_scores] + ([self.invalid] if self.invalid else [])
        raise ValueError(f"verdict={self.kind} has no finite list of verdicts")

    def _final_line(self) -> tuple[str, int]:
        """(regex, longest length in characters) of the final verdict line."""
        if self.kind == "binary":
            words = self.verdict_texts()
            return _literal(BINARY_LINE) + _alternatives(words), len(BINARY_LINE) + max(map(len, words))
        if self.kind == "option_letter":
            letters = self.verdict_texts()
            return _literal(LETTER_LINE) + _alternatives(letters), len(LETTER_LINE) + 1
        if self.kind == "reward_value":
            return _literal(REWARD_LINE) + r"-?(?:0|[1-9][0-9]{0,2})(?:\.[0-9]{1,3})?", len(REWARD_LINE) + 8
        scores = [str(n) for n in range(self.score_max, -1, -1)]
        denominator = f"/{self.score_max}"
        options = [s + denominator for s in scores] + ([self.invalid] if self.invalid else [])
        return _literal(SCORE_LINE) + _alternatives(options), len(SCORE_LINE) + max(map(len, options))

    def constraint(self, reasoning_chars: int = 0) -> StructuredOutput:
        """The structured-output constraint: the bare verdict (``reasoning_chars`` 0, no thinking),
        else up to ``reasoning_chars`` characters of reasoning (in ``<think>...</think>`` for
        think-style judges) and the final verdict line."""
        if reasoning_chars < 0:
            raise ValueError(f"reasoning_chars must be >= 0, got {reasoning_chars}")
        if self.is_think_model:
            # The verdict right after </think>, bare: what think-style verifiers are trained to write.
            if self.kind in ("binary", "option_letter"):
                final, final_chars = _alternatives(self.verdict_texts()), max(map(len, self.verdict_texts()))
            else:
                final, final_chars = self._final_line()
            prefix = f"(?:<think>)?{_ANY}{{0,{reasoning_chars}}}</think>\\n"
            return StructuredOutput(regex=prefix + final, max_tokens=_budget(len("<think></think>\n") + reasoning_chars
                                                                             + final_chars))
        if reasoning_chars == 0:
            if self.kind in ("binary", "option_letter"):
                texts = self.verdict_texts()
                return StructuredOutput(choice=tuple(texts), max_tokens=_budget(max(map(len, texts))))
            final, final_chars = self._final_line()
            return StructuredOutput(regex=final, max_tokens=_budget(final_chars))
        final, final_chars = self._final_line()
        return StructuredOutput(regex=f"{_ANY}{{0,{reasoning_chars}}}\\n" + final,
                                max_tokens=_budget(reasoning_chars + 1 + final_chars))

    # ------------------------------------------------------------------ probabilities
    def probability(self, reply: str, verdict: Verdict, tokens: list[GeneratedToken] | None) -> float | None:
        """The verdict's value expected under the verdict token's top alternatives (binary: P(True)),
        or None when the token cannot be located or no alternative is a verdict."""
        if verdict.start is None or verdict.value is None or not tokens or self.kind == "reward_value":
            return None
        located = locate_token(reply, verdict.start, tokens)
        if located is None:
            return None
        index, covered = located
        top = tokens[index].top
        if self.kind == "binary":
            mass = {"true": 0.0, "false": 0.0}
            for text, p in top.items():
                word = _word_class(text, ("true", "false"))
                if word:
                    mass[word] += p
            total = mass["true"] + mass["false"]
            return mass["true"] / total if total > 0 else None
        if self.kind == "option_letter":
            weighted = total = 0.0
            for text, p in top.items():
                letter = _strip_candidate(text)
                if letter in self._scores:
                    weighted += p * self._scores[letter]
                    total += p
            return weighted / total if total > 0 else None
        return self._expected_score(reply, verdict, tokens, index, covered)

    def _expected_score(self, reply: str, verdict: Verdict, tokens: list[GeneratedToken], index: int,
                        covered: int) -> float | None:
        written = re.match(r"[-+]?\d+(?:[.,]\d+)?", reply[verdict.start:])
        number = float(written.group(0).replace(",", ".")) if written else 0.0
        # fraction of score_max per unit of the written number (a written denominator rescales)
        unit = verdict.value / number if number else 1.0 / self.score_max
        generated = _number_in(tokens[index].text)
        weighted = total = 0.0
        for text, p in tokens[index].top.items():
            value = _number_in(text)
            if value is None:
                continue
            if generated is not None and text == tokens[index].text and written and value != number:
                # the generated token starts a longer number ("1" of "10"): its mass goes to that
                # number with the probability of the continuation that was generated, the rest to
                # the number that ends here
                carry = _continuation(tokens, index, covered, written.group(0))
                weighted += p * (carry * verdict.value + (1 - carry) * _clamp(value * unit))
            else:
                weighted += p * _clamp(value * unit)
            total += p
        return weighted / total if total > 0 else None


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))


def _word_class(text: str, words: tuple[str, ...]) -> str | None:
    stripped = _strip_candidate(text).lower()
    if not stripped:
        return None
    matches = [w for w in words if w.startswith(stripped)]
    return matches[0] if len(matches) == 1 else None


def _number_in(text: str) -> float | None:
    match = re.fullmatch(r"[^0-9A-Za-z]*?(\d+(?:\.\d+)?)[^0-9A-Za-z]*", text)
    return float(match.group(1)) if match else None


def _continuation(tokens: list[GeneratedToken], index: int, covered: int, written: str) -> float:
    """Probability of the generated tokens after ``index`` that complete the written number, of
    which the token at ``index`` already holds ``covered`` bytes."""
    carry, need, i = 1.0, len(written.encode("utf-8")), index + 1
    while covered < need and i < len(tokens):
        carry *= tokens[i].top.get(tokens[i].raw.decode("utf-8", "replace"), 0.0)
        covered += len(tokens[i].raw)
        i += 1
    return carry


def locate_token(reply: str, start: int, tokens: list[GeneratedToken]) -> tuple[int, int] | None:
    """(index of the generated token holding character ``start`` of ``reply``, how many bytes of the
    reply from ``start`` on that token holds), or None when the reply is not a contiguous part of
    the generated tokens' bytes (e.g. a server-side reasoning parser moved text elsewhere)."""
    joined = b"".join(t.raw for t in tokens)
    offset = joined.find(reply.encode("utf-8"))
    if offset < 0:
        return None
    target = offset + len(reply[:start].encode("utf-8"))
    position = 0
    for i, token in enumerate(tokens):
        end = position + len(token.raw)
        if position <= target < end:
            return i, end - target
        position = end
    return None
