"""Which server a model-scored reward asks: the one precedence rule, and verl's reward router.

verl 0.9.1 can run the served model itself (``reward.reward_model.enable=True``): its
``RewardModelManager`` starts the replicas on Ray, puts a load-balancing router in front of them and
passes the router's ``host:port`` to every reward call as ``reward_router_address``, together with the
reward model's tokenizer (``reward_model_tokenizer``). A reward that gets them asks the router.

Precedence, in :func:`choose_endpoint` and nowhere else:

1. an explicit ``url`` option (the user named a server: it wins, even over verl's router);
2. verl's router, when verl passes one;
3. the URL from the environment (``VERLKIT_VERIFIER_URL`` for ``tinyv``; a reward may have none);
4. nothing: the reward's own default applies.

The model name goes with the URL it was chosen for: an explicit ``model`` option always wins; for the
router it is the name verl's replicas serve, else the environment's (only for an explicit or
environment URL). verl's replicas serve the model under its path as given to
``reward.reward_model.model_path`` (vLLM's default served name is the ``serve`` argument, which verl
sets to that path); the tokenizer verl passes was loaded from the same path, so its ``name_or_path``
is that name (:func:`router_model_name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Source = Literal["option", "router", "environment", "default"]


@dataclass(frozen=True)
class Endpoint:
    """The chosen base URL (``None``: the reward's default) and model name (``None``: the reward's
    default), and where the URL came from."""

    url: str | None
    model: str | None
    source: Source


def router_base_url(router_address: str) -> str:
    """``http://host:port/v1`` for verl's ``reward_router_address`` (``host:port`` or ``[v6]:port``).
    The router forwards every path unchanged, so ``/v1/chat/completions`` and ``/classify`` work."""
    address = router_address.strip().removeprefix("http://").rstrip("/")
    return f"http://{address}/v1"


def router_model_name(reward_model_tokenizer: Any) -> str | None:
    """The name verl's reward-model replicas serve: the path the tokenizer was loaded from."""
    name = getattr(reward_model_tokenizer, "name_or_path", None)
    return str(name) if name else None


def choose_endpoint(
    *,
    url_option: str | None,
    model_option: str | None,
    router_address: str | None,
    router_model: str | None,
    url_env: str | None,
    model_env: str | None,
) -> Endpoint:
    """The one precedence rule (module docstring). Empty strings count as absent."""
    url_option, model_option = url_option or None, model_option or None
    if url_option:
        return Endpoint(url_option, model_option or model_env or None, "option")
    if router_address:
        return Endpoint(router_base_url(router_address), model_option or router_model or None, "router")
    if url_env:
        return Endpoint(url_env, model_option or model_env or None, "environment")
    return Endpoint(None, model_option or model_env or None, "default")
