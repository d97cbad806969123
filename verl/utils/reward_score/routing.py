"""How the registry matches a row's ``data_source`` to a reward, and what scores the sources it does not route.

The options live in the registry's option space under the reserved namespace ``routing`` (no reward
may take that name), set like any reward's options::

    +reward.custom_reward_function.reward_kwargs.routing.match=original
    +reward.custom_reward_function.reward_kwargs.routing.fallback=rule
    VERLKIT_REWARD_OPTIONS='{"routing": {"match": "original", "fallback": "rule"}}'

``match``:

- ``strict`` (default): a name is compared as written: a spec's exact names first, then its longest
  matching prefix or suffix rule (``polaris_tinyv`` ends with ``_tinyv``).
- ``original``: as the original RRM/TinyV code compared names: stripped and case-insensitive
  (``" Grade"`` is ``grade``), and a suffix rule matches anywhere in the name (``polaris_tinyv_hard``
  contains ``_tinyv``). Longest rule still wins.

``fallback`` (a source no spec routes):

- ``upstream`` (default): upstream verl's own dispatcher scores it; a source it does not know either
  is an :class:`UnknownDataSourceError` naming what is registered.
- ``error``: :class:`UnknownDataSourceError` at once; only our specs score.
- ``rule``: the rule-based math grader (the ``math_rule`` spec: math-verify on the final answer,
  bounded in time), as the original fell back to its rule grader (``prime_math``) for every source
  without the ``_tinyv`` tag, so that math validation sets (``MATH``, ``aime24``, ...) score.

This module is pure (no registry import): the registry calls :func:`route` with its specs.
"""

from __future__ import annotations

from typing import ClassVar, Iterable, Literal, Protocol

from verl.utils.reward_score.options import RewardOptions

NAMESPACE = "routing"
RULE_FALLBACK_REWARD = "math_rule"  # the spec that scores unrouted sources under fallback=rule
Match = Literal["strict", "original"]
Fallback = Literal["upstream", "error", "rule"]


class UnknownDataSourceError(KeyError, NotImplementedError):
    """No reward scores this ``data_source``. A ``NotImplementedError`` too, as upstream verl raises for an
    unknown source, so code written against upstream's dispatcher catches it unchanged."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class RoutingOptions(RewardOptions):
    """``reward_kwargs.routing.*``: see the module docstring."""

    reward_name: ClassVar[str] = NAMESPACE
    match: Match = "strict"
    fallback: Fallback = "upstream"


class Routable(Protocol):
    exact: tuple[str, ...]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]


def route(data_source: str, specs: Iterable[Routable], match: str = "strict"):
    """The spec whose rules match ``data_source`` (exact names first, then the longest rule), or None."""
    specs = list(specs)
    original = match == "original"
    name = data_source.strip().lower() if original else data_source
    for spec in specs:
        if name in (tuple(e.strip().lower() for e in spec.exact) if original else spec.exact):
            return spec
    best, best_len = None, -1
    for spec in specs:
        for rule in spec.prefixes:
            if (name.startswith(rule.lower()) if original else name.startswith(rule)) and len(rule) > best_len:
                best, best_len = spec, len(rule)
        for rule in spec.suffixes:
            if (rule.lower() in name if original else name.endswith(rule)) and len(rule) > best_len:
                best, best_len = spec, len(rule)
    return best
