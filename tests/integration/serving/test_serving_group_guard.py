"""The group guard on plain processes (no vLLM): a server stand-in that leaves an "engine" process behind
(as vLLM's API server leaves VLLM::EngineCore when it is SIGKILLed) is ended with its whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from support.server_processes import group_members, pid_running, wait_for
from verlkit.serving.lifecycle import GROUP_GUARD

pytestmark = pytest.mark.integration

# A stand-in for the API server: starts an "engine" child in its own group that ignores SIGTERM (so only
# SIGKILL ends it), prints both PIDs, then sleeps or exits with code 3.
SERVER = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    engine = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    engine.stdout.readline()
    print(engine.pid, flush=True)
    if sys.argv[1] == "exit":
        sys.exit(3)
    time.sleep(600)
    """
)


def start_guarded(mode: str, grace_s: float = 1.0):
    guard = subprocess.Popen([sys.executable, str(GROUP_GUARD), str(grace_s), "--", sys.executable, "-c", SERVER, mode],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    engine = int(guard.stdout.readline())
    server = [p for p in group_members(guard.pid) if p not in (guard.pid, engine)]
    assert len(server) == 1 and pid_running(engine)
    return guard, server[0], engine


def test_sigterm_to_the_guard_ends_the_whole_group_escalating_to_sigkill():
    guard, server, engine = start_guarded("sleep")
    os.kill(guard.pid, signal.SIGTERM)
    assert guard.wait(timeout=60) == 143
    assert not pid_running(server) and not pid_running(engine)
    assert not group_members(guard.pid)


def test_a_server_that_exits_leaves_nothing_behind_and_its_code_is_the_guards():
    guard, server, engine = start_guarded("exit")
    assert guard.wait(timeout=60) == 3
    assert not group_members(guard.pid)


def test_a_sigkilled_guard_still_stops_its_server_by_the_parent_death_signal():
    guard, server, engine = start_guarded("sleep")
    guard.kill()
    guard.wait(timeout=60)
    # the server stand-in dies of SIGTERM (its parent-death signal); its engine, which ignores
    # SIGTERM, is what nothing can end once the guard is gone: vLLM's API server stops its engine
    # itself on SIGTERM, which is why the guard arms that signal
    wait_for(lambda: not pid_running(server), 30, "the server to get its parent-death signal")
    os.kill(engine, signal.SIGKILL)
