"""C3PO's message builders (verlkit.c3po.prompts): one user turn each, the feedback, counts and
the reply format stated; re-asks restate the problem and the format."""

from __future__ import annotations

import pytest

from verlkit.c3po.feedback import Feedback
from verlkit.c3po.prompts import (
    FORMAT_HEADING,
    baseline_messages,
    categories_messages,
    cot_messages,
    in_context_messages,
    in_scope_prompts_messages,
    judge_messages,
    near_scope_prompts_messages,
    reask_messages,
    revise_messages,
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
