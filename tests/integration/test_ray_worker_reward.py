"""Our reward modules are used inside Ray workers, with no PYTHONPATH set, through the plugin alone."""

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TREE = Path(__file__).resolve().parents[2] / "verl"


def test_registered_module_runs_inside_a_ray_worker():
    ray = pytest.importorskip("ray")
    env = {"env_vars": {"PYTHONPATH": ""}, "working_dir": None}
    # address="local": never join a cluster some other process left running.
    ray.init(address="local", num_cpus=1, include_dashboard=False, runtime_env=env)
    try:
        @ray.remote
        def score_in_worker():
            import sys as worker_sys

            import verl.utils.reward_score as rs

            result = rs.default_compute_score("grade", "Total Score: 8/10", "0.8")
            module = worker_sys.modules["verl.utils.reward_score.grade"]
            return os.getpid(), result, module.__file__, rs.default_compute_score.__module__

        pid, result, module_file, dispatcher = ray.get(score_in_worker.remote(), timeout=300)
    finally:
        ray.shutdown()
    assert pid != os.getpid()
    assert dispatcher == "verl.utils.reward_score.registry"
    assert Path(module_file).resolve() == TREE / "utils" / "reward_score" / "grade.py"
    assert result["score"] == 1.0 and result["reward_error"] == 0.0
