"""kill_process_group on real process groups of plain processes (no vLLM): SIGTERM, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess

import pytest
from support.server_processes import group_members, pid_running, wait_for

from verlkit.serving.processes import kill_process_group

pytestmark = pytest.mark.integration


def test_kill_process_group_returns_true_on_clean_exit():
    group = subprocess.Popen(["sleep", "300"], start_new_session=True)
    assert kill_process_group(group.pid, [(group.pid, None)], grace_s=10, popen=group) is True
    assert group.returncode == -signal.SIGTERM


def test_kill_process_group_escalates_to_sigkill_and_reports_it():
    """Members that ignore SIGTERM are SIGKILLed after the grace period; the result says so."""
    group = subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 300 & wait"], start_new_session=True)
    try:
        members = wait_for(lambda: len(group_members(group.pid)) >= 2 and group_members(group.pid), 10, "the group")
        assert kill_process_group(group.pid, grace_s=0.5, popen=group) is False
        assert group.returncode == -signal.SIGKILL
        assert not [p for p in members if pid_running(p)]
    finally:
        if group.poll() is None:
            group.kill()
            group.wait()
