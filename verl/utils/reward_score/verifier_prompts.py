"""Prompt templates for model-based answer checking (written for this project).

``rubric``: the Rubric Reward Model grades a full solution against a problem-specific rubric and
ends with a total out of 10. There is no ground-truth slot: the rubric carries the reference answer.
``tinyv``: a small binary verifier decides whether an answer that a rule-based checker rejected is
nevertheless equivalent to the reference answer (rescuing false negatives).
"""

from __future__ import annotations

RUBRIC_TEMPLATE = """You are a teacher grading a student's written solution to a math problem. The solution is worth 10 points in total.

Read the problem, the scoring criteria and the student's solution below. Award points strictly according to the criteria: credit each step the criteria reward only if the solution actually justifies it, and do not give credit for a correct final answer reached by unjustified or wrong reasoning.

Question:
{question}

Scoring Criteria:
{criteria}

Student's Answer:
{answer}

Explain your grading briefly, criterion by criterion. Then finish with one line of the form
Total Score: <points>/10"""

TINYV_TEMPLATE = """Your task is to catch false negatives of an automatic answer checker. The checker compares a model's final answer with the reference answer and sometimes rejects answers that are actually correct, because they are written differently (another but equivalent form, different units or notation, extra words, rounding, a different order of a set, and similar). Decide whether the model's answer is mathematically equivalent to the reference answer for this question. Do not solve the problem again, and do not accept an answer that is actually different.

<question>
{question}
</question>

<ground_truth_answer>
{ground_truth}
</ground_truth_answer>

<model_answer>
{answer}
</model_answer>

Reply with a single word: True if the model's answer is correct, False otherwise."""


def rubric_prompt(question: str, criteria: str, answer: str) -> str:
    return RUBRIC_TEMPLATE.format(question=question.strip(), criteria=criteria.strip(), answer=answer.strip())


def tinyv_prompt(question: str, ground_truth: str, answer: str) -> str:
    return TINYV_TEMPLATE.format(question=question.strip(), ground_truth=ground_truth.strip(), answer=answer.strip())
