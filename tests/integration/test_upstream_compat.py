"""Installing verlkit leaves upstream verl's answers alone: the same calls with our plugin and without it
(``VERL_USE_EXTERNAL_PLUGINS=none``) give the same types and values for every upstream data source
tried, and upstream's reward managers (the legacy ``prime`` one, which does ``float(result[0])``, the
legacy ``naive`` one and the reward loop's ``naive``) score the same batch the same way.

Two fresh interpreters run ``tests/support/upstream_probe.py`` (~20 s each: ``import verl`` and the
prime manager's 64-process pool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROBE = Path(__file__).resolve().parents[1] / "support" / "upstream_probe.py"


def probe(tokenizer_dir: Path, **env) -> dict:
    full_env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"}
    full_env.update(env)
    out = subprocess.run([sys.executable, str(PROBE), str(tokenizer_dir)], env=full_env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tiny_model_dir):
    return probe(tiny_model_dir), probe(tiny_model_dir, VERL_USE_EXTERNAL_PLUGINS="none")


def test_the_two_runs_differ_only_in_who_dispatches(runs):
    with_plugin, without = runs
    assert with_plugin["dispatcher"] == "verl.utils.reward_score.registry"
    assert without["dispatcher"] == "verl.utils.reward_score"


def test_default_compute_score_returns_upstreams_type_and_value_for_every_upstream_source(runs):
    with_plugin, without = runs
    for i, (ours, theirs) in enumerate(zip(with_plugin["calls"], without["calls"], strict=True)):
        assert ours == theirs, f"call {i}"
    calls = with_plugin["calls"]
    assert calls[0] == {"type": "float", "value": 1.0}  # gsm8k right: a float, not our dict
    assert calls[1] == {"type": "float", "value": 0.0}
    assert calls[9] == {"type": "dict", "items": {"acc": {"type": "bool", "value": True},
                                                  "pred": {"type": "str", "value": "33"},
                                                  "score": {"type": "float", "value": 1.0}}}  # math_dapo
    assert calls[14] == {"type": "float", "value": 0.5}  # apps: one of two tests passes
    assert calls[-1] == {"raises": "NotImplementedError"}  # unknown to everyone, as upstream says it


def test_upstream_reward_managers_score_a_batch_alike(runs):
    with_plugin, without = runs
    assert with_plugin["managers"] == without["managers"]
    # gsm8k right, wrong; MATH right, wrong; numina right, wrong
    expected = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]
    assert with_plugin["managers"]["prime"] == expected
    assert with_plugin["managers"]["legacy_naive"] == expected
    assert [r["value"] for r in with_plugin["managers"]["reward_loop_naive"]] == expected
