"""Structured-output constraints against the parsers they serve.

vLLM enforces a regex constraint on the WHOLE reply (its grammar accepts only complete matches), so
"the server may return this reply" is ``re.fullmatch(regex, reply)`` here, and membership for a
choice list (``StructuredOutput.admits``). For each constraint:

- every reply it admits is accepted by its parser, with a value in range (hypothesis draws replies
  from the regex itself), so a constrained server can only return parseable replies;
- a corpus of replies in the target format, accepted by the parser, is admitted;
- at least one reply the parser rejects is rejected.

The converse of the first point cannot hold and is not claimed: the parsers also accept formats a
constraint excludes on purpose (``**True**.``, ``Final answer: True``).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verl.utils.reward_score.calibration import answer_constraint, parse_final_answer
from verl.utils.reward_score.verdicts import VerdictPreset

HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PRESETS = {
    "binary": VerdictPreset("binary"),
    "binary_invalid": VerdictPreset("binary", invalid="Invalid"),
    "binary_think": VerdictPreset("binary", is_think_model=True),
    "total_score": VerdictPreset("total_score"),
    "total_score_5_na": VerdictPreset("total_score", score_max=5, invalid="N/A"),
    "total_score_think": VerdictPreset("total_score", is_think_model=True),
    "option_letter": VerdictPreset("option_letter", option_scores=(("A", 1.0), ("B", 0.0), ("C", 0.5))),
    "option_letter_invalid": VerdictPreset("option_letter", option_scores=(("A", 1.0), ("B", 0.0)), invalid="D"),
    "reward_value": VerdictPreset("reward_value"),
}
# (preset, reasoning_chars, accepted replies in the target format, a reply the parser rejects)
CASES = [
    ("binary", 0, ["True", "False"], "Maybe"),
    ("binary", 200, ["The forms are equal.\nVerdict: True", "\nVerdict: False",
                     "It says True but 1/2 != 0.25. Answer: True?\nVerdict: False"], "untrue"),
    ("binary_invalid", 0, ["True", "False", "Invalid"], "True or False"),
    ("binary_invalid", 50, ["cannot tell\nVerdict: Invalid", "ok\nVerdict: True"], "not true"),
    ("binary_think", 120, ["<think>1/2 = 0.5</think>\nTrue", "</think>\nFalse", "<think>False? no</think>\nTrue"],
     "<think>True</think>"),
    ("total_score", 0, ["Total Score: 10/10", "Total Score: 0/10", "Total Score: 7/10"], "Total Score: /10"),
    ("total_score", 300, ["Criterion 1 met.\nTotal Score: 8/10", "Total Score: 3/10\nrevised\nTotal Score: 4/10"],
     "no score here"),
    ("total_score_5_na", 60, ["fine\nTotal Score: 5/5", "unreadable\nTotal Score: N/A"], "Total Score: ?"),
    ("total_score_think", 100, ["<think>most criteria met</think>\nTotal Score: 9/10"], "Total Score: 9/10"),
    ("option_letter", 0, ["A", "B", "C"], "E"),
    ("option_letter", 80, ["It matches.\nAnswer: A", "\nAnswer: C"], "Answer: maybe"),
    ("option_letter_invalid", 0, ["A", "B", "D"], "C"),
    ("reward_value", 0, ["reward:1.5", "reward:-3.25", "reward:0"], "reward: high"),
]


def preset_value_ok(preset: VerdictPreset, reply: str) -> bool:
    verdict = preset.parse(reply)
    if verdict.invalid:
        return True
    if verdict.value is None:
        return False
    if preset.kind == "reward_value":
        return True
    return 0.0 <= verdict.value <= 1.0


@pytest.mark.parametrize("name, reasoning, accepted, rejected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_corpus_admitted_and_parsed_and_a_rejected_reply_rejected(name, reasoning, accepted, rejected):
    preset = PRESETS[name]
    constraint = preset.constraint(reasoning)
    for reply in accepted:
        assert preset.parse(reply).parsed, reply
        assert constraint.admits(reply), (reply, constraint.describe())
    assert not preset.parse(rejected).parsed
    assert not constraint.admits(rejected)


@pytest.mark.parametrize("name, reasoning", sorted({(c[0], c[1]) for c in CASES}))
@HYPOTHESIS
@given(data=st.data())
def test_every_admitted_reply_parses(name, reasoning, data):
    preset = PRESETS[name]
    constraint = preset.constraint(reasoning)
    if constraint.choice is not None:
        reply = data.draw(st.sampled_from(constraint.choice))
    else:
        reply = data.draw(st.from_regex(constraint.regex, fullmatch=True))
    assert constraint.admits(reply)
    assert preset_value_ok(preset, reply), (reply, preset.parse(reply))


def test_choice_and_regex_shapes():
    assert PRESETS["binary"].constraint(0).request_fields() == {"structured_outputs": {"choice": ["True", "False"]}}
    regex = PRESETS["total_score"].constraint(0).request_fields()["structured_outputs"]["regex"]
    assert re.fullmatch(regex, "Total Score: 10/10") and not re.fullmatch(regex, "Total Score: 11/10")
    # the reply budget lets the longest admitted reply finish
    assert PRESETS["total_score"].constraint(600).max_tokens >= 600 + len("\nTotal Score: 10/10")


@pytest.mark.parametrize("num_options, reasoning", [(4, 0), (4, 300), (5, 40)])
@HYPOTHESIS
@given(data=st.data())
def test_answer_and_confidence_constraint_admits_only_parseable_replies(num_options, reasoning, data):
    constraint = answer_constraint(num_options, reasoning)
    reply = data.draw(st.from_regex(constraint.regex, fullmatch=True))
    parsed = parse_final_answer(reply, num_options)
    assert parsed is not None, reply
    assert 1 <= parsed.answer <= num_options and 0.0 <= parsed.confidence <= 1.0
    # the sentence at the end is the one read (reasoning may name other answers)
    tail = re.search(r"the answer is (\d+) with confidence (\d+)$", reply)
    assert (parsed.answer, parsed.confidence) == (int(tail.group(1)), int(tail.group(2)) / 100)


def test_answer_constraint_corpus():
    constraint = answer_constraint(4, 300)
    for reply in ["Islet beta cells make insulin.\nthe answer is 2 with confidence 90",
                  "\nthe answer is 4 with confidence 0", "the answer is 1 with confidence 5?\nthe answer is 1 with confidence 100"]:
        assert parse_final_answer(reply, 4) is not None and constraint.admits(reply), reply
    for rejected in ["the answer is 5 with confidence 90", "I am not sure."]:
        assert parse_final_answer(rejected, 4) is None and not constraint.admits(rejected)
    assert answer_constraint(4, 0).admits("the answer is 3 with confidence 75")


def test_bad_preset_settings_are_errors():
    with pytest.raises(ValueError, match="option_letter needs option_scores"):
        VerdictPreset("option_letter")
    with pytest.raises(ValueError, match="a word other than True/False"):
        VerdictPreset("binary", invalid="True")
    with pytest.raises(ValueError, match="is also a scored option letter"):
        VerdictPreset("option_letter", option_scores=(("A", 1.0),), invalid="A")
    with pytest.raises(ValueError, match="reward_value has no invalid class"):
        VerdictPreset("reward_value", invalid="none")
