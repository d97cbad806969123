"""The first process of a served model's process group: starts the server, and ends the whole group.

(The recipe drivers start their trainers under it too, for the same reason: a trainer killed or left
without a word leaves Ray's daemons behind; see ``recipes.driver.Run.run_process``.)

``launch`` does not start vLLM directly but ``python -m verlkit.serving.group_guard GRACE_S -- <vLLM
command>`` as the leader of a new process group; the guard starts the vLLM API server as its child in
that group and waits. Why a process of its own: vLLM's API server runs its engine in a second process
(``VLLM::EngineCore``) that does not watch its parent, so when the API server is killed without a
chance to shut down (SIGKILL), the engine keeps running, holding gigabytes of memory. That happens
to the direct child of a Ray actor whenever the actor is killed: Ray SIGKILLs the direct children of a
worker that exits (``RAY_kill_child_processes_on_worker_exit``). With the guard in between:

* the guard gets SIGTERM/SIGINT/SIGHUP (``ServedModel.stop``, or the parent-death signal when the
  launching thread dies): it sends SIGTERM to every other member of the group, waits up to GRACE_S for
  them to go, SIGKILLs what is left, and exits;
* the API server exits on its own (crash, bad model): the guard ends what it left behind (an engine
  process) the same way and exits with the server's exit code, so ``launch`` sees the failure;
* the guard itself is SIGKILLed (a Ray actor killed): the API server gets SIGTERM from its own
  parent-death signal (armed here, in the child, before vLLM starts) and shuts its engine down.

Standard library only, and nothing of ``verlkit`` (it must start in milliseconds).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stop(Exception):
    pass


def _others_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) members of ``pgid`` other than this process."""
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def end_group(pgid: int, grace_s: float, child: subprocess.Popen | None = None) -> None:
    """SIGTERM every other member of the group, wait up to ``grace_s``, then SIGKILL the rest."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _others_in_group(pgid):
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            if child is not None:
                child.poll()  # reap our own child, so it stops counting
            if not _others_in_group(pgid):
                return
            time.sleep(0.1)  # waiting on other processes' exit: nothing to block on but /proc


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the guard dies (even by SIGKILL)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m verlkit.serving.group_guard GRACE_S -- COMMAND...", file=sys.stderr)
        return 2
    grace_s, command = float(argv[0]), argv[2:]

    def stop(signum, frame):
        raise _Stop

    for sig in _STOP_SIGNALS:
        signal.signal(sig, stop)
    pgid = os.getpgrp()
    child = None
    code = 1
    try:
        child = subprocess.Popen(command, preexec_fn=_die_with_parent)  # noqa: PLW1509 (one foreign call)
        code = child.wait()
    except _Stop:
        code = 143
    finally:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # one ending at a time
        end_group(pgid, grace_s, child)
    if child is not None and child.returncode is not None:
        code = child.returncode if child.returncode >= 0 else 128 - child.returncode
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
