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
``model``, ``max_concurrency``, ``timeout_s``, ...), so their client options keep one spelling.
"""

from __future__ import annotations

import json
import os
from typing import Any, ClassVar, Mapping, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

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
