"""``bash run_rubric.sh`` end to end on the CPU default, and what it leaves behind after a normal run,
a SIGINT in the middle of training and a trainer crash.

Every process of a run is tracked three ways: the PIDs the launcher recorded in
``<run>/verifier.server.json``, the trainer's process group in ``<run>/train.pgid``, and a snapshot of
the script's whole process tree (Ray's daemons and workers included) taken while training runs.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from support.processes import alive, process_tree

from verlkit.runs.summary import parse_step_metrics

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "VERLKIT_VERIFIER_URL", "CUDA_VISIBLE_DEVICES")}
    env.update(VK_PROFILE="cpu", LOGGER="console", VK_PYTHON=os.environ.get("VK_PYTHON", "python"), **extra)
    # the venv's python must be the one on PATH for the script
    import sys

    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _start(run_dir: Path, *args, **env):
    """The script in its own session, its console output to a file (a pipe nobody reads while the
    run goes on would fill up and block the script)."""
    out = open(run_dir.parent / "console.out", "w")  # noqa: SIM115 (closed by _output)
    proc = subprocess.Popen(["bash", str(REPO / "run_rubric.sh"), *args], cwd=REPO,
                            env=_env(RUN_DIR=str(run_dir), **env), stdout=out,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    proc.console = out
    return proc


def _output(proc) -> str:
    proc.console.close()
    return Path(proc.console.name).read_text(errors="replace")




def _recorded_pids(run_dir: Path) -> list[int]:
    pids = []
    state = run_dir / "verifier.server.json"
    if state.exists():
        data = json.loads(state.read_text())
        pids += [p for p in data.get("pids", []) if isinstance(p, int)]
        if data.get("pid"):
            pids.append(data["pid"])
    return pids


def _assert_nothing_left(run_dir: Path, snapshot):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and alive(snapshot):
        time.sleep(0.5)  # polling for process exit; bounded
    assert alive(snapshot) == [], "processes of the run survived it"
    for pid in _recorded_pids(run_dir):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    pgid_file = run_dir / "train.pgid"
    if pgid_file.exists():
        # killed members stay in the group as zombies until their parent reaps them: only live
        # members count (group_pids skips zombies), and reaping may take a moment under load
        from verlkit.serving.processes import group_pids

        pgid = int(pgid_file.read_text())
        deadline = time.monotonic() + 30
        while group_pids(pgid) and time.monotonic() < deadline:
            time.sleep(0.5)  # polling for process exit; bounded
        assert group_pids(pgid) == [], f"live processes left in the trainer's group {pgid}"


def _wait_for(path: Path, text: str, proc, timeout: float):
    """Wait until the run's log contains text, snapshotting the process tree as we go."""
    seen = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen |= process_tree(proc.pid)
        if path.exists() and text in path.read_text(errors="replace"):
            return seen
        if proc.poll() is not None:
            raise AssertionError(f"run ended early (rc={proc.returncode}): {_output(proc)[-4000:]}")
        time.sleep(1)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.own_vllm_server
def test_cpu_default_end_to_end_with_verifier_metrics(tmp_path):
    run_dir = tmp_path / "run"
    proc = _start(run_dir)
    snapshot = _wait_for(run_dir / "train.log", "step:1 ", proc, timeout=1500)
    proc.wait(timeout=1200)
    out = _output(proc)
    assert proc.returncode == 0, out[-6000:]
    steps = parse_step_metrics((run_dir / "train.log").read_text())
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        # every rollout went to the real verifier, and its counters are step metrics
        assert m["reward/verifier_called/mean"] == 1.0
        assert m["reward/verifier_ok/mean"] == 1.0, "the verifier answered every request"
        assert "reward/verifier_ok/mean" in m and "reward/cache_hit/mean" in m and "reward/latency_s/mean" in m
        assert "reward/verifier_failed/count" in m and "critic/score/mean" in m
    assert json.loads((run_dir / "metrics.json").read_text())["2"]["reward/verifier_called/mean"] == 1.0
    assert "reward/verifier_called/mean" in out  # the end-of-run summary table
    _assert_nothing_left(run_dir, snapshot)


def test_sigint_during_training_leaves_nothing_alive(tmp_path, tiny_model_dir, vllm_server):
    run_dir = tmp_path / "run"
    # The verifier comes from the session server (the launcher's own SIGINT handling is covered by
    # the normal run above and tests/integration/serving/); this test is about the trainer.
    proc = _start(run_dir, str(tiny_model_dir), "1", "", "True", str(tiny_model_dir), STEPS="50",
                  VERLKIT_VERIFIER_URL=vllm_server.base_url)
    snapshot = _wait_for(run_dir / "train.log", "Training Progress", proc, timeout=1500)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    proc.wait(timeout=300)
    assert proc.returncode != 0
    _assert_nothing_left(run_dir, snapshot)


def test_trainer_crash_leaves_nothing_alive_with_external_verifier(tmp_path, tiny_model_dir, vllm_server):
    run_dir = tmp_path / "run"
    # external-url mode (a server started separately) + a trainer that crashes after Ray started
    proc = _start(run_dir, str(tiny_model_dir), "1", "", "True", str(tiny_model_dir),
                  "--", "actor_rollout_ref.model.path=/nonexistent/model",
                  VERLKIT_VERIFIER_URL=vllm_server.base_url)
    seen = set()
    while proc.poll() is None:
        seen |= process_tree(proc.pid)
        time.sleep(0.5)
    out = _output(proc)
    assert proc.returncode != 0
    assert "verifier ready at " + vllm_server.base_url.rstrip("/") in out.replace("/v1/", "/v1")
    _assert_nothing_left(run_dir, seen)
    # the separately started server is not ours to stop
    assert vllm_server.is_alive()
