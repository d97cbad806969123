"""Model-scored rewards follow verl's reward router: the registry hands verl's context to the rewards
that ask for it, and tinyv, cgp and scalar_rm resolve url/model by the one precedence rule."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

import verl  # noqa: F401  (loads our plugin)
from verl.utils.reward_score import calibration, registry, scalar_rm, tinyv
from verl.utils.reward_score.options import RewardOptionsError, parse_served_options
from verl.utils.reward_score.registry import RewardSpec

ROUTER = "127.0.0.1:39001"
ROUTER_URL = "http://127.0.0.1:39001/v1"
RM_TOKENIZER = SimpleNamespace(name_or_path="/models/served-by-verl")


@pytest.fixture
def no_env(monkeypatch):
    for name in (tinyv.URL_ENV, tinyv.MODEL_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    "model, extra",
    [(tinyv.TinyVOptions, {}), (calibration.CGPOptions, {}), (scalar_rm.ScalarRMOptions, {"tokenizer": "/rm"})],
    ids=["tinyv", "cgp", "scalar_rm"],
)
def test_served_rewards_ask_the_router_with_the_name_verl_serves(no_env, model, extra):
    opts = parse_served_options(model, extra, ROUTER, RM_TOKENIZER)
    assert (opts.url, opts.model) == (ROUTER_URL, "/models/served-by-verl")
    config = opts.client_config()
    assert (config.base_url, config.model) == (ROUTER_URL, "/models/served-by-verl")


@pytest.mark.parametrize(
    "model, extra",
    [(tinyv.TinyVOptions, {}), (calibration.CGPOptions, {}), (scalar_rm.ScalarRMOptions, {"tokenizer": "/rm"})],
    ids=["tinyv", "cgp", "scalar_rm"],
)
def test_an_explicit_url_option_wins_over_the_router(no_env, model, extra):
    opts = parse_served_options(model, {**extra, "url": "http://10.1.1.1:8000/v1", "model": "judge"}, ROUTER,
                                RM_TOKENIZER)
    assert (opts.url, opts.model) == ("http://10.1.1.1:8000/v1", "judge")


def test_tinyv_router_beats_environment_and_environment_beats_default(no_env):
    no_env.setenv(tinyv.URL_ENV, "http://env-host:7000/v1")
    no_env.setenv(tinyv.MODEL_ENV, "env-verifier")
    routed = parse_served_options(tinyv.TinyVOptions, {}, ROUTER, RM_TOKENIZER)
    assert (routed.url, routed.model) == (ROUTER_URL, "/models/served-by-verl")
    plain = parse_served_options(tinyv.TinyVOptions, {})
    assert (plain.url, plain.model) == ("http://env-host:7000/v1", "env-verifier")
    no_env.delenv(tinyv.URL_ENV)
    default = parse_served_options(tinyv.TinyVOptions, {})
    assert (default.url, default.model) == (tinyv.DEFAULT_URL, "env-verifier")


def test_without_router_or_url_cgp_still_requires_its_url(no_env):
    with pytest.raises(RewardOptionsError, match="cgp: option 'url' is required"):
        parse_served_options(calibration.CGPOptions, {"model": "m"})


def test_registry_passes_verl_context_only_to_rewards_that_name_it(monkeypatch):
    seen = {}

    def routed(data_source, solution_str, ground_truth, extra_info=None, reward_router_address=None,
               reward_model_tokenizer=None, **options):
        seen["routed"] = (reward_router_address, reward_model_tokenizer, options)
        return 1.0

    def plain(data_source, solution_str, ground_truth, extra_info=None, **options):
        seen["plain"] = options
        return 0.5

    added = [registry.register_reward(RewardSpec("t_routed", routed, exact=("t_routed",))),
             registry.register_reward(RewardSpec("t_plain", plain, exact=("t_plain",)))]
    try:
        context = {"reward_router_address": ROUTER, "reward_model_tokenizer": RM_TOKENIZER}
        out = asyncio.run(registry.compute_score_async("t_routed", "x", "y", {}, t_routed={"k": 1}, **context))
        assert out["score"] == 1.0 and out["reward_error"] == 0.0
        assert seen["routed"] == (ROUTER, RM_TOKENIZER, {"k": 1})
        out = registry.compute_score("t_plain", "x", "y", {}, **context)
        assert out["score"] == 0.5 and out["reward_error"] == 0.0
        assert seen["plain"] == {}
    finally:
        for spec in added:
            registry.REWARDS.remove(spec)


def test_scalar_rm_takes_tokenizer_and_name_from_the_reward_model_verl_serves(no_env):
    opts = scalar_rm.served_options({}, ROUTER, RM_TOKENIZER)
    assert (opts.url, opts.model, opts.tokenizer) == (ROUTER_URL, "/models/served-by-verl", "/models/served-by-verl")
    mine = scalar_rm.served_options({"tokenizer": "/my/rm", "model": "rm"}, ROUTER, RM_TOKENIZER)
    assert (mine.url, mine.model, mine.tokenizer) == (ROUTER_URL, "rm", "/my/rm")
    with pytest.raises(RewardOptionsError, match="scalar_rm: option 'tokenizer' is required"):
        scalar_rm.served_options({"url": "http://h:1/v1"})
