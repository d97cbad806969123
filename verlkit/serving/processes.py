"""Processes a server is made of: liveness, process groups, stopping them, ports to bind.

Liveness comes from ``/proc`` (Linux): a zombie counts as dead, and a PID recorded together with its
start time is only "alive" while that same process runs, so a recycled PID is never signalled.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

STOP_GRACE_S = 15.0
# After SIGKILL: how long to wait for the kernel to take the processes away before giving up.
_AFTER_SIGKILL_S = 5.0


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, start_time) of a PID from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rfind(")") + 2 :].split()  # the command name may contain spaces/parentheses
    return rest[0], int(rest[2]), int(rest[19])


def start_time(pid: int) -> int | None:
    """The start time of ``pid`` (clock ticks after boot, from /proc), None if it does not exist."""
    stat = proc_stat(pid)
    return stat[2] if stat else None


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, started at ``start_time``."""
    stat = proc_stat(pid)
    if stat is None:
        if not Path("/proc").is_dir():  # non-Linux fallback
            try:
                os.kill(pid, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return False
    state, _, started = stat
    return state not in ("Z", "X") and (start_time is None or started == start_time)


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs whose process group is ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid`` (those that left its process group too)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group; a group that is gone (or not ours) is no error."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_pid(pid: int, start_time: int | None, sig: int) -> None:
    """Send ``sig`` to ``pid`` only if it is still the process recorded (same start time)."""
    if pid_alive(pid, start_time):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_process_group(
    pgid: int,
    pids: list[tuple[int, int | None]] = (),
    grace_s: float = STOP_GRACE_S,
    popen: subprocess.Popen | None = None,
) -> bool:
    """SIGTERM the group (and recorded ``(pid, start_time)`` pairs that left it), wait up to ``grace_s``,
    then SIGKILL.

    Returns True if everything was gone within the grace period. ``popen`` (our own child) is
    reaped so it does not linger as a zombie.
    """

    def remaining() -> bool:
        if group_pids(pgid) or any(pid_alive(p, st) for p, st in pids):
            return True
        # Polled only after the group is seen empty: a child that exits between a poll and the
        # group scan is a zombie the scan skips, and must still be reaped here.
        if popen is not None and popen.returncode is None:
            try:
                popen.wait(timeout=_AFTER_SIGKILL_S)
            except subprocess.TimeoutExpired:
                return True
        return False

    signal_group(pgid, signal.SIGTERM)
    for p, st in pids:
        signal_pid(p, st, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    delay = 0.05
    while remaining():
        if time.monotonic() >= deadline:
            logger.warning("process group %d still alive after %.0fs: SIGKILL", pgid, grace_s)
            signal_group(pgid, signal.SIGKILL)
            for p, st in pids:
                signal_pid(p, st, signal.SIGKILL)
            kill_deadline = time.monotonic() + _AFTER_SIGKILL_S
            while remaining() and time.monotonic() < kill_deadline:
                wait_on_child(popen, 0.05)
            return False
        wait_on_child(popen, delay)
        delay = min(delay * 1.5, 0.5)
    return True


def wait_on_child(popen: subprocess.Popen | None, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when our child ``popen`` exits (plain sleep without one:
    other processes' exits cannot be waited on)."""
    if popen is not None and popen.returncode is None:
        try:
            popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
    else:
        time.sleep(seconds)


def parent_death_hook():
    """A ``preexec_fn`` making the child get SIGTERM when the launching thread dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), even by SIGKILL; None where unavailable. libc is resolved here, in
    the parent, so the child runs one foreign call between fork and exec (no imports or allocations
    that could deadlock)."""
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return hook


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Can a server bind and listen on host:port? (SO_REUSEADDR like uvicorn, so a port in
    TIME_WAIT after our own previous server counts as free.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
    return True
