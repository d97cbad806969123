"""Typed reward options: the one contract every reward module of ours declares its options with.

The registry hands a reward function its options as keyword arguments (``**options``): the hydra
``reward_kwargs.<name>`` mapping merged over the ``VERLKIT_REWARD_OPTIONS`` env JSON, so values may
be strings (``"64"``, ``"true"``). A module declares ONE model::

    class UnitsOptions(RewardOptions):
        reward_name: ClassVar[str] = "units"
        unit_weight: float = Field(0.5, ge=0, le=1)

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **options):
        opts = parse_options(UnitsOptions, options)

and :func:`parse_options` validates (pydantic, lax mode: ``"64"`` -> 64, ``"true"`` -> True, unknown
names rejected) or raises :class:`RewardOptionsError` naming the reward and the option. A
``RewardOptionsError`` is a configuration error: the registry lets it stop the run at the first step
instead of flagging the row. Parsed models are cached per distinct raw mapping, since the registry
calls a reward once per sample.

Model-scored rewards also inherit :class:`verlkit.clients.settings.ClientSettings` (``url``,
``model``, ``max_concurrency``, ``timeout_s``, ...), so their client options keep one spelling, and
parse with :func:`parse_served_options`, which also follows verl's reward router when verl passes one.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, ClassVar, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from verlkit.clients.routing import choose_endpoint, router_model_name

logger = logging.getLogger("verlkit.rewards")

_CACHE_LIMIT = 256


class RewardOptionsError(ValueError):
    """Invalid options for a reward: a configuration error, so the registry does not catch it as a
    per-row failure but lets it stop the run at the first step."""


class RewardOptions(BaseModel):
    """Base of every reward's options model: unknown options are errors, parsed options are immutable.

    ``reward_name`` names the reward in error messages. ``env_defaults`` maps an option to the
    environment variable that supplies it when the option is absent or empty.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    reward_name: ClassVar[str] = "reward"
    env_defaults: ClassVar[dict[str, str]] = {}


OptionsT = TypeVar("OptionsT", bound=RewardOptions)
_parsed: dict[tuple, RewardOptions] = {}


def _cache_key(model: type, options: Mapping[str, Any]) -> tuple:
    items = tuple(sorted(options.items()))
    try:
        hash(items)
    except TypeError:  # list/dict values (hydra ListConfig turned into lists): key on their JSON form
        items = (json.dumps(dict(items), sort_keys=True, default=repr),)
    return (model, items)


def parse_options(model: type[OptionsT], options: Mapping[str, Any]) -> OptionsT:
    """``options`` (the raw ``**options`` of a reward call) validated into ``model``.

    Raises :class:`RewardOptionsError` naming ``model.reward_name`` and each bad option."""
    raw = dict(options)
    for name, env in model.env_defaults.items():
        if raw.get(name) in (None, ""):
            raw.pop(name, None)
            if os.environ.get(env):
                raw[name] = os.environ[env]
    key = _cache_key(model, raw)
    cached = _parsed.get(key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    try:
        parsed = model.model_validate(raw)
    except ValidationError as e:
        raise RewardOptionsError(describe_errors(model, e)) from None
    if len(_parsed) >= _CACHE_LIMIT:
        _parsed.clear()
    _parsed[key] = parsed
    return parsed


def describe_errors(model: type[RewardOptions], error: ValidationError) -> str:
    """``<reward>: <problem>; <problem>``, each problem naming its option."""
    known = ", ".join(sorted(model.model_fields)) or "none, it takes no options"
    problems: dict[str, str] = {}  # keyed by option: a union field reports once per member
    for item in error.errors(include_url=False):
        name = str(item["loc"][0]) if item["loc"] else ""
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            problems[name] = f"unknown option {name!r} (known: {known})"
        elif item["type"] == "missing":
            env = model.env_defaults.get(name)
            problems[name] = f"option {name!r} is required" + (f" (or set ${env})" if env else "")
        elif not name:  # a check across options
            problems[f"#{len(problems)}"] = message
        elif name in problems:
            problems[name] += f" or {message}"
        else:
            problems[name] = f"option {name!r}={item.get('input')!r}: {message}"
    return f"{model.reward_name}: " + "; ".join(problems.values())


_announced: set[tuple[str, str, str, str]] = set()


def parse_served_options(
    model: type[OptionsT],
    options: Mapping[str, Any],
    reward_router_address: str | None = None,
    reward_model_tokenizer: Any = None,
) -> OptionsT:
    """:func:`parse_options` for a model-scored reward, with ``url``/``model`` chosen by
    :func:`verlkit.clients.routing.choose_endpoint` (explicit option > verl's reward router >
    environment > default). ``reward_router_address``/``reward_model_tokenizer`` are what verl passes
    to a reward function when ``reward.reward_model.enable=True``. Logs once per process where a
    reward's requests go."""
    raw = dict(options)
    url_env, model_env = model.env_defaults.get("url"), model.env_defaults.get("model")
    endpoint = choose_endpoint(
        url_option=raw.get("url"),
        model_option=raw.get("model"),
        router_address=reward_router_address,
        router_model=router_model_name(reward_model_tokenizer),
        url_env=os.environ.get(url_env) if url_env else None,
        model_env=os.environ.get(model_env) if model_env else None,
    )
    for name, value in (("url", endpoint.url), ("model", endpoint.model)):
        if value:
            raw[name] = value
    parsed = parse_options(model, raw)
    note = (model.reward_name, endpoint.source, str(getattr(parsed, "url", "")), str(getattr(parsed, "model", "")))
    if note not in _announced:
        _announced.add(note)
        where = "verl's reward router" if endpoint.source == "router" else f"the {endpoint.source} URL"
        logger.warning("%s: requests go to %s (%s), model %r", note[0], note[2], where, note[3])
    return parsed
