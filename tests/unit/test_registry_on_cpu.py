"""The data_source registry: routing, the fixed result schema, options, failures, upstream fallback."""

import asyncio
import json
import math

import pytest

import verl  # noqa: F401  (loads our plugin)
import verl.utils.reward_score as upstream_scores
from verl.utils.reward_score import registry
from verl.utils.reward_score.registry import RewardOptionsError, RewardSpec, UnknownDataSourceError


@pytest.fixture
def temp_specs():
    """Register throwaway specs for one test and remove them afterwards."""
    added = []

    def add(spec):
        added.append(registry.register_reward(spec))
        return spec

    yield add
    for spec in added:
        registry.REWARDS.remove(spec)


def test_plugin_installs_the_drop_in_dispatcher():
    assert upstream_scores.default_compute_score is registry.default_compute_score
    # upstream's own answer for its source (a float), our schema for ours
    assert upstream_scores.default_compute_score("openai/gsm8k", "so the answer #### 42", "42") == 1.0
    result = upstream_scores.default_compute_score("grade", "Total Score: 9/10", "0.9")
    assert result["score"] == 1.0 and tuple(result) == registry.result_keys()


def test_registry_dispatcher_keeps_our_schema_for_upstream_sources():
    result = registry.compute_score("openai/gsm8k", "so the answer #### 42", "42")
    assert result["score"] == 1.0 and result["acc"] == 1.0 and tuple(result) == registry.result_keys()


def test_gsm8k_wrong_and_missing_answer_score_zero():
    assert registry.compute_score("openai/gsm8k", "#### 41", "42")["score"] == 0.0
    assert registry.compute_score("openai/gsm8k", "no marker at all", "42")["score"] == 0.0


def test_every_source_returns_the_same_keys(temp_specs):
    temp_specs(RewardSpec("dictsrc", lambda *a, **k: {"score": 0.5, "custom_flag": 1}, exact=("dictsrc",),
                          metrics=("custom_flag",)))
    temp_specs(RewardSpec("floatsrc", lambda *a, **k: 0.25, exact=("floatsrc",)))
    rows = [
        registry.compute_score("openai/gsm8k", "#### 1", "1"),
        registry.compute_score("dictsrc", "x", "y"),
        registry.compute_score("floatsrc", "x", "y"),
        registry.compute_score("lighteval/MATH", "\\boxed{2}", "2"),  # upstream fallback
    ]
    keys = {tuple(r) for r in rows}
    assert keys == {registry.result_keys()}
    assert all(isinstance(v, float) for r in rows for v in r.values())
    assert rows[1]["custom_flag"] == 1.0 and math.isnan(rows[0]["custom_flag"])
    assert rows[2]["score"] == 0.25 and rows[2]["acc"] == 0.25


def test_exact_beats_suffix_and_longest_rule_wins(temp_specs):
    temp_specs(RewardSpec("short", lambda *a, **k: 1.0, suffixes=("_v",)))
    temp_specs(RewardSpec("long", lambda *a, **k: 2.0, suffixes=("_tiny_v",)))
    temp_specs(RewardSpec("exact", lambda *a, **k: 3.0, exact=("math_tiny_v",)))
    assert registry.resolve("abc_v").name == "short"
    assert registry.resolve("abc_tiny_v").name == "long"
    assert registry.resolve("math_tiny_v").name == "exact"
    assert registry.resolve("not-registered") is None


def test_unknown_source_lists_registered_routes():
    with pytest.raises(UnknownDataSourceError) as err:
        registry.compute_score("definitely/unknown", "x", "y")
    assert "gsm8k" in str(err.value) and "openai/gsm8k" in str(err.value)
    assert not registry.is_known("definitely/unknown")
    assert registry.is_known("openai/gsm8k") and registry.is_known("lighteval/MATH")


def test_options_from_kwargs_override_env(temp_specs, monkeypatch):
    seen = {}

    def fn(data_source, solution_str, ground_truth, extra_info=None, **options):
        seen.update(options)
        return 1.0

    temp_specs(RewardSpec("opt", fn, exact=("opt_src",)))
    monkeypatch.setenv(registry.OPTIONS_ENV, json.dumps({"opt": {"a": 1, "b": 2}}))
    registry.compute_score("opt_src", "x", "y", opt={"b": 3})
    assert seen == {"a": 1, "b": 3}


def test_hydra_dictconfig_options_are_plain(temp_specs):
    from omegaconf import OmegaConf

    seen = {}
    temp_specs(RewardSpec("optcfg", lambda *a, **k: seen.update(k) or 1.0, exact=("optcfg_src",)))
    cfg = OmegaConf.create({"optcfg": {"url": "http://127.0.0.1:1/v1", "weights": [1, 2]}})
    registry.compute_score("optcfg_src", "x", "y", **cfg)
    assert seen == {"url": "http://127.0.0.1:1/v1", "weights": [1, 2]}
    assert type(seen["weights"]) is list


def test_unknown_option_namespace_is_a_configuration_error():
    with pytest.raises(ValueError, match="no reward named 'tinyvv'"):
        registry.compute_score("openai/gsm8k", "#### 1", "1", tinyvv={"setup": "addon"})


def test_failing_reward_is_flagged_not_raised(temp_specs):
    def boom(*a, **k):
        raise RuntimeError("verifier exploded")

    temp_specs(RewardSpec("boom", boom, exact=("boom_src",)))
    result = registry.compute_score("boom_src", "x", "y")
    assert result["reward_error"] == 1.0 and result["score"] == 0.0
    result = asyncio.run(registry.compute_score_async("boom_src", "x", "y"))
    assert result["reward_error"] == 1.0


def test_options_error_is_raised_not_flagged(temp_specs):
    def strict(*a, **options):
        raise RewardOptionsError("bad option")

    temp_specs(RewardSpec("strict", strict, exact=("strict_src",)))
    with pytest.raises(RewardOptionsError):
        registry.compute_score("strict_src", "x", "y")


def test_non_finite_score_is_flagged(temp_specs):
    temp_specs(RewardSpec("nan", lambda *a, **k: float("nan"), exact=("nan_src",)))
    assert registry.compute_score("nan_src", "x", "y")["reward_error"] == 1.0


def test_async_reward_runs_from_sync_and_async_callers(temp_specs):
    async def slow_half(*a, **k):
        await asyncio.sleep(0)
        return {"score": 0.5}

    temp_specs(RewardSpec("asyncsrc", slow_half, exact=("async_src",)))
    assert registry.compute_score("async_src", "x", "y")["score"] == 0.5

    async def many():
        return await asyncio.gather(*[registry.compute_score_async("async_src", "x", "y") for _ in range(8)])

    assert [r["score"] for r in asyncio.run(many())] == [0.5] * 8


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        registry.register_reward(RewardSpec("gsm8k", lambda *a, **k: 0.0))
