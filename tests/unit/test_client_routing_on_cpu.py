"""Which server a model-scored reward asks: explicit URL option > verl's reward router > environment."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from verlkit.clients.routing import Endpoint, choose_endpoint, router_base_url, router_model_name

ROUTER = "10.0.0.5:41234"
ROUTER_URL = "http://10.0.0.5:41234/v1"
ROUTER_MODEL = "/models/verifier-7b"


def choose(**given):
    base = dict(url_option=None, model_option=None, router_address=None, router_model=None, url_env=None, model_env=None)
    return choose_endpoint(**{**base, **given})


@pytest.mark.parametrize(
    "given, expected",
    [
        # everything present: the explicit option wins, with the environment's model name
        (dict(url_option="http://opt:1/v1", router_address=ROUTER, router_model=ROUTER_MODEL,
              url_env="http://env:2/v1", model_env="env-model"),
         Endpoint("http://opt:1/v1", "env-model", "option")),
        # no option: verl's router, with the name its replicas serve (not the environment's)
        (dict(router_address=ROUTER, router_model=ROUTER_MODEL, url_env="http://env:2/v1", model_env="env-model"),
         Endpoint(ROUTER_URL, ROUTER_MODEL, "router")),
        # no router either: the environment
        (dict(url_env="http://env:2/v1", model_env="env-model"), Endpoint("http://env:2/v1", "env-model", "environment")),
        # nothing: the reward's default URL, the environment's model if any
        (dict(model_env="env-model"), Endpoint(None, "env-model", "default")),
        (dict(), Endpoint(None, None, "default")),
        # an explicit model option goes with any URL
        (dict(model_option="mine", router_address=ROUTER, router_model=ROUTER_MODEL), Endpoint(ROUTER_URL, "mine", "router")),
        (dict(url_option="http://opt:1/v1", model_option="mine", model_env="env-model"),
         Endpoint("http://opt:1/v1", "mine", "option")),
        # empty strings (an unset hydra value) count as absent
        (dict(url_option="", model_option="", router_address=ROUTER, router_model=ROUTER_MODEL),
         Endpoint(ROUTER_URL, ROUTER_MODEL, "router")),
        # a router without a tokenizer to name the model: no model chosen (the reward's own default/error)
        (dict(router_address=ROUTER, model_env="env-model"), Endpoint(ROUTER_URL, None, "router")),
    ],
    ids=["option-wins", "router", "environment", "default-env-model", "default-nothing", "model-option-router",
         "model-option-url", "empty-is-absent", "router-without-name"],
)
def test_precedence_is_explicit_url_then_router_then_environment(given, expected):
    assert choose(**given) == expected


@pytest.mark.parametrize(
    "address, url",
    [("10.0.0.5:41234", "http://10.0.0.5:41234/v1"), ("[fd00::5]:8000", "http://[fd00::5]:8000/v1"),
     ("http://127.0.0.1:9/", "http://127.0.0.1:9/v1")],
)
def test_router_address_becomes_an_openai_base_url(address, url):
    assert router_base_url(address) == url


def test_router_model_name_is_the_path_the_reward_model_tokenizer_came_from():
    assert router_model_name(SimpleNamespace(name_or_path="/models/rm")) == "/models/rm"
    assert router_model_name(None) is None
    assert router_model_name(SimpleNamespace(name_or_path="")) is None
