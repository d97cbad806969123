"""The one place that maps a row's ``data_source`` to a reward function.

Adding a reward = one file in this folder + one ``RewardSpec`` line in ``REWARDS`` below. Reward modules never
import this module (it imports them).

A reward function has verl's custom-reward signature and may be sync or ``async``::

    def compute_score(data_source, solution_str, ground_truth, extra_info=None, **options) -> float | dict

``options`` are the per-reward options (see "Options" below). It returns a float or a dict with ``score``; any other
numeric keys it returns must be declared in its spec's ``metrics``.

Routing: an exact ``data_source`` match wins, then the longest matching prefix/suffix rule. Sources nobody here
registers go to upstream verl's own dispatcher; a source upstream does not know either raises
``UnknownDataSourceError`` listing what is registered. Both are options of the reserved namespace ``routing``
(``reward_kwargs.routing.match=original``: the original RRM/TinyV name matching;
``reward_kwargs.routing.fallback=upstream|error|rule``), see ``verl.utils.reward_score.routing``.

Two dispatchers: :func:`compute_score` / :func:`compute_score_async` (name them in
``reward.custom_reward_function``) route our sources first and return the fixed schema below for every row,
upstream's sources included. :func:`default_compute_score` is what the plugin installs as upstream's
``verl.utils.reward_score.default_compute_score``: a drop-in that returns exactly upstream's result (same type, same
value) for every source upstream scores, and our registry's result for the rest, so upstream's reward managers and
users' own ``float(default_compute_score(...))`` keep working.

Result schema: verl stacks each reward key across the batch and breaks when rows of one batch return different keys
(``KeyError: 'score'``). So every call returns exactly ``result_keys()``: ``score``, ``acc``, ``reward_error`` and
the union of all specs' declared ``metrics``, as floats, with NaN where a key does not apply to the row's source.
The trainer-side metric hook averages them ignoring NaN.

Options: ``+reward.custom_reward_function.reward_kwargs.<spec name>.<option>=value`` on the hydra command line (verl
passes ``reward_kwargs`` as keyword arguments), on top of defaults from the ``VERLKIT_REWARD_OPTIONS`` environment
variable (JSON ``{"<spec name>": {...}}``), on top of the reward function's own defaults. An option namespace that
names no registered spec is an error. The options reach the function as keyword arguments; our modules validate them
into one typed model (``verl.utils.reward_score.options``), a plain function takes them as keyword parameters.

Row checks: a spec's ``row_validator`` is the one check of its family's rows that ``data_prep.validate`` runs before
training (what ``extra_info`` must hold, the ground truth's form). A validator taking ``**options`` also gets the
run's options of its reward (``tinyv`` rows need ``criteria`` under the rubric template).

verl context: when verl runs the reward model (``reward.reward_model.enable=True``) it passes
``reward_router_address`` and ``reward_model_tokenizer``; a function that names them as parameters gets them
(model-scored rewards then ask verl's router), any other function never sees them.

Failures: a reward function that raises never crashes training and never silently becomes a 0: the row gets
``score=0.0`` and ``reward_error=1.0``, which the step metrics count; the first traceback per (spec, exception type)
is logged."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

# Defined next to the options contract and the routing options; users keep importing them from here.
from verl.utils.reward_score.options import RewardOptionsError, parse_options  # noqa: F401
from verl.utils.reward_score.routing import NAMESPACE as ROUTING
from verl.utils.reward_score.routing import RULE_FALLBACK_REWARD, RoutingOptions, UnknownDataSourceError, route

logger = logging.getLogger("verlkit.rewards")

OPTIONS_ENV = "VERLKIT_REWARD_OPTIONS"
BASE_KEYS = ("score", "acc", "reward_error")
# kwargs verl itself may pass to a compute_score; forwarded to upstream's dispatcher only.
_UPSTREAM_KWARGS = ("sandbox_fusion_url", "concurrent_semaphore", "memory_limit_mb")
_VERL_CONTEXT_KWARGS = ("reward_router_address", "reward_model_tokenizer")


@dataclass(frozen=True)
class RewardSpec:
    """How a family of data sources is scored.

    name: option namespace and log name. target: ``"module:function"`` (a module of this folder) or
    ``"package.module:function"`` or a callable. exact/prefixes/suffixes: routing rules on
    ``data_source``. metrics: extra numeric keys the function may return (become step metrics).
    row_validator: the family's row check, named like ``target`` (or None: only the base schema is
    checked): ``validate_row(row: dict) -> list[str]``, one ``"<field>: <what is wrong>"`` per problem,
    ``row`` as plain Python values; ``validate_row(row, **options)`` also gets the run's raw options of
    the reward (as the reward function does).
    """

    name: str
    target: str | Callable[..., Any]
    exact: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    row_validator: str | Callable[[dict], list[str]] | None = None
    _loaded: dict = field(default_factory=dict, compare=False, repr=False)

    def function(self) -> Callable[..., Any]:
        if "function" not in self._loaded:
            self._loaded["function"] = _load_target(self.target)
        return self._loaded["function"]

    def verl_context(self, passthrough: dict[str, Any]) -> dict[str, Any]:
        """The verl context kwargs (``reward_router_address``, ``reward_model_tokenizer``) among
        ``passthrough`` that the function declares as parameters; functions that do not name them
        never see them (their ``**options`` would reject them as unknown options)."""
        if "context" not in self._loaded:
            params = inspect.signature(self.function()).parameters
            self._loaded["context"] = tuple(k for k in _VERL_CONTEXT_KWARGS if k in params)
        return {k: passthrough[k] for k in self._loaded["context"] if k in passthrough}

    def validator(self) -> Callable[[dict], list[str]] | None:
        """The family's row check (imports its module on first use), or None."""
        if self.row_validator is None:
            return None
        if "validator" not in self._loaded:
            self._loaded["validator"] = _load_target(self.row_validator)
        return self._loaded["validator"]


def _load_target(target: str | Callable[..., Any]) -> Callable[..., Any]:
    if callable(target):
        return target
    module_name, _, attr = target.partition(":")
    if "." not in module_name:
        module_name = f"verl.utils.reward_score.{module_name}"
    return getattr(importlib.import_module(module_name), attr or "compute_score")


# ---------------------------------------------------------------------------------------------
# The table. One line per reward family.
# ---------------------------------------------------------------------------------------------
REWARDS: list[RewardSpec] = [
    RewardSpec("gsm8k", "gsm8k_exact:compute_score", exact=("openai/gsm8k",)),
    RewardSpec("grade", "grade:compute_score", exact=("grade",), metrics=("parse_ok", "grade_pred"),
               row_validator="grade:validate_row"),
    RewardSpec("tinyv", "tinyv:compute_score", exact=("zhangchenxu/HardVerify-Math",), suffixes=("_tinyv",),
               metrics=("parse_ok", "verifier_called", "verifier_ok", "cache_hit", "latency_s", "rule_correct",
                        "verifier_failed", "verdict_invalid", "verdict_prob_ok", "rule_failed",
                        "sent_to_verifier", "sent_to_rubric", "verifier_score", "rubric_score",  # setup=hybrid
                        "rule_term", "rescue_term", "verifier_term", "soundness_term"),  # components (gdpo)
               row_validator="tinyv:validate_row"),
    RewardSpec("cgp", "calibration:compute_score", exact=("medmcqa_cgp",), suffixes=("_cgp",),
               metrics=("parse_ok", "confidence", "downstream_ok", "downstream_failed", "cache_hit", "latency_s",
                        "accuracy_term", "calibration_term"),
               row_validator="calibration:validate_row"),
    RewardSpec("rlcr", "rlcr:compute_score", exact=("medmcqa_rlcr",), suffixes=("_rlcr",),
               metrics=("format_ok", "confidence", "brier", "rule_failed", "format_term", "accuracy_term",
                        "brier_term"),
               row_validator="rlcr:validate_row"),
    RewardSpec("scalar_rm", "scalar_rm:compute_score", exact=("ultrafeedback",), suffixes=("_rm",),
               metrics=("rm_ok", "rm_failed", "rm_score", "latency_s"), row_validator="scalar_rm:validate_row"),
    # No routing rules: it scores the sources nobody routes when routing.fallback=rule.
    RewardSpec(RULE_FALLBACK_REWARD, "math_rule:compute_score", metrics=("rule_failed",)),
]


_upstream_fallback: Callable[..., Any] | None = None
_logged_failures: set[tuple[str, str]] = set()


def set_upstream_fallback(fn: Callable[..., Any]) -> None:
    """Called by the plugin with upstream's original ``default_compute_score``."""
    global _upstream_fallback
    if fn not in (compute_score, default_compute_score):
        _upstream_fallback = fn


def register_reward(spec: RewardSpec) -> RewardSpec:
    """Register a spec at runtime (e.g. from a module in ``VERL_USE_EXTERNAL_MODULES``, which verl imports in
    every process; a spec registered only in the driver changes the result schema there and nowhere else)."""
    if spec.name == ROUTING or any(s.name == spec.name for s in REWARDS):
        raise ValueError(f"a reward named {spec.name!r} is already registered (or reserved)")
    REWARDS.append(spec)
    return spec


def registered_names() -> list[str]:
    return [s.name for s in REWARDS]


def describe_routes() -> str:
    parts = []
    for s in REWARDS:
        rules = [*s.exact, *(f"{p}*" for p in s.prefixes), *(f"*{x}" for x in s.suffixes)]
        parts.append(f"{s.name}: {', '.join(rules) or f'(the {ROUTING}.fallback=rule grader)'}")
    return "; ".join(parts)


class _Derived:
    """Schema and routing derived from REWARDS, rebuilt whenever the list's content changes (specs are
    frozen: their identities are a complete signature). Hot path of every reward call."""

    signature: tuple = ()
    keys: tuple[str, ...] = ()
    template: dict[str, float] = {}
    routes: dict[str, "RewardSpec | None"] = {}

    @classmethod
    def current(cls) -> type["_Derived"]:
        signature = tuple(map(id, REWARDS))
        if signature != cls.signature:
            ordered = list(BASE_KEYS)
            for spec in REWARDS:
                ordered.extend(k for k in spec.metrics if k not in ordered)
            cls.keys = tuple(ordered)
            cls.template = dict.fromkeys(cls.keys, math.nan)
            cls.template["reward_error"] = 0.0
            cls.routes = {}
            cls.signature = signature
        return cls


def result_keys() -> tuple[str, ...]:
    """The fixed result schema: BASE_KEYS + every spec's metrics."""
    return _Derived.current().keys


def resolve(data_source: str, match: str | None = None) -> RewardSpec | None:
    """The spec whose rules route ``data_source``, or None (then ``routing.fallback`` decides). ``match``:
    ``strict``/``original`` (None: the ``routing`` options of ``VERLKIT_REWARD_OPTIONS``, else strict)."""
    match = match or routing_options({}).match
    routes = _Derived.current().routes
    try:
        return routes[(match, data_source)]
    except KeyError:
        routes[(match, data_source)] = spec = route(data_source, REWARDS, match)
        return spec


def spec_named(name: str) -> RewardSpec:
    return next(s for s in REWARDS if s.name == name)


def routing_options(call_options: dict[str, dict[str, Any]]) -> RoutingOptions:
    """The ``routing`` namespace of a call's options over the ``VERLKIT_REWARD_OPTIONS`` defaults."""
    if not call_options.get(ROUTING):  # the hot path (every reward call): env defaults only, parsed once
        return _env_routing(os.environ.get(OPTIONS_ENV, "").strip())
    merged = dict(_env_options().get(ROUTING, {}))
    merged.update(call_options[ROUTING])
    return parse_options(RoutingOptions, merged)


@functools.lru_cache(maxsize=8)
def _env_routing(raw_env: str) -> RoutingOptions:
    return parse_options(RoutingOptions, dict(_parse_env_options(raw_env).get(ROUTING, {})))


def is_known(data_source: str, options: dict[str, dict[str, Any]] | None = None) -> bool:
    """True if someone (us, the ``routing`` fallback or upstream verl) scores this source. Used by the data
    validator; ``options`` (``{"routing": {...}}``) over those of ``VERLKIT_REWARD_OPTIONS``."""
    routing = routing_options(options or {})
    if resolve(data_source, routing.match) is not None:
        return True
    fallback_mode = routing.fallback
    if fallback_mode != "upstream":
        return fallback_mode == "rule"
    fallback = _upstream_fallback or _import_upstream_default()
    try:
        fallback(data_source, "", "", {})
    except NotImplementedError:
        return False
    except Exception:
        return True  # upstream routes it (and failed on the empty solution, which is fine here)
    return True


def _import_upstream_default() -> Callable[..., Any]:
    import verl.utils.reward_score as upstream

    fn = upstream.default_compute_score
    return _upstream_fallback if fn in (compute_score, default_compute_score) else fn


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """DictConfig/ListConfig (what hydra hands over) to plain containers."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def _env_options() -> dict[str, dict[str, Any]]:
    return _parse_env_options(os.environ.get(OPTIONS_ENV, "").strip())


@functools.lru_cache(maxsize=8)
def _parse_env_options(raw: str) -> dict[str, dict[str, Any]]:
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{OPTIONS_ENV} is not valid JSON: {e}") from e
    if not isinstance(parsed, dict):
        raise ValueError(f"{OPTIONS_ENV} must be a JSON object of {{reward name: {{option: value}}}}")
    return parsed


def split_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Separate per-reward option namespaces from verl's own keyword arguments."""
    if not kwargs:
        return {}, {}
    names = set(registered_names()) | {ROUTING}
    options: dict[str, dict[str, Any]] = {}
    passthrough: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _UPSTREAM_KWARGS or key in _VERL_CONTEXT_KWARGS:
            passthrough[key] = value
        elif key in names:
            options[key] = _plain(value) or {}
            if not isinstance(options[key], dict):
                raise ValueError(f"reward_kwargs.{key} must be a mapping of options, got {value!r}")
        else:
            raise ValueError(
                f"reward_kwargs.{key}: no reward named {key!r} is registered "
                f"(registered: {', '.join(sorted(names))}); pass options as reward_kwargs.<name>.<option>=..."
            )
    return options, passthrough


def options_for(spec: RewardSpec, call_options: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = dict(_env_options().get(spec.name, {}))  # a copy: the parsed env JSON is cached
    merged.update(call_options.get(spec.name, {}))
    return merged


def check_options(reward_kwargs: Any = None, *, probe: bool = False) -> None:
    """Validate every reward's options before training: ``reward_kwargs`` as the recipe passes it
    to verl (``{<spec name>: {<option>: value}}``, a DictConfig is fine) merged over
    ``$VERLKIT_REWARD_OPTIONS``, each namespace parsed by its reward's options model, which loads
    and checks prompt templates. With ``probe``, a reward that defines ``check_options(options,
    probe)`` also checks its served model with real requests (structured-output constraints,
    log-probabilities): call it once the servers are up. Raises ``RewardOptionsError`` naming the
    reward and the option; returns None when everything fits.
    """
    from verl.utils.reward_score.options import RewardOptions, parse_options

    try:
        options, _ = split_kwargs(_plain(reward_kwargs) or {})
        names = set(options) | set(_env_options())
    except ValueError as e:
        raise RewardOptionsError(str(e)) from None
    unknown = sorted(names - set(registered_names()))
    if unknown:
        raise RewardOptionsError(f"{OPTIONS_ENV}: no reward named {', '.join(map(repr, unknown))} is registered "
                                 f"(registered: {', '.join(sorted(registered_names()))})")
    for spec in REWARDS:
        if spec.name not in names:
            continue
        merged = options_for(spec, options)
        module = inspect.getmodule(spec.function())
        check = getattr(module, "check_options", None)
        if callable(check):
            check(merged, probe=probe)
            continue
        models = [obj for obj in vars(module).values() if isinstance(obj, type) and issubclass(obj, RewardOptions)
                  and obj is not RewardOptions and obj.reward_name == spec.name]
        if models:
            parse_options(models[0], merged)


# ---------------------------------------------------------------------------------------------
# Result coercion
# ---------------------------------------------------------------------------------------------
def _to_float(value: Any) -> float:
    if type(value) is float:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def normalize_result(raw: Any, allowed: tuple[str, ...] = ()) -> dict[str, float]:
    """Any reward function output -> exactly ``result_keys()``, all floats."""
    out = dict(_Derived.current().template)
    if isinstance(raw, dict):
        if "score" not in raw:
            raise ValueError(f"reward result dict has no 'score' key: {sorted(raw)}")
        for key, value in raw.items():
            if key in out and (key in BASE_KEYS or key in allowed or not allowed):
                out[key] = _to_float(value)
    elif isinstance(raw, (list, tuple)):  # upstream convention: (score, ...)
        out["score"] = _to_float(raw[0])
    else:
        out["score"] = _to_float(raw)
    if not math.isfinite(out["score"]):
        raise ValueError(f"reward score is not a finite number: {raw!r}")
    if not (isinstance(raw, dict) and "acc" in raw):
        out["acc"] = out["score"]  # verl's convention for plain scores; an explicit acc (even NaN) is kept
    return out


def _failure(spec_name: str, data_source: str, exc: BaseException) -> dict[str, float]:
    key = (spec_name, type(exc).__name__)
    if key not in _logged_failures:
        _logged_failures.add(key)
        logger.error("reward %r failed on data_source=%r (first of its kind, further ones counted in reward_error): %r",
                     spec_name, data_source, exc, exc_info=exc)
    out = dict(_Derived.current().template)
    out.update(score=0.0, acc=0.0, reward_error=1.0)
    return out


# ---------------------------------------------------------------------------------------------
# Dispatch
# ---------------------------------------------------------------------------------------------
def _prepare(data_source, kwargs):
    """(spec or None for upstream, per-reward options, verl's own kwargs), by the ``routing`` options."""
    options, passthrough = split_kwargs(kwargs)
    routing = routing_options(options)
    spec = resolve(data_source, routing.match)
    if spec is None and routing.fallback == "rule":
        spec = spec_named(RULE_FALLBACK_REWARD)
    elif spec is None and routing.fallback == "error":
        raise UnknownDataSourceError(_unknown(data_source, f"{ROUTING}.fallback=error: upstream verl is not asked"))
    return spec, options, passthrough


def _unknown(data_source: str, why: str) -> str:
    return (f"no reward function for data_source={data_source!r} ({why}). Registered here: {describe_routes()}. "
            f"Add a module under verl/utils/reward_score/ and a line in REWARDS, or set {ROUTING}.fallback=rule "
            "to grade unrouted sources as math with the rule checker.")


def _call_upstream(data_source, solution_str, ground_truth, extra_info, passthrough):
    fallback = _upstream_fallback or _import_upstream_default()
    upstream_kwargs = {k: v for k, v in passthrough.items() if k in _UPSTREAM_KWARGS}
    try:
        return fallback(data_source, solution_str, ground_truth, extra_info, **upstream_kwargs)
    except NotImplementedError as e:
        raise UnknownDataSourceError(_unknown(data_source, "upstream verl does not know it either: it scores "
                                              "openai/gsm8k, MATH variants, math_dapo/aime*, numina_*, code "
                                              "sources, geometry3k, searchR1_*")) from e


async def compute_score_async(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict[str, float]:
    """Async dispatcher; recipes name it via ``reward.custom_reward_function``."""
    spec, options, passthrough = _prepare(data_source, kwargs)
    if spec is None:
        raw = _call_upstream(data_source, solution_str, ground_truth, extra_info, passthrough)
        return normalize_result(raw, allowed=("acc",))
    try:
        fn = spec.function()
        raw = fn(data_source, solution_str, ground_truth, extra_info or {}, **options_for(spec, options),
                 **spec.verl_context(passthrough))
        if inspect.isawaitable(raw):
            raw = await raw
        return normalize_result(raw, allowed=spec.metrics)
    except (asyncio.CancelledError, RewardOptionsError):
        raise
    except Exception as exc:
        return _failure(spec.name, data_source, exc)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict[str, float]:
    """Sync dispatcher (``reward.custom_reward_function.name=compute_score``); async reward functions run on
    this process's background event loop (``verlkit.clients.loop``), so verl's legacy/remote managers work too."""
    spec, options, passthrough = _prepare(data_source, kwargs)
    if spec is None:
        raw = _call_upstream(data_source, solution_str, ground_truth, extra_info, passthrough)
        return normalize_result(raw, allowed=("acc",))
    try:
        fn = spec.function()
        raw = fn(data_source, solution_str, ground_truth, extra_info or {}, **options_for(spec, options),
                 **spec.verl_context(passthrough))
        if inspect.isawaitable(raw):
            from verlkit.clients.loop import run_sync

            raw = run_sync(raw)
        return normalize_result(raw, allowed=spec.metrics)
    except RewardOptionsError:
        raise
    except Exception as exc:
        return _failure(spec.name, data_source, exc)


def default_compute_score(data_source, solution_str, ground_truth, extra_info=None, sandbox_fusion_url=None,
                          concurrent_semaphore=None, memory_limit_mb=None, **kwargs):
    """What the plugin installs as upstream's ``verl.utils.reward_score.default_compute_score``: a drop-in.

    Every source upstream verl scores gets exactly upstream's result (its float, or its dict for ``math_dapo``-style
    sources), so upstream's reward managers (the legacy ``prime`` one does ``float(result[0])`` on non-floats) and
    users' ``float(default_compute_score(...))`` keep working; upstream wins for a source both know
    (``openai/gsm8k``). Every other source goes to :func:`compute_score` (our rewards in the fixed schema, then
    ``routing.fallback``); one upstream does not know either raises :class:`UnknownDataSourceError`."""
    upstream = _upstream_fallback or _import_upstream_default()
    try:
        return upstream(data_source, solution_str, ground_truth, extra_info, sandbox_fusion_url=sandbox_fusion_url,
                        concurrent_semaphore=concurrent_semaphore, memory_limit_mb=memory_limit_mb)
    except UnknownDataSourceError:
        raise
    except NotImplementedError:
        pass  # upstream's "not implemented for this data_source": ours to score
    return compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
