"""Verdict presets (verl.utils.reward_score.verdicts): parsing with positions, the invalid class,
score scales, and probability-weighted verdicts from hand-written token distributions."""

from __future__ import annotations

import pytest

from verl.utils.reward_score.verdicts import VerdictPreset
from verlkit.clients.structured import GeneratedToken


def tok(text: str, top: dict[str, float] | None = None) -> GeneratedToken:
    return GeneratedToken(text, text.encode(), top if top is not None else {text: 1.0})


@pytest.mark.parametrize("reply, value, start", [
    ("True", 1.0, 0),
    ("  **False**.", 0.0, 4),
    ("It is fine.\nVerdict: True", 1.0, 21),
    ("<think>True?</think>\nFalse", 0.0, 21),
])
def test_binary_positions(reply, value, start):
    verdict = VerdictPreset("binary").parse(reply)
    assert (verdict.value, verdict.start) == (value, start)
    assert reply[verdict.start:verdict.start + 4].lower() in ("true", "fals")


def test_binary_invalid_class():
    preset = VerdictPreset("binary", invalid="Invalid")
    assert preset.parse("Invalid").invalid and preset.parse("Verdict: invalid").invalid
    assert preset.parse("True").value == 1.0 and not preset.parse("True").invalid
    assert VerdictPreset("binary").parse("Invalid").value is None  # without the class: no verdict


@pytest.mark.parametrize("reply, score_max, value", [
    ("Total Score: 4", 5, 0.8),
    ("Total Score: 4/5", 10, 0.8),
    ("Total Score: 8/10", 5, 0.8),
    ("Total Score: 7", 10, 0.7),
    ("Total Score: 12", 10, 1.0),
])
def test_total_score_scales(reply, score_max, value):
    verdict = VerdictPreset("total_score", score_max=score_max).parse(reply)
    assert verdict.value == pytest.approx(value)
    assert reply[verdict.start].isdigit()


def test_total_score_invalid_and_think():
    preset = VerdictPreset("total_score", invalid="N/A")
    assert preset.parse("cannot grade\nTotal Score: N/A").invalid
    assert preset.parse("Total Score: 7/10").value == pytest.approx(0.7)
    think = VerdictPreset("total_score", is_think_model=True)
    assert think.parse("Total Score: 9/10").value is None
    assert think.parse("<think>Total Score: 2/10?</think>Total Score: 9/10").value == pytest.approx(0.9)


@pytest.mark.parametrize("reply, letter", [("B", "B"), ("(C)", "C"), ("**A**", "A"), ("Reasoning.\nAnswer: B", "B"),
                                           ("The answer is (C).", "C"), ("E", None), ("Answer: maybe", None)])
def test_option_letters(reply, letter):
    preset = VerdictPreset("option_letter", option_scores=(("A", 1.0), ("B", 0.0), ("C", 0.5)))
    verdict = preset.parse(reply)
    expected = {"A": 1.0, "B": 0.0, "C": 0.5}.get(letter)
    assert verdict.value == expected
    if letter:
        assert reply[verdict.start] == letter


def test_reward_value():
    verdict = VerdictPreset("reward_value").parse("reward:-1.25 and reward: 3.5")
    assert verdict.value == 3.5 and verdict.start == 25


# ------------------------------------------------------------------ probabilities
def test_p_true_from_the_verdict_token():
    reply = "True"
    tokens = [tok("True", {"True": 0.6, "False": 0.3, "T": 0.05, "The": 0.05})]
    preset = VerdictPreset("binary")
    # "T" is a prefix of True only; "The" is not a verdict word
    assert preset.probability(reply, preset.parse(reply), tokens) == pytest.approx(0.65 / 0.95)


def test_p_true_reads_the_token_after_think_not_the_reasoning():
    reply = "<think>True or False?</think>\nFalse"
    tokens = [tok("<think>"), tok("True", {"True": 0.99, "False": 0.01}), tok(" or"),
              tok(" False", {" False": 0.9, " True": 0.1}), tok("?"), tok("</think>"), tok("\n"),
              tok("False", {"False": 0.7, "True": 0.2, "F": 0.1})]
    preset = VerdictPreset("binary", is_think_model=True)
    assert preset.probability(reply, preset.parse(reply), tokens) == pytest.approx(0.2)


def test_p_true_when_the_token_carries_a_leading_space():
    reply = "ok\nVerdict: True"
    tokens = [tok("ok"), tok("\n"), tok("Verdict"), tok(":"), tok(" True", {" True": 0.8, " False": 0.2})]
    preset = VerdictPreset("binary")
    assert preset.probability(reply, preset.parse(reply), tokens) == pytest.approx(0.8)


def test_expected_score_splits_a_digit_that_starts_ten():
    reply = "Total Score: 10/10"
    tokens = [tok("Total"), tok(" Score"), tok(":"), tok(" "), tok("1", {"1": 0.5, "7": 0.3, "8": 0.2}),
              tok("0", {"0": 0.6, "/": 0.4}), tok("/"), tok("1"), tok("0")]
    preset = VerdictPreset("total_score")
    # "1": 0.5 * 0.6 -> 10 points, 0.5 * 0.4 -> 1 point; "7" -> 7; "8" -> 8 (all out of 10)
    expected = 0.3 * 1.0 + 0.2 * 0.1 + 0.3 * 0.7 + 0.2 * 0.8
    assert preset.probability(reply, preset.parse(reply), tokens) == pytest.approx(expected)


def test_expected_score_over_single_token_numbers_on_another_scale():
    reply = "Total Score: 4/5"
    tokens = [tok("Total Score: "), tok("4", {"4": 0.5, "5": 0.25, "2": 0.25}), tok("/5")]
    preset = VerdictPreset("total_score", score_max=5)
    assert preset.probability(reply, preset.parse(reply), tokens) == pytest.approx(0.5 * 0.8 + 0.25 * 1.0 + 0.25 * 0.4)


def test_expected_option_score():
    reply = "Answer: A"
    tokens = [tok("Answer: "), tok("A", {"A": 0.5, "B": 0.3, "C": 0.2})]
    preset = VerdictPreset("option_letter", option_scores=(("A", 1.0), ("B", 0.0), ("C", 0.5)))
    assert preset.probability(reply, preset.parse(reply), tokens) == pytest.approx(0.6)


def test_no_probability_when_the_reply_is_not_in_the_tokens_or_no_verdict_mass():
    preset = VerdictPreset("binary")
    verdict = preset.parse("True")
    assert preset.probability("True", verdict, [tok("Fal"), tok("se")]) is None
    assert preset.probability("True", verdict, [tok("True", {"Yes": 0.9, "No": 0.1})]) is None
    assert preset.probability("True", verdict, None) is None
