"""``launch(spec)`` against the real CPU build of vLLM serving the tiny model.

Server starts are expensive here (35-120 s each), so ready-server behaviour is checked on the shared
session server (``vllm_server`` fixture), and failure paths stop vLLM early (port check before start,
a tiny ready timeout, a bogus model dir, a crash of the launching process) and cost seconds each.
Tests that start vLLM themselves are marked ``own_vllm_server`` and run before the session server
exists (tests/conftest.py), so at most one vLLM runs at a time.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.server_processes import (
    group_members,
    pid_running,
    recorded_pids,
    state,
    state_when_starting,
    wait_for,
)

from verlkit.serving import PortInUseError, ServerSpec, ServerStartError, launch, probe

pytestmark = pytest.mark.integration


def test_port_in_use_is_a_clear_error_before_starting_vllm(tiny_model_dir, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(PortInUseError) as err:
            launch(ServerSpec(model=tiny_model_dir, name="busy", port=port, run_dir=tmp_path))
        assert time.monotonic() - t0 < 10  # refused up front, vLLM never started
    msg = str(err.value)
    log = tmp_path / "busy.vllm.log"
    assert str(port) in msg and str(log) in msg
    assert "already in use" in log.read_text()
    assert state(tmp_path / "busy.server.json")["state"] == "failed"


@pytest.mark.own_vllm_server
def test_never_ready_within_timeout_names_log_and_leaves_nothing(tiny_model_dir, tmp_path):
    spec = ServerSpec(model=tiny_model_dir, name="slow", run_dir=tmp_path, ready_timeout_s=3)
    with pytest.raises(ServerStartError) as err:
        launch(spec)
    msg = str(err.value)
    log = tmp_path / "slow.vllm.log"
    assert "not ready after 3s" in msg and str(log) in msg
    assert "vllm.entrypoints.openai.api_server" in msg  # the log's tail (our command line) is included
    final = state(tmp_path / "slow.server.json")
    assert final["state"] == "failed"
    pids = recorded_pids(tmp_path / "slow.server.json")
    assert final["pgid"] in pids
    assert not [p for p in pids if pid_running(p)]
    assert not group_members(final["pgid"])


@pytest.mark.own_vllm_server
def test_not_a_model_dies_with_log_tail(tmp_path):
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    with pytest.raises(ServerStartError) as err:
        launch(ServerSpec(model=bogus, name="bogus", run_dir=tmp_path / "run", ready_timeout_s=300))
    msg = str(err.value)
    assert "exited with code" in msg and str(tmp_path / "run" / "bogus.vllm.log") in msg
    assert "no-such-architecture" in msg  # vLLM's own error, from the log's last lines
    assert not group_members(state(tmp_path / "run" / "bogus.server.json")["pgid"])


@pytest.mark.own_vllm_server
def test_launcher_killed_by_sigkill_takes_the_server_down(tiny_model_dir, tmp_path):
    """A training process that crashes hard (SIGKILL: no atexit, no handlers) leaves no server."""
    script = textwrap.dedent(
        f"""
        from verlkit.serving import ServerSpec, launch
        launch(ServerSpec(model={str(tiny_model_dir)!r}, name="crash", run_dir={str(tmp_path)!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        starting = wait_for(state_when_starting(tmp_path / "crash.server.json"), 120, "the server to start")
    finally:
        proc.kill()
        proc.wait()
    wait_for(lambda: not group_members(starting["pgid"]), 60, "the orphaned server group to exit")
    assert not [p for p in recorded_pids(tmp_path / "crash.server.json") if pid_running(p)]


# --------------------------------------------------------------------------------------------
# On the shared session server


def test_session_server_is_ready_and_recorded(vllm_server):
    assert vllm_server.base_url.startswith("http://127.0.0.1:") and vllm_server.base_url.endswith("/v1")
    assert vllm_server.model_name == "tiny-verifier" and not vllm_server.external
    ok, reason, _ = probe(vllm_server.base_url, "tiny-verifier")
    assert ok, reason
    recorded = state(vllm_server.state_path)
    assert recorded["state"] == "ready" and recorded["base_url"] == vllm_server.base_url
    assert recorded["pgid"] == vllm_server.pgid == vllm_server.pid
    assert Path(recorded["log_path"]) == vllm_server.log_path and vllm_server.log_path.stat().st_size > 0
    assert vllm_server.pid in recorded_pids(vllm_server.state_path) and pid_running(vllm_server.pid)
    assert len([p for p in recorded_pids(vllm_server.state_path) if pid_running(p)]) >= 2
    # Bound to loopback only.
    assert recorded["host"] == "127.0.0.1"


def test_external_url_mode_uses_the_running_server(vllm_server, tmp_path):
    spec = ServerSpec(model="unused", name="judge", run_dir=tmp_path, external_url=vllm_server.base_url[: -len("/v1")])
    with launch(spec) as ext:
        assert ext.external and ext.base_url == vllm_server.base_url
        assert ext.model_name == "tiny-verifier"  # discovered from /v1/models
        assert ext.pid is None and not ext.pids
        recorded = state(tmp_path / "judge.server.json")
        assert recorded["external"] and recorded["state"] == "ready"
    ext.stop()  # again, after the with block stopped it
    assert vllm_server.is_alive()  # stopping an external server is a no-op
    assert probe(vllm_server.base_url, "tiny-verifier")[0]


def test_external_url_from_env_var(vllm_server, tmp_path, monkeypatch):
    monkeypatch.setenv("VERLKIT_TEACHER_URL", vllm_server.base_url)
    ext = launch(ServerSpec(model="unused", name="teacher", served_model_name="tiny-verifier", run_dir=tmp_path))
    assert ext.external and ext.model_name == "tiny-verifier"


def test_external_url_wrong_model_or_dead_server_is_an_error(vllm_server, tmp_path):
    with pytest.raises(ServerStartError, match="does not list 'other'"):
        launch(ServerSpec(model="x", name="judge", served_model_name="other", run_dir=tmp_path,
                          external_url=vllm_server.base_url, ready_timeout_s=1))  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    with pytest.raises(ServerStartError, match=f"127.0.0.1:{dead_port}"):
        launch(ServerSpec(model="x", name="judge", run_dir=tmp_path,
                          external_url=f"http://127.0.0.1:{dead_port}", ready_timeout_s=1))  # fmt: skip


def test_classify_probe_refuses_a_generation_model_with_a_hint(vllm_server):
    """A causal LM served by mistake where a reward model is expected fails the readiness probe."""
    ok, reason, _ = probe(vllm_server.base_url, vllm_server.model_name, timeout=60, task="classify")
    assert not ok and "classification probe answered" in reason
