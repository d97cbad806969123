"""The ``<run_dir>/<role>.server.json`` state file: what a launch started, for other processes.

``launch`` writes it (``state``: ``starting`` -> ``ready`` | ``failed``, then ``stopped`` or ``died``;
``base_url``, ``served_model_name``, ``pgid``, every PID seen with its start time, ``log_path``, and the
launching process). Shell scripts and the command line read it to wait for readiness and to stop a
server whose launcher they cannot reach any more. Writes are atomic (a reader never sees half a file).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from verlkit.serving.processes import STOP_GRACE_S, kill_process_group, pid_alive, signal_pid
from verlkit.serving.spec import ServerStartError

# Final states: wait-ready gives up on these.
FINAL_STATES = ("failed", "stopped", "died")


def write_state(path: Path, state: dict) -> None:
    """Replace the state file atomically (write a temporary file next to it, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_state(path: Path) -> dict:
    """The state file's content; errors name the file."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no launcher state file at {path}") from None
    except ValueError as e:
        raise ValueError(f"launcher state file {path} is not valid JSON: {e}") from None


def update_state(path: Path, **fields) -> dict:
    """Set ``fields`` in the state file, keeping the others (a missing or unreadable file starts
    empty). Returns the new state."""
    try:
        state = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        state = {}
    state.update(fields)
    write_state(path, state)
    return state


def stop_from_state(path: Path, grace_s: float = STOP_GRACE_S) -> list[int]:
    """Stop what a state file records: its supervisor (``serve``), process group and PIDs.
    Returns the recorded PIDs still alive afterwards (empty on success)."""
    state = read_state(path)
    launcher_pid, launcher_st = state.get("launcher_pid"), state.get("launcher_start_time")
    supervised = bool(launcher_pid and launcher_pid != os.getpid() and state.get("supervised"))
    if supervised:
        # The supervisor stops its group itself. For an external server it is the only process we
        # own: it waits for this signal and must not outlive the run.
        signal_pid(launcher_pid, launcher_st, signal.SIGTERM)
    if state.get("external"):
        deadline = time.monotonic() + grace_s
        while supervised and pid_alive(launcher_pid, launcher_st) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling another process's exit (not our child: nothing to wait on)
        if supervised and pid_alive(launcher_pid, launcher_st):
            signal_pid(launcher_pid, launcher_st, signal.SIGKILL)
        return []
    pids = [(d["pid"], d.get("start_time")) for d in state.get("pids", [])]
    if state.get("pgid"):
        kill_process_group(int(state["pgid"]), pids, grace_s)
    if supervised:
        deadline = time.monotonic() + grace_s
        while pid_alive(launcher_pid, launcher_st) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling another process's exit
    alive = [p for p, st in pids if pid_alive(p, st)]
    if state.get("state") != "stopped":
        state["state"] = "stopped"
        write_state(path, state)
    return alive


def wait_ready_from_state(path: Path, timeout_s: float) -> dict:
    """Block until the state file says ``ready`` (returns the state); raise ServerStartError when it
    says failed/stopped/died, when the launching process died, or after ``timeout_s``."""
    path = Path(path)
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        state = None
        if path.exists():
            try:
                state = read_state(path)
            except ValueError:
                state = None  # being replaced right now
        if state:
            if state.get("state") == "ready":
                return state
            if state.get("state") in FINAL_STATES:
                raise ServerStartError(
                    f"server {state.get('name')!r} is {state['state']}: {state.get('error', '')} "
                    f"(log: {state.get('log_path')})"
                )
            lp = state.get("launcher_pid")
            if lp and not pid_alive(lp, state.get("launcher_start_time")):
                raise ServerStartError(
                    f"the launcher (pid {lp}) of {state.get('name')!r} died before the server was ready "
                    f"(log: {state.get('log_path')})"
                )
        if time.monotonic() > deadline:
            raise ServerStartError(f"{path} did not say ready within {timeout_s:.0f}s")
        time.sleep(delay)  # polling a file written by another process
        delay = min(delay * 1.5, 1.0)
