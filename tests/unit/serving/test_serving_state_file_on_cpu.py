"""The ``<role>.server.json`` state file: writing, reading, and what wait-ready/stop make of it.

No server is started: the states are written by hand, and the "processes" they name are this test
process (alive) or this process with a wrong start time (a PID now used by someone else: dead).
"""

import json
import os

import pytest

from verlkit.serving import ServerStartError
from verlkit.serving.processes import start_time
from verlkit.serving.state_file import read_state, stop_from_state, update_state, wait_ready_from_state, write_state


def test_write_then_read_round_trip_and_no_temporary_file_left(tmp_path):
    path = tmp_path / "judge.server.json"
    write_state(path, {"name": "judge", "state": "starting", "pids": [{"pid": 12, "start_time": 34}]})
    assert read_state(path) == {"name": "judge", "state": "starting", "pids": [{"pid": 12, "start_time": 34}]}
    assert [p.name for p in tmp_path.iterdir()] == ["judge.server.json"]


def test_update_keeps_other_fields_and_starts_a_missing_file(tmp_path):
    path = tmp_path / "s.server.json"
    assert update_state(path, state="failed") == {"state": "failed"}
    write_state(path, {"name": "s", "state": "starting"})
    update_state(path, state="ready", base_url="http://127.0.0.1:1/v1")
    assert json.loads(path.read_text()) == {"name": "s", "state": "ready", "base_url": "http://127.0.0.1:1/v1"}


def test_read_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no launcher state file at .*missing.server.json"):
        read_state(tmp_path / "missing.server.json")
    bad = tmp_path / "bad.server.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.server.json is not valid JSON"):
        read_state(bad)


def test_wait_ready_returns_the_ready_state(tmp_path):
    path = tmp_path / "v.server.json"
    write_state(path, {"name": "v", "state": "ready", "base_url": "http://127.0.0.1:9/v1"})
    assert wait_ready_from_state(path, timeout_s=5)["base_url"] == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("final", ["failed", "stopped", "died"])
def test_wait_ready_gives_up_on_a_final_state_with_its_error_and_log(tmp_path, final):
    path = tmp_path / "v.server.json"
    write_state(path, {"name": "v", "state": final, "error": "boom", "log_path": "/run/v.vllm.log"})
    with pytest.raises(ServerStartError, match=f"'v' is {final}: boom .*log: /run/v.vllm.log"):
        wait_ready_from_state(path, timeout_s=30)


def test_wait_ready_fails_when_the_launcher_died(tmp_path):
    path = tmp_path / "v.server.json"
    me = os.getpid()
    write_state(path, {"name": "v", "state": "starting", "launcher_pid": me, "launcher_start_time": start_time(me) + 1})
    with pytest.raises(ServerStartError, match=f"launcher \\(pid {me}\\) of 'v' died"):
        wait_ready_from_state(path, timeout_s=30)


def test_wait_ready_times_out_on_a_server_still_starting(tmp_path):
    path = tmp_path / "v.server.json"
    me = os.getpid()
    write_state(path, {"name": "v", "state": "starting", "launcher_pid": me, "launcher_start_time": start_time(me)})
    with pytest.raises(ServerStartError, match="did not say ready within 0s"):
        wait_ready_from_state(path, timeout_s=0.2)


def test_stop_of_an_external_server_without_supervisor_touches_nothing(tmp_path):
    path = tmp_path / "ext.server.json"
    write_state(path, {"name": "ext", "external": True, "state": "ready", "launcher_pid": os.getpid()})
    assert stop_from_state(path) == []
    assert read_state(path)["state"] == "ready"  # an external server is not ours: nothing recorded either


def test_stop_with_only_gone_processes_marks_the_state_stopped(tmp_path):
    path = tmp_path / "v.server.json"
    me = os.getpid()
    gone = [{"pid": me, "start_time": start_time(me) + 1}]  # the recorded process no longer exists
    write_state(path, {"name": "v", "external": False, "state": "ready", "pgid": None, "pids": gone})
    assert stop_from_state(path, grace_s=1) == []
    assert read_state(path)["state"] == "stopped"
