"""Routing options (``reward_kwargs.routing.*``): the original RRM/TinyV name matching and the fallback for
sources no reward routes (upstream verl, an error, or the rule-based math grader)."""

import json

import pytest

import verl  # noqa: F401  (loads our plugin)
from verl.utils.reward_score import registry
from verl.utils.reward_score.registry import RewardOptionsError, RewardSpec, UnknownDataSourceError

RULE = {"routing": {"fallback": "rule"}}


@pytest.mark.parametrize("source, strict, original", [
    ("polaris_tinyv", "tinyv", "tinyv"),
    ("Polaris_TinyV", None, "tinyv"),
    ("polaris_tinyv_hard", None, "tinyv"),  # the original: '_tinyv' in data_source
    ("  bigmath_rl_tinyv\n", None, "tinyv"),
    ("grade", "grade", "grade"),
    (" Grade ", None, "grade"),  # the original: data_source.lower().strip() == 'grade'
    ("MedMCQA_RLCR", None, "rlcr"),
    ("MATH", None, None),
    ("aime24", None, None),
])
def test_strict_and_original_matching(source, strict, original):
    assert getattr(registry.resolve(source, "strict"), "name", None) == strict
    assert getattr(registry.resolve(source, "original"), "name", None) == original


def test_match_option_from_the_command_line_and_from_the_environment(monkeypatch):
    assert registry.compute_score(" GRADE", "Total Score: 9/10", "0.9", routing={"match": "original"})["score"] == 1.0
    with pytest.raises(UnknownDataSourceError):
        registry.compute_score(" GRADE", "Total Score: 9/10", "0.9")
    monkeypatch.setenv(registry.OPTIONS_ENV, json.dumps({"routing": {"match": "original"}}))
    assert registry.compute_score(" GRADE", "Total Score: 9/10", "0.9")["score"] == 1.0
    assert registry.resolve("Polaris_TinyV").name == "tinyv"  # the validator's view follows the env too


def test_upstream_fallback_is_the_default():
    out = registry.compute_score("lighteval/MATH", "so \\boxed{\\frac{1}{2}}", "\\frac{1}{2}")
    assert out["score"] == 1.0 and out["reward_error"] == 0.0


def test_error_fallback_never_asks_upstream():
    with pytest.raises(UnknownDataSourceError) as err:
        registry.compute_score("lighteval/MATH", "\\boxed{2}", "2", routing={"fallback": "error"})
    assert "routing.fallback=error" in str(err.value) and "tinyv: zhangchenxu/HardVerify-Math, *_tinyv" in str(err.value)
    assert isinstance(err.value, NotImplementedError)  # what upstream raises for an unknown source


def test_rule_fallback_grades_unrouted_math_sources_with_the_rule_checker():
    # upstream scores aime* with math_dapo: string comparison, -1 for anything else (1/2 is not "0.5")
    assert registry.compute_score("aime24", "so \\boxed{\\frac{1}{2}}", "0.5")["score"] == -1.0
    right = registry.compute_score("aime24", "so \\boxed{\\frac{1}{2}}", "0.5", **RULE)
    assert right["score"] == 1.0 and right["acc"] == 1.0 and right["rule_failed"] == 0.0
    assert registry.compute_score("MATH", "we get \\boxed{33}", "33", **RULE)["score"] == 1.0
    wrong = registry.compute_score("OLYMPIAD_BENCH", "\\boxed{7}", "8", **RULE)
    assert wrong["score"] == 0.0 and wrong["acc"] == 0.0 and wrong["reward_error"] == 0.0
    # routed sources keep their reward
    assert registry.compute_score("grade", "Total Score: 9/10", "0.9", **RULE)["grade_pred"] == 0.9


def test_is_known_follows_the_fallback(monkeypatch):
    assert registry.is_known("lighteval/MATH") and not registry.is_known("my/math-set")
    monkeypatch.setenv(registry.OPTIONS_ENV, json.dumps(RULE))
    assert registry.is_known("my/math-set")
    monkeypatch.setenv(registry.OPTIONS_ENV, json.dumps({"routing": {"fallback": "error"}}))
    assert not registry.is_known("lighteval/MATH") and registry.is_known("grade")


def test_bad_routing_option_is_a_configuration_error():
    with pytest.raises(RewardOptionsError, match="routing: option 'fallback'='prime'"):
        registry.compute_score("grade", "Total Score: 9/10", "0.9", routing={"fallback": "prime"})
    with pytest.raises(RewardOptionsError, match="routing: unknown option 'mode'"):
        registry.compute_score("grade", "Total Score: 9/10", "0.9", routing={"mode": "original"})


def test_routing_is_a_reserved_name():
    with pytest.raises(ValueError, match="reserved"):
        registry.register_reward(RewardSpec("routing", lambda *a, **k: 0.0, exact=("x",)))
