"""``python -m verlkit.serving serve|wait-ready|stop`` with real processes and the real CPU vLLM.

Exactly one full server start happens here (the ``serve`` -> SIGTERM test, 35-120 s); the others stop
vLLM during start-up, use the shared session server as an external one, or use plain processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from support.server_processes import (
    group_members,
    pid_running,
    recorded_pids,
    state,
    state_when_starting,
    wait_for,
)

from verlkit.serving import ServerSpec, ServerStartError, launch, probe

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "verlkit.serving"]


def test_missing_model_fails_fast_and_wait_ready_sees_it(tmp_path):
    with pytest.raises(ServerStartError, match="not found"):
        launch(ServerSpec(model=tmp_path / "nope", name="gone", run_dir=tmp_path))
    wait = subprocess.run(
        [*CLI, "wait-ready", "--state", str(tmp_path / "gone.server.json"), "--timeout", "5"],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wait.returncode == 1 and "failed" in wait.stderr and "gone.vllm.log" in wait.stderr


@pytest.mark.own_vllm_server
def test_sigint_during_startup_stops_the_group(tiny_model_dir, tmp_path):
    """`serve` gets SIGINT while vLLM is still starting: launch()'s handler stops the group."""
    cli = subprocess.Popen(
        [*CLI, "serve", "--name", "intr", "--model", str(tiny_model_dir), "--run-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        starting = wait_for(state_when_starting(tmp_path / "intr.server.json"), 120, "the server to start")
        cli.send_signal(signal.SIGINT)
        cli.wait(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode != 0
    assert not [p for p in recorded_pids(tmp_path / "intr.server.json") if pid_running(p)]
    assert not group_members(starting["pgid"])
    assert state(tmp_path / "intr.server.json")["state"] in ("stopped", "failed")


def test_stop_command_escalates_to_sigkill(tmp_path):
    """`stop --state` on a recorded group whose members ignore SIGTERM (real processes)."""
    group = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"], start_new_session=True)
    kids = wait_for(lambda: len(group_members(group.pid)) >= 3 and group_members(group.pid), 10, "the group")
    state_path = tmp_path / "fake.server.json"
    state_path.write_text(json.dumps({
        "name": "fake", "pgid": group.pid, "pid": group.pid, "external": False, "state": "ready",
        "pids": [{"pid": p, "start_time": None} for p in kids],
    }))  # fmt: skip
    try:
        out = subprocess.run(
            [*CLI, "stop", "--state", str(state_path), "--grace", "1"],
            check=False, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        if group_members(group.pid):
            os.killpg(group.pid, signal.SIGKILL)
        group.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    assert not [p for p in kids if pid_running(p)] and not group_members(group.pid)
    assert state(state_path)["state"] == "stopped"


def test_cli_serve_external_url_wait_ready_and_stop(vllm_server, tmp_path):
    """CLI plumbing without a new server: serve --external-url, wait-ready, SIGTERM."""
    cli = subprocess.Popen(
        [*CLI, "serve", "--name", "ext", "--model", "unused", "--run-dir", str(tmp_path),
         "--external-url", vllm_server.base_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait = subprocess.run(
            [*CLI, "wait-ready", "--state", str(tmp_path / "ext.server.json"), "--timeout", "120"],
            check=False, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        assert wait.returncode == 0, wait.stderr
        assert wait.stdout.strip() == vllm_server.base_url
        assert cli.stdout.readline().strip() == vllm_server.base_url
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert vllm_server.is_alive()


# --------------------------------------------------------------------------------------------
# HEAVY: one full CLI start (35-120 s)


@pytest.mark.own_vllm_server
def test_cli_serve_in_background_then_sigterm_leaves_no_process(tiny_model_dir, tmp_path):
    state_path = tmp_path / "cli-verifier.server.json"
    cli = subprocess.Popen(
        [*CLI, "serve", "--name", "cli-verifier", "--model", str(tiny_model_dir), "--run-dir", str(tmp_path),
         "--port", "0", "--ready-timeout", "420"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait = subprocess.run(
            [*CLI, "wait-ready", "--state", str(state_path), "--timeout", "480"],
            check=False, capture_output=True, text=True, timeout=540,
        )  # fmt: skip
        assert wait.returncode == 0, wait.stderr + (cli.stderr.read() if cli.poll() is not None else "")
        base_url = wait.stdout.strip()
        assert cli.stdout.readline().strip() == base_url
        ready = state(state_path)
        assert ready["state"] == "ready" and ready["supervised"]
        pids = recorded_pids(state_path)
        # API server + engine core alive; short-lived helpers vLLM ran during start-up (model
        # registry inspection) are recorded too and may already be gone.
        assert ready["pgid"] in pids and pid_running(ready["pgid"])
        assert len([p for p in pids if pid_running(p)]) >= 2
        assert probe(base_url, "cli-verifier")[0]

        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
            subprocess.run([*CLI, "stop", "--state", str(state_path)], check=False, timeout=300)
    assert not [p for p in pids if pid_running(p)]
    assert not group_members(ready["pgid"])
    assert state(state_path)["state"] == "stopped"
