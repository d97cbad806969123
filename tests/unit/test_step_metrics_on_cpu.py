"""Reward step metrics: what is averaged, what is counted, and that every counted name is one a reward
actually returns (a count nobody emits would silently read as "no failures")."""

import ast
import math
from pathlib import Path

import pytest

import verl  # noqa: F401  (loads our plugin)
from verl.utils.reward_score import registry
from verlkit.plugin.step_metrics import COUNTED, COUNTED_FAILURES_OF, summarize

REWARD_FOLDER = Path(__file__).resolve().parents[2] / "verl" / "utils" / "reward_score"
NAN = math.nan


def _string_constants(module_file: Path) -> set[str]:
    return {n.value for n in ast.walk(ast.parse(module_file.read_text())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


# Modules a reward hands some of its rows to (tinyv's setup=hybrid is scored by hybrid.py).
DELEGATES = {"tinyv": ("hybrid",)}


def _emitters(key: str) -> list[str]:
    """Registered rewards that declare ``key`` AND whose module writes it (base keys: the registry itself)."""
    if key in registry.BASE_KEYS:
        return ["registry"]
    found = []
    for spec in registry.REWARDS:
        module = str(spec.target).partition(":")[0]
        written = set().union(*(_string_constants(REWARD_FOLDER / f"{m}.py") for m in (module, *DELEGATES.get(module, ()))))
        if key in spec.metrics and key in written:
            found.append(spec.name)
    return found


@pytest.mark.parametrize("key", COUNTED)
def test_every_counted_name_is_declared_and_returned_by_a_reward(key):
    assert _emitters(key), f"{key} is counted but no registered reward declares and returns it"


@pytest.mark.parametrize("key", sorted(COUNTED_FAILURES_OF))
def test_every_counted_success_flag_is_returned_by_a_reward(key):
    assert _emitters(key)


def test_downstream_outages_are_counted_by_the_reward_that_has_them():
    assert _emitters("downstream_failed") == ["cgp"]
    assert set(_emitters("rule_failed")) == {"tinyv", "rlcr", "math_rule"}


def test_summary_counts_failures_and_averages_the_rest():
    out = summarize({
        "downstream_failed": [0.0, 1.0, NAN, 1.0],
        "parse_ok": [1.0, 0.0, NAN, 0.0],
        "latency_s": [1.0, 3.0, NAN, NAN],
        "confidence": [NAN, NAN],
    })
    assert out == {
        "reward/downstream_failed/mean": pytest.approx(2 / 3), "reward/downstream_failed/count": 2.0,
        "reward/parse_ok/mean": pytest.approx(1 / 3), "reward/parse_fail/count": 2.0,
        "reward/latency_s/mean": 2.0,
    }
