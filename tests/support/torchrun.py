"""Running a module under torchrun on the CPU profile, for the integration tests of verl's SFT
trainer and of our preference trainer built on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

RUN_TIMEOUT_S = float(os.environ.get("VERLKIT_TEST_TORCHRUN_TIMEOUT", "600"))


def run_torchrun(module: str, n_procs: int, overrides: list[str], log_path: Path) -> str:
    """``torchrun --standalone --nproc_per_node=n_procs -m module overrides...`` with the CPU
    profile's environment, in its own process group (killed on timeout or any error, so no worker
    outlives the test), from ``log_path``'s directory; returns the output, written to ``log_path``.
    Fails the test, with the end of the output, when the run exits non-zero."""
    from verlkit.cpu_profile.overrides import env

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n_procs}", "-m", module]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd + list(overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env(), "OMP_NUM_THREADS": "1"},
            cwd=log_path.parent,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT_S)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    text = log_path.read_text()
    assert rc == 0, f"{module} with {n_procs} processes exited {rc}; last output:\n{text[-4000:]}"
    return text
