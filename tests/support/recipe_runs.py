"""Running a recipe script end to end in a test: environment, output file, process-tree snapshot and
the check that nothing the run started survives it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.processes import alive, group_members, pid_alive, process_tree

REPO = Path(__file__).resolve().parents[2]
# Knobs a developer's shell may have set that would change what a CPU-default run does (a test
# passes the ones it wants explicitly).
_DROP = ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES", "STEPS", "TRAIN_DEVICES", "STAGES", "NPROC", "DOWNSTREAM_URL",
         "DOWNSTREAM_API_KEY_ENV", "DOWNSTREAM_DEVICES", "MEDMCQA_DIR", "VERLKIT_VERIFIER_URL", "ALGORITHM",
         "TEMPLATE", "TEACHER", "TEACHER_URL", "JUDGE_URL", "EVAL_MODELS", "VERIFIER_BACKEND", "DOWNSTREAM_BACKEND",
         "VERLKIT_RUN_DIR")


class RecipeRun:
    """One ``bash <script>`` in its own session, with its output in a file next to the run directory
    (a pipe nobody reads during a long run fills up and blocks the script)."""

    def __init__(self, script: str, run_dir: Path, *args: str, **env: str):
        self.run_dir = run_dir
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        full_env = {k: v for k, v in os.environ.items() if k not in _DROP}
        full_env.update({"VK_PROFILE": "cpu", "LOGGER": "console", "VK_PYTHON": sys.executable,
                         "RUN_DIR": str(run_dir), **env})  # fmt: skip
        full_env["PATH"] = f"{Path(sys.executable).parent}:{full_env.get('PATH', '')}"
        self.out_path = run_dir.parent / f"{run_dir.name}.script.out"
        self._out = open(self.out_path, "w")  # noqa: SIM115 -- closed in wait()
        self.proc = subprocess.Popen(["bash", str(REPO / script), *args], cwd=REPO, env=full_env, stdout=self._out,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        self.seen: set = set()

    def output(self) -> str:
        return self.out_path.read_text(errors="replace")

    def processes(self) -> dict:
        """What the driver recorded in ``RUN_DIR/processes.json``: its servers and process groups."""
        return json.loads((self.run_dir / "processes.json").read_text())

    def wait_for(self, path: Path, text: str, timeout: float) -> None:
        """Wait until ``path`` contains ``text``, snapshotting the process tree as we go."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.seen |= process_tree(self.proc.pid)
            if path.exists() and text in path.read_text(errors="replace"):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"run ended early (rc={self.proc.returncode}): {self.output()[-4000:]}")
            time.sleep(1)  # polling a file another process writes; bounded by the deadline
        raise AssertionError(f"{text!r} never appeared in {path}")

    def wait(self, timeout: float) -> int:
        """Wait for the script, snapshotting its process tree every second; kill it at the deadline."""
        deadline = time.monotonic() + timeout
        try:
            while self.proc.poll() is None:
                if time.monotonic() > deadline:
                    os.killpg(self.proc.pid, 15)
                    self.proc.wait(60)
                    raise AssertionError(f"{self.proc.args[1]} did not finish in {timeout:.0f}s:\n{self.output()[-4000:]}")
                self.seen |= process_tree(self.proc.pid)
                time.sleep(1)  # polling the process tree for the snapshot; bounded by the deadline
        finally:
            self._out.close()
        return self.proc.returncode

    def assert_nothing_left(self, server_names: tuple[str, ...] = ()) -> None:
        """No process of the run survives it: the snapshot, every process group the driver started, and
        every PID of its servers (a server the run started binds loopback)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and alive(self.seen):
            time.sleep(0.5)  # polling for process exit; bounded
        assert alive(self.seen) == []
        record = self.processes()
        assert set(server_names) <= set(record["servers"]), record["servers"]
        for name, server in record["servers"].items():
            if not server["external"]:
                assert server["host"] == "127.0.0.1", name
            for pid in server["pids"] + ([server["pid"]] if server["pid"] else []):
                assert not pid_alive(pid), f"{name} server: pid {pid} survived"
        for name, group in record["process_groups"].items():
            deadline = time.monotonic() + 30
            while group_members(group["pgid"]) and time.monotonic() < deadline:
                time.sleep(0.5)  # polling for process exit; bounded
            assert group_members(group["pgid"]) == [], f"live processes left in the {name} group {group['pgid']}"
