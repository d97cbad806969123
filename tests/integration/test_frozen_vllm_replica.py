"""verl's RewardModelManager and router, unchanged, running our CPU replica (``rollout.name=vllm_cpu``):
it starts, serves through the router, survives verl's sleep/wake_up, is stopped by Ray, and a replica
killed in the middle of a batch gives flagged rows, not an exception.

Each scenario runs in its own process (tests/support/managed_replicas.py) with the CPU profile chosen.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.server_processes import pid_running

pytestmark = [pytest.mark.integration, pytest.mark.own_vllm_server]

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = REPO / "tests" / "support" / "managed_replicas.py"


def run_scenario(name: str, model_dir: Path, tmp_path: Path) -> dict:
    from verlkit.cpu_profile.overrides import env as cpu_env

    out = tmp_path / f"{name}.json"
    env = {**os.environ, **cpu_env(), "VERLKIT_RUN_DIR": str(tmp_path / "servers"),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    done = subprocess.run([sys.executable, str(SCENARIOS), name, "--model", str(model_dir), "--out", str(out)],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=2400)  # fmt: skip
    assert done.returncode == 0, f"scenario {name} failed:\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}"
    return json.loads(out.read_text())


def test_replica_starts_serves_survives_sleep_wake_up_and_is_stopped_by_ray(tiny_model_dir, tmp_path):
    seen = run_scenario("lifecycle", tiny_model_dir, tmp_path)
    status = seen["status"]
    # one replica, serving on 127.0.0.1 in a process group of its own, started on the actor's main thread
    assert status["started"] and status["alive"] and status["parent_death_signal"]
    assert status["pgid"] == status["pid"] and status["pid"] != status["actor_pid"]
    assert seen["server_addresses"] == [status["base_url"].removeprefix("http://").removesuffix("/v1")]
    assert seen["server_addresses"][0].startswith("127.0.0.1:")
    # the name the replica serves is the one verl's tokenizer carries: the model path
    assert status["model"] == seen["model_name"] == str(tiny_model_dir)
    # every row answered through the router (the reward was given only the router's address)
    for result in seen["first"] + seen["second"]:
        assert result["verifier_ok"] == 1.0 and result["verifier_failed"] == 0.0 and result["reward_error"] == 0.0
    assert seen["requests_in_server_log"] == 8
    # verl's wake_up/sleep cycle left the same server running
    assert seen["cycle"] == ["wake_up", "sleep", "wake_up"]
    assert seen["after_cycle"]["alive"] and seen["after_cycle"]["pid"] == status["pid"]
    # ray.shutdown() ended every vLLM process of the replica (the scenario waited for it)
    assert not [p for p in seen["after_cycle"]["pids"] if pid_running(p)]


def test_replica_killed_during_a_batch_flags_the_rows_it_could_not_answer(tiny_model_dir, tmp_path):
    seen = run_scenario("killed", tiny_model_dir, tmp_path)
    first, rest = seen["results"][0], seen["results"][1:]
    assert first["verifier_ok"] == 1.0 and first["verifier_failed"] == 0.0
    assert len(rest) == 5
    for result in rest:
        # flagged and counted like any verifier failure, scored by the rule fallback, never an exception
        assert result["verifier_failed"] == 1.0 and result["verifier_ok"] == 0.0
        assert result["reward_error"] == 0.0
        assert result["score"] == result["rule_correct"] == 0.0 and math.isfinite(result["score"])
    assert not [p for p in seen["status"]["pids"] if pid_running(p)]
