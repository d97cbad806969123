"""A rule check that times out or crashes is counted (``rule_failed``) and follows the reward's failure
policy instead of silently becoming "wrong". The timeouts are real: math-verify on a degenerate answer
in the real worker pool, killed at the bound (1 s). The verifier-dependent policies of ``tinyv`` are
tested against a scripted verifier in tests/integration/test_tinyv_scripted_verifier.py."""

import math

import pytest

import verl  # noqa: F401  (loads our plugin)
from verl.utils.reward_score import registry

DEGENERATE = "\\boxed{9^{9^{9^{9}}}}"  # math-verify runs for minutes on it
MATH_ROW = {"answer_type": "math"}


def _rlcr(answer, conf="0.5"):
    return f"<think>t</think> <answer>{answer}</answer> <analysis>a</analysis> <confidence>{conf}</confidence>"


def test_math_rule_counts_a_timeout_and_scores_it_wrong_by_default():
    out = registry.compute_score("MATH", DEGENERATE, "1", routing={"fallback": "rule"}, math_rule={"timeout_s": 1})
    assert out["rule_failed"] == 1.0 and out["score"] == 0.0 and out["reward_error"] == 0.0


def test_math_rule_error_policy_flags_the_row():
    out = registry.compute_score("MATH", DEGENERATE, "1", routing={"fallback": "rule"},
                                 math_rule={"timeout_s": 1, "on_rule_failure": "error"})
    assert out["rule_failed"] == 1.0 and out["reward_error"] == 1.0 and out["score"] == 0.0


def test_rlcr_math_check_is_bounded_counted_and_scored_wrong_by_default():
    out = registry.compute_score("x_rlcr", _rlcr(DEGENERATE, "0.5"), "1", MATH_ROW, rlcr={"rule_timeout_s": 1})
    # well formed, wrong at q=0.5: 0.5 + 0 + 0.5 * (1 - 0.25)
    assert out["rule_failed"] == 1.0 and out["acc"] == 0.0 and out["score"] == pytest.approx(0.875)
    assert out["reward_error"] == 0.0 and out["format_ok"] == 1.0


def test_rlcr_error_policy_flags_the_row():
    out = registry.compute_score("x_rlcr", _rlcr(DEGENERATE), "1", MATH_ROW,
                                 rlcr={"rule_timeout_s": 1, "on_rule_failure": "error"})
    assert out["rule_failed"] == 1.0 and out["reward_error"] == 1.0 and out["score"] == 0.0


def test_rlcr_rule_failed_is_zero_for_checked_math_rows_and_nan_otherwise():
    checked = registry.compute_score("x_rlcr", _rlcr("\\frac{1}{2}", "1"), "0.5", MATH_ROW)
    assert checked["rule_failed"] == 0.0 and checked["acc"] == 1.0 and checked["score"] == pytest.approx(1.5)
    multiple_choice = registry.compute_score("x_rlcr", _rlcr("2"), "2", {"options": ["a", "b"]})
    assert math.isnan(multiple_choice["rule_failed"])


def test_tinyv_error_policy_flags_the_row_before_asking_the_verifier():
    # on_rule_failure=error never reaches the verifier: no server is needed (and none is listening)
    out = registry.compute_score("polaris_tinyv", DEGENERATE, "1", {"question": "q"},
                                 tinyv={"model": "m", "setup": "addon", "rule_timeout_s": 1,
                                        "on_rule_failure": "error"})
    assert out["rule_failed"] == 1.0 and out["reward_error"] == 1.0 and out["score"] == 0.0
    assert out["verifier_called"] == 0.0 and math.isnan(out["rule_correct"])
