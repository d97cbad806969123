"""Our prompts for model-based answer checking, as plain functions (written for this project).

The wording lives in the built-in template files ``verlkit/templates/builtin/{rubric,tinyv}.yaml``
(what the ``tinyv`` reward sends by default; ``template_file=`` replaces them).

``rubric``: the Rubric Reward Model grades a full solution against a problem-specific rubric and
ends with a total out of 10. There is no ground-truth slot: the rubric carries the reference answer.
``tinyv``: a small binary verifier decides whether an answer that a rule-based checker rejected is
nevertheless equivalent to the reference answer (rescuing false negatives).
"""

from __future__ import annotations

from verlkit.templates import builtin_template


def rubric_prompt(question: str, criteria: str, answer: str) -> str:
    return builtin_template("rubric").render(question=question.strip(), criteria=criteria.strip(),
                                             response=answer.strip())[0]["content"]


def tinyv_prompt(question: str, ground_truth: str, answer: str) -> str:
    return builtin_template("tinyv").render(question=question.strip(), reference_answer=ground_truth.strip(),
                                            extracted_answer=answer.strip())[0]["content"]
