"""ClientSettings: the one mapping from how users spell a served model's settings to the client's
ClientConfig (expected configs written out by hand)."""

from __future__ import annotations

import pytest

from verl.utils.reward_score import calibration, scalar_rm, tinyv
from verl.utils.reward_score.options import parse_options
from verlkit.clients.llm import ClientConfig
from verlkit.clients.settings import ClientSettings


def test_defaults_map_to_the_clients_defaults():
    assert ClientSettings(url="http://127.0.0.1:8000/v1", model="verifier").client_config() == ClientConfig(
        base_url="http://127.0.0.1:8000/v1", model="verifier", api_key_env=None, max_concurrency=64, timeout_s=60.0,
        max_retries=3, backoff_s=0.5, cache_size=100_000, rate_limit_rps=None)


def test_every_setting_reaches_the_config(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "secret")
    settings = ClientSettings(url="https://api.example.com/v1", model="judge", api_key_env="JUDGE_KEY_FOR_TEST",
                              max_concurrency="8", timeout_s="2.5", max_retries=0, backoff_s=0.1, cache_size=0,
                              rate_limit_rps="5")
    assert settings.client_config() == ClientConfig(
        base_url="https://api.example.com/v1", model="judge", api_key_env="JUDGE_KEY_FOR_TEST", max_concurrency=8,
        timeout_s=2.5, max_retries=0, backoff_s=0.1, cache_size=0, rate_limit_rps=5.0)
    assert "secret" not in repr(settings.client_config())


def test_reward_options_map_only_their_client_settings():
    opts = parse_options(tinyv.TinyVOptions, {"url": "http://127.0.0.1:9/v1", "model": "v", "max_concurrency": 4,
                                              "timeout_s": 30, "max_retries": 1, "template": "rubric", "weight": 0.5})
    assert opts.client_config() == ClientConfig(base_url="http://127.0.0.1:9/v1", model="v", max_concurrency=4,
                                                timeout_s=30.0, max_retries=1)
    cgp = parse_options(calibration.CGPOptions, {"url": "http://127.0.0.1:9/v1", "model": "d", "cache_size": 10})
    assert cgp.client_config() == ClientConfig(base_url="http://127.0.0.1:9/v1", model="d", cache_size=10)
    rm = parse_options(scalar_rm.ScalarRMOptions, {"url": "http://127.0.0.1:9/v1", "tokenizer": "/rm"})
    assert rm.client_config() == ClientConfig(base_url="http://127.0.0.1:9/v1", model="reward_model")


@pytest.mark.parametrize("bad, field", [
    ({"url": "127.0.0.1:8000"}, "url"), ({"model": ""}, "model"), ({"max_concurrency": 0}, "max_concurrency"),
    ({"timeout_s": 0}, "timeout_s"), ({"max_retries": -1}, "max_retries"), ({"rate_limit_rps": 0}, "rate_limit_rps"),
    ({"api_key_env": "SURELY_UNSET_KEY_FOR_TEST"}, "api_key_env"), ({"retries": 2}, "retries"),
])
def test_bad_settings_are_rejected_naming_the_setting(bad, field):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        ClientSettings(**{"url": "http://127.0.0.1:8000/v1", "model": "m", **bad})


def test_an_empty_key_variable_name_means_no_key():
    assert ClientSettings(url="http://h/v1", model="m", api_key_env="").client_config().api_key_env is None
