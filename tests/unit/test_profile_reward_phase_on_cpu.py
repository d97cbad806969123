"""The reward-phase profiler's bookkeeping (benchmarks/profile_reward_phase.py), on hand-made samples
and log lines: labels, the verifier's busy intervals, throughput, cores per label. No run is started."""

import importlib.util
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_reward_phase.py"
_spec = importlib.util.spec_from_file_location("profile_reward_phase", _PATH)
prof = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prof)


@pytest.mark.parametrize("cmdline, expected", [
    (["ray::TransferQueueStorageUnit#5:SimpleStorageUnit.put"], "ray::SimpleStorageUnit (TQ storage unit)"),
    (["ray::SimpleStorageUnit"], "ray::SimpleStorageUnit (TQ storage unit)"),
    (["ray::verlkit_hf_rollout_server_0:HFGenerationServer.generate"], "ray::HFGenerationServer (HF rollout server)"),
    (["ray::IDLE"], "ray::IDLE"),
    (["VLLM::EngineCore"], "vLLM engine core"),
    (["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m"], "vLLM server (API + engine)"),
    (["/venv/lib/ray/core/src/ray/raylet/raylet", "--raylet_socket_name=x"], "ray raylet"),
    (["python", "-m", "verl.trainer.main_ppo", "a=1"], "trainer driver (main_ppo)"),
])
def test_processes_are_labelled_by_role(cmdline, expected):
    assert prof.label_of(cmdline, "python") == expected


def _log_line(t: str, gen: float, running: int) -> str:
    return (f"(APIServer pid=7) INFO 12-03 {t} [loggers.py:320] Engine 000: Avg prompt throughput: 10.0 tokens/s, "
            f"Avg generation throughput: {gen} tokens/s, Running: {running} reqs, Waiting: 0 reqs, "
            "CPU KV cache usage: 1.0%, Prefix cache hit rate: 0.0%")


def test_busy_intervals_and_throughput_come_from_the_vllm_stats_lines(tmp_path):
    log = tmp_path / "verifier.vllm.log"
    log.write_text("\n".join([
        "INFO 12-03 08:00:00 [api_server.py:1] Starting",
        _log_line("08:00:10", 5.0, 0),    # tail of a probe: nothing running at the end, not busy
        _log_line("08:00:12", 90.0, 6),
        _log_line("08:00:14", 30.0, 4),
        _log_line("08:00:16", 12.0, 0),   # the batch ended inside this interval: partly idle, left out
        _log_line("08:00:40", 60.0, 2),   # after the window
    ]) + "\n")
    stats = prof.vllm_stats(log)
    assert [s["running"] for s in stats] == [0, 6, 4, 0, 2]
    t10 = datetime(datetime.now().year, 12, 3, 8, 0, 10).timestamp()
    assert stats[0]["t"] == t10
    windows = prof.busy_windows(stats, start=t10 - 60, end=t10 + 10, interval=2.0)
    assert windows == [(t10, t10 + 2), (t10 + 2, t10 + 4)]
    tp = prof.throughput(stats, windows)
    assert tp["gen_tps"] == 60.0 and tp["mean_running"] == 5.0 and tp["intervals"] == 2
    assert prof.throughput(stats, [])["gen_tps"] is None


def _sample(t: float, busy: float, procs: dict) -> dict:
    return {"t": t, "busy": busy, "procs": procs}


def test_cores_per_label_are_cpu_seconds_over_the_window():
    a1, a2, b, other = (1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0)
    samples = [
        _sample(100.0, 10.0, {a1: ("A", 1.0, 3, 0), a2: ("A", 2.0, 5, 0), b: ("B", 0.0, 1, 0), other: (prof.OUTSIDE, 0.0, 9, 0)}),
        _sample(101.0, 11.5, {a1: ("A", 1.5, 3, 1), a2: ("A", 2.25, 7, 2), b: ("B", 0.0, 1, 0), other: (prof.OUTSIDE, 0.5, 9, 0)}),
        _sample(102.0, 13.5, {a1: ("A", 2.0, 3, 1), b: ("B", 1.0, 2, 1), other: (prof.OUTSIDE, 1.0, 9, 0)}),
        _sample(103.0, 14.0, {a1: ("A", 9.0, 3, 0), b: ("B", 1.0, 2, 0), other: (prof.OUTSIDE, 1.0, 9, 0)}),  # outside
    ]
    table, covered = prof.cpu_by_label(samples, [(100.0, 102.0)])
    assert covered == 2.0
    # A: (0.5 + 0.25) in the first second, 0.5 in the second (a2 is gone) -> 1.25 s / 2 s
    assert table["A"]["cores"] == pytest.approx(0.625)
    assert table["A"]["procs"] == 2 and table["A"]["max_threads"] == 7
    assert table["A"]["runnable"] == pytest.approx(2.0)  # 3 runnable threads for 1 s, 1 for 1 s
    assert table["B"]["cores"] == pytest.approx(0.5)
    assert table[prof.OUTSIDE]["cores"] == pytest.approx(0.5)
    assert table["TOTAL (run)"]["cores"] == pytest.approx(1.125)
    assert table["machine busy (all)"]["cores"] == pytest.approx(1.75)
    assert prof.cpu_by_label(samples, [(200.0, 300.0)]) == ({}, 0.0)


@pytest.mark.parametrize("body, runnable", [("while True: pass", 1), ("time.sleep(300)", 0)])
def test_runnable_threads_sees_a_spinning_process_and_not_a_sleeping_one(body, runnable):
    code = f"import sys, time\nprint('ready', flush=True)\n{body}\n"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        if runnable == 0:
            # "ready" is printed just before sleep(); the state flips to S within microseconds
            for _ in range(1000):
                if prof.runnable_threads(child.pid) == 0:
                    break
        assert prof.runnable_threads(child.pid) == runnable
    finally:
        child.kill()
        child.wait()
