"""Independent checks of what a served model left behind, read straight from /proc and the state file
(not through verlkit.serving, whose own process helpers are what the tests check)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def pid_running(pid: int) -> bool:
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


def group_members(pgid: int) -> list[int]:
    """Running (non-zombie) PIDs of process group ``pgid``."""
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


def state(state_path: Path) -> dict:
    return json.loads(Path(state_path).read_text())


def recorded_pids(state_path: Path) -> list[int]:
    """The PIDs a state file records."""
    return [d["pid"] for d in state(state_path).get("pids", [])]


def wait_for(predicate, timeout_s: float, what: str):
    """Poll ``predicate`` (short backoff) until it returns a truthy value; that value."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)  # polling another process's progress; bounded by the deadline
        delay = min(delay * 1.5, 0.5)


def state_when_starting(state_path: Path):
    """A predicate for wait_for: the state file once it says ``starting`` and lists PIDs."""

    def check():
        try:
            current = state(state_path)
        except (FileNotFoundError, ValueError):
            return None
        return current if current.get("state") == "starting" and current.get("pids") else None

    return check


def forget_external_urls(monkeypatch) -> None:
    """Remove ``VERLKIT_*_URL`` from the environment: a test decides itself whether a server is external."""
    for key in [k for k in os.environ if k.startswith("VERLKIT_") and k.endswith("_URL")]:
        monkeypatch.delenv(key)
