"""Process and port helpers, checked on this test process itself (nothing is started or killed)."""

import os

from verlkit.serving.processes import (
    group_pids,
    parent_death_hook,
    pid_alive,
    proc_stat,
    start_time,
)


def _unused_pid() -> int:
    """A PID no process has right now (searched from the top of the PID range, where PIDs are rarely in use)."""
    pid_max = int(open("/proc/sys/kernel/pid_max").read())
    for pid in range(pid_max - 1, 1, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise AssertionError("no free PID")


def test_this_process_is_alive_with_its_own_start_time_only():
    me = os.getpid()
    started = start_time(me)
    assert isinstance(started, int) and started > 0
    assert pid_alive(me) and pid_alive(me, started)
    assert not pid_alive(me, started + 1)  # a recycled PID: same number, another process


def test_a_pid_without_a_process_is_dead():
    pid = _unused_pid()
    assert proc_stat(pid) is None and start_time(pid) is None
    assert not pid_alive(pid)


def test_proc_stat_reads_state_and_group():
    state, pgid, _ = proc_stat(os.getpid())
    assert state == "R" and pgid == os.getpgid(0)


def test_group_pids_lists_the_members_of_a_group():
    assert os.getpid() in group_pids(os.getpgid(0))
    assert group_pids(_unused_pid()) == []


def test_parent_death_hook_is_available_on_linux():
    assert callable(parent_death_hook())
