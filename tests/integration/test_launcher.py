"""The served-model launcher against the real CPU build of vLLM serving the tiny model.

Server starts are expensive here (35-120 s each), so:
- ready-server behaviour is checked on the shared session server (``vllm_server`` fixture);
- failure paths stop vLLM early (port check before start, a tiny ready timeout, a bogus model dir,
  a signal/crash during start-up) and cost seconds each;
- exactly one extra full start: the CLI ``serve`` -> SIGTERM test (marked HEAVY below).
Tests that start vLLM themselves are marked ``own_vllm_server`` and run before the session server
exists (tests/conftest.py), so at most one vLLM runs at a time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from verlkit.serving.launcher import (
    PortInUseError,
    ServerSpec,
    ServerStartError,
    kill_process_group,
    launch,
    probe,
    read_state,
)

pytestmark = pytest.mark.integration

PY = sys.executable


@pytest.fixture(autouse=True)
def _no_external_url_from_env(monkeypatch):
    for key in [k for k in os.environ if k.startswith("VERLKIT_") and k.endswith("_URL")]:
        monkeypatch.delenv(key)


def _alive(pid: int) -> bool:
    """os.kill(pid, 0), but a zombie (exited, not yet reaped) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _group_alive(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rfind(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in "ZX":
                out.append(int(entry.name))
    return out


def _recorded_pids(state_path: Path) -> list[int]:
    state = read_state(state_path)
    return [d["pid"] for d in state.get("pids", [])]


def _wait_for(predicate, timeout_s: float, what: str):
    """Poll ``predicate`` (short backoff) until it returns a truthy value."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def _state_when_starting(state_path: Path):
    def check():
        try:
            state = read_state(state_path)
        except (FileNotFoundError, ValueError):
            return None
        return state if state.get("state") == "starting" and state.get("pids") else None

    return check


# --------------------------------------------------------------------------------------------
# Failure paths (cheap)


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
    assert read_state(tmp_path / "busy.server.json")["state"] == "failed"


def test_missing_model_fails_fast_and_wait_ready_sees_it(tmp_path):
    with pytest.raises(ServerStartError, match="not found"):
        launch(ServerSpec(model=tmp_path / "nope", name="gone", run_dir=tmp_path))
    wait = subprocess.run(
        [PY, "-m", "verlkit.serving.launcher", "wait-ready", "--state", str(tmp_path / "gone.server.json"),
         "--timeout", "5"],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert wait.returncode == 1 and "failed" in wait.stderr and "gone.vllm.log" in wait.stderr


@pytest.mark.own_vllm_server
def test_never_ready_within_timeout_names_log_and_leaves_nothing(tiny_model_dir, tmp_path):
    spec = ServerSpec(model=tiny_model_dir, name="slow", run_dir=tmp_path, ready_timeout_s=3)
    with pytest.raises(ServerStartError) as err:
        launch(spec)
    msg = str(err.value)
    log = tmp_path / "slow.vllm.log"
    assert "not ready after 3s" in msg and str(log) in msg
    assert "vllm.entrypoints.openai.api_server" in msg  # the log's tail (our command line) is included
    state = read_state(tmp_path / "slow.server.json")
    assert state["state"] == "failed"
    pids = _recorded_pids(tmp_path / "slow.server.json")
    assert state["pgid"] in pids
    assert not [p for p in pids if _alive(p)]
    assert not _group_alive(state["pgid"])


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
    state = read_state(tmp_path / "run" / "bogus.server.json")
    assert not _group_alive(state["pgid"])


@pytest.mark.own_vllm_server
def test_sigint_during_startup_stops_the_group(tiny_model_dir, tmp_path):
    """The CLI gets SIGINT while vLLM is still starting: launch()'s handler stops the group."""
    cli = subprocess.Popen(
        [PY, "-m", "verlkit.serving.launcher", "serve", "--name", "intr", "--model", str(tiny_model_dir),
         "--run-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        state = _wait_for(_state_when_starting(tmp_path / "intr.server.json"), 120, "the server to start")
        cli.send_signal(signal.SIGINT)
        cli.wait(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode != 0
    assert not [p for p in _recorded_pids(tmp_path / "intr.server.json") if _alive(p)]
    assert not _group_alive(state["pgid"])
    assert read_state(tmp_path / "intr.server.json")["state"] in ("stopped", "failed")


@pytest.mark.own_vllm_server
def test_launcher_killed_by_sigkill_takes_the_server_down(tiny_model_dir, tmp_path):
    """A training process that crashes hard (SIGKILL: no atexit, no handlers) leaves no server."""
    script = textwrap.dedent(
        f"""
        from verlkit.serving.launcher import ServerSpec, launch
        launch(ServerSpec(model={str(tiny_model_dir)!r}, name="crash", run_dir={str(tmp_path)!r}))
        """
    )
    proc = subprocess.Popen([PY, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        state = _wait_for(_state_when_starting(tmp_path / "crash.server.json"), 120, "the server to start")
    finally:
        proc.kill()
        proc.wait()
    _wait_for(lambda: not _group_alive(state["pgid"]), 60, "the orphaned server group to exit")
    assert not [p for p in _recorded_pids(tmp_path / "crash.server.json") if _alive(p)]


def test_stop_command_escalates_to_sigkill(tmp_path):
    """`launcher stop --state` on a recorded group whose members ignore SIGTERM (real processes)."""
    group = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 300 & sleep 300 & wait"], start_new_session=True
    )
    kids = _wait_for(lambda: len(_group_alive(group.pid)) >= 3 and _group_alive(group.pid), 10, "the group")
    state_path = tmp_path / "fake.server.json"
    state_path.write_text(json.dumps({
        "name": "fake", "pgid": group.pid, "pid": group.pid, "external": False, "state": "ready",
        "pids": [{"pid": p, "start_time": None} for p in kids],
    }))  # fmt: skip
    try:
        # Generous timeout: `import verl` alone takes 5-45 s on these shared 2-core machines.
        out = subprocess.run(
            [PY, "-m", "verlkit.serving.launcher", "stop", "--state", str(state_path), "--grace", "1"],
            check=False, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        if _group_alive(group.pid):
            os.killpg(group.pid, signal.SIGKILL)
        group.wait(timeout=10)
    assert out.returncode == 0, out.stderr
    assert not [p for p in kids if _alive(p)] and not _group_alive(group.pid)
    assert read_state(state_path)["state"] == "stopped"


def test_kill_process_group_returns_true_on_clean_exit():
    group = subprocess.Popen(["sleep", "300"], start_new_session=True)
    assert kill_process_group(group.pid, [(group.pid, None)], grace_s=10, popen=group) is True
    assert group.returncode == -signal.SIGTERM


# --------------------------------------------------------------------------------------------
# On the shared session server


def test_session_server_is_ready_and_recorded(vllm_server):
    assert vllm_server.base_url.startswith("http://127.0.0.1:") and vllm_server.base_url.endswith("/v1")
    assert vllm_server.model_name == "tiny-verifier" and not vllm_server.external
    ok, reason, _ = probe(vllm_server.base_url, "tiny-verifier")
    assert ok, reason
    state = read_state(vllm_server.state_path)
    assert state["state"] == "ready" and state["base_url"] == vllm_server.base_url
    assert state["pgid"] == vllm_server.pgid == vllm_server.pid
    assert Path(state["log_path"]) == vllm_server.log_path and vllm_server.log_path.stat().st_size > 0
    assert vllm_server.pid in _recorded_pids(vllm_server.state_path) and _alive(vllm_server.pid)
    assert len([p for p in _recorded_pids(vllm_server.state_path) if _alive(p)]) >= 2
    # Bound to loopback only.
    assert state["host"] == "127.0.0.1"


def test_external_url_mode_uses_the_running_server(vllm_server, tmp_path):
    spec = ServerSpec(model="unused", name="judge", run_dir=tmp_path, external_url=vllm_server.base_url[: -len("/v1")])
    ext = launch(spec)
    assert ext.external and ext.base_url == vllm_server.base_url
    assert ext.model_name == "tiny-verifier"  # discovered from /v1/models
    assert ext.pid is None and not ext.pids
    state = read_state(tmp_path / "judge.server.json")
    assert state["external"] and state["state"] == "ready"
    ext.stop()
    ext.stop()
    assert vllm_server.is_alive()  # stop() of an external server is a no-op
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


def test_cli_serve_external_url_wait_ready_and_stop(vllm_server, tmp_path):
    """CLI plumbing without a new server: serve --external-url, wait-ready, SIGTERM."""
    cli = subprocess.Popen(
        [PY, "-m", "verlkit.serving.launcher", "serve", "--name", "ext", "--model", "unused", "--run-dir",
         str(tmp_path), "--external-url", vllm_server.base_url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait = subprocess.run(
            [PY, "-m", "verlkit.serving.launcher", "wait-ready", "--state", str(tmp_path / "ext.server.json"),
             "--timeout", "120"],
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
        [PY, "-m", "verlkit.serving.launcher", "serve", "--name", "cli-verifier", "--model", str(tiny_model_dir),
         "--run-dir", str(tmp_path), "--port", "0", "--ready-timeout", "420"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait = subprocess.run(
            [PY, "-m", "verlkit.serving.launcher", "wait-ready", "--state", str(state_path), "--timeout", "480"],
            check=False, capture_output=True, text=True, timeout=540,
        )  # fmt: skip
        assert wait.returncode == 0, wait.stderr + (cli.stderr.read() if cli.poll() is not None else "")
        base_url = wait.stdout.strip()
        assert cli.stdout.readline().strip() == base_url
        state = read_state(state_path)
        assert state["state"] == "ready" and state["supervised"]
        pids = _recorded_pids(state_path)
        # API server + engine core alive; short-lived helpers vLLM ran during start-up (model
        # registry inspection) are recorded too and may already be gone.
        assert state["pgid"] in pids and _alive(state["pgid"])
        assert len([p for p in pids if _alive(p)]) >= 2
        assert probe(base_url, "cli-verifier")[0]

        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=60) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
            subprocess.run([PY, "-m", "verlkit.serving.launcher", "stop", "--state", str(state_path)], check=False, timeout=300)
    assert not [p for p in pids if _alive(p)]
    assert not _group_alive(state["pgid"])
    assert read_state(state_path)["state"] == "stopped"


def test_classify_probe_refuses_a_generation_model_with_a_hint(vllm_server):
    """A causal LM served by mistake where a reward model is expected fails the readiness probe."""
    from verlkit.serving.launcher import probe

    ok, reason, _ = probe(vllm_server.base_url, vllm_server.model_name, timeout=60, task="classify")
    assert not ok and "classification probe answered" in reason

