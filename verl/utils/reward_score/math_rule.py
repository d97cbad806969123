"""``math_rule``: the rule-based math grader, math-verify on the solution's final answer, bounded in time.

r = 1 when math-verify finds the solution's answer (the last ``\\boxed{}``, else a LaTeX/plain
expression) equal to the reference, else 0 (``verlkit.clients.rule_check``: the check runs in a worker
process killed at ``timeout_s``). It is the registry's fallback for sources no spec routes when
``routing.fallback=rule`` (see ``verl.utils.reward_score.routing``), as the original RRM/TinyV code fell
back to its rule grader, so math validation sets report pass@1 (``acc``) per source.

A check that timed out or crashed is not a verdict: it is counted (``rule_failed = 1``) and
``on_rule_failure`` decides: ``wrong`` (default) scores it 0 like a wrong answer, ``error`` flags the
row as a reward failure (``reward_error = 1``, score 0).

Options: ``reward_kwargs.math_rule.{timeout_s, on_rule_failure}``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from verl.utils.reward_score.options import RewardOptions, parse_options
from verlkit.clients import rule_check


class MathRuleOptions(RewardOptions):
    reward_name: ClassVar[str] = "math_rule"
    timeout_s: float = Field(rule_check.DEFAULT_TIMEOUT_S, gt=0)
    on_rule_failure: Literal["wrong", "error"] = "wrong"


def rule_failure_result() -> dict[str, float]:
    """A row whose rule check failed under ``on_rule_failure=error`` (shared by every rule-checked reward)."""
    return {"score": 0.0, "acc": 0.0, "reward_error": 1.0, "rule_failed": 1.0}


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, **options) -> dict[str, float]:
    opts = parse_options(MathRuleOptions, options)
    rule = await rule_check.check_async(str(solution_str), str(ground_truth), timeout_s=opts.timeout_s)
    if rule.failed and opts.on_rule_failure == "error":
        return rule_failure_result()
    return {"score": float(rule.correct), "acc": float(rule.correct), "rule_failed": float(rule.failed)}
