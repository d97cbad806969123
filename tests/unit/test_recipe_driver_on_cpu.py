"""recipes.driver and recipes.compose: profile detection, settings from arguments and knobs, process
groups stopped on every way out (a normal end, SIGINT, SIGTERM, SIGHUP), the export of a checkpoint.

The signal tests start a real driver process running a real process group (``sleep``s), no trainer.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support.processes import group_members

from recipes.checkpoints import export_hf, latest_actor_checkpoint
from recipes.compose import (
    Setting,
    SettingError,
    integer,
    items,
    knob_overrides,
    local_model_overrides,
    positional_overrides,
    quoted,
    split_stage_overrides,
    tool_arguments,
)
from recipes.driver import (
    RecipeError,
    Run,
    detect_profile,
    devices_except,
    may_start_together,
    overlap_error,
    parse_devices,
)

REPO = Path(__file__).resolve().parents[2]


def fake_nvidia_smi(folder: Path, output: str, status: int = 0) -> str:
    """A stand-in for nvidia-smi on this GPU-less machine (the only way to see the GPU branch here)."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\necho '{output}'\nexit {status}\n")
    tool.chmod(0o755)
    return str(folder)


def test_profile_detection(tmp_path):
    assert detect_profile({"VK_PROFILE": "gpu", "PATH": ""}) == "gpu"
    assert detect_profile({"VK_PROFILE": "cpu", "PATH": fake_nvidia_smi(tmp_path / "a", "GPU 0: H100")}) == "cpu"
    assert detect_profile({"PATH": str(tmp_path / "empty")}) == "cpu"
    assert detect_profile({"PATH": fake_nvidia_smi(tmp_path / "b", "GPU 0: H100 (UUID: GPU-1)")}) == "gpu"
    assert detect_profile({"PATH": fake_nvidia_smi(tmp_path / "c", "No devices were found", status=6)}) == "cpu"
    with pytest.raises(RecipeError, match="VK_PROFILE must be gpu or cpu") as e:
        detect_profile({"VK_PROFILE": "tpu"})
    assert e.value.code == 2


def test_values_keep_their_type_in_hydras_grammar():
    assert quoted("/runs/a b") == "'/runs/a b'" and quoted("it's") == "'it\\'s'"
    assert quoted("6,7") == "'6,7'"  # unquoted, hydra would read a sweep over 6 and 7
    assert items("console, wandb,") == "['console','wandb']"
    assert integer("12") == "12"
    with pytest.raises(SettingError, match="expected an integer, got '1.5'"):
        integer("1.5")


def test_knobs_and_positional_arguments():
    table = {"STEPS": Setting("trainer.total_training_steps", integer), "RUN_DIR": Setting("recipe.run_dir")}
    assert knob_overrides(table, {"STEPS": "3", "RUN_DIR": "", "OTHER": "x"}) == ["trainer.total_training_steps=3"]
    with pytest.raises(SettingError, match="STEPS: expected an integer"):
        knob_overrides(table, {"STEPS": "many"})
    names = (("model", Setting("recipe.policy")), ("epochs", Setting("trainer.total_epochs", integer)))
    assert positional_overrides(names, ["", "4"], "usage") == ["trainer.total_epochs=4"]  # empty keeps the default
    with pytest.raises(SettingError, match="too many arguments \\(3; at most 2\\). usage"):
        positional_overrides(names, ["a", "1", "b"], "usage")


def test_tool_arguments():
    options = {"limit": None, "max_tokens": 48, "request_seeds": True, "no_progress": False, "test_fraction": 0.25}
    assert tool_arguments(options) == ["--max-tokens", "48", "--request-seeds", "--test-fraction", "0.25"]


def test_stage_prefixed_overrides():
    common, per_stage = split_stage_overrides(["sft.optim.lr=1", "++rloo.x=2", "trainer.logger=[a]", "sftx.y=3"],
                                              ("sft", "rloo"))  # fmt: skip
    assert common == ["trainer.logger=[a]", "sftx.y=3"]
    assert per_stage == {"sft": ["optim.lr=1"], "rloo": ["++x=2"]}


def test_devices():
    assert parse_devices("0, 1,,2") == ["0", "1", "2"] and parse_devices(None) == [] and parse_devices(3) == ["3"]
    assert devices_except(["0", "1", "2", "3"], ["1", "3"]) == ["0", "2"]
    assert overlap_error("A", ["0", "1"], "B", ["2"]) is None
    assert overlap_error("TRAIN_DEVICES", ["0", "1"], "RM_DEVICES", ["1"]) == (
        "RM_DEVICES=1 and TRAIN_DEVICES=0,1 share device(s) 1: each needs its own GPUs")


def test_which_servers_may_start_side_by_side(monkeypatch):
    from verlkit.serving import ServerSpec

    monkeypatch.delenv("VERLKIT_EXTERNAL_URL", raising=False)

    def spec(name, devices=None, url=None):
        return ServerSpec(model="m", name=name, devices=devices, external_url=url)

    assert may_start_together([spec("a"), spec("b")], "cpu")  # the CPU build: fixed KV cache sizes
    assert may_start_together([spec("a", "0"), spec("b", "1,2")], "gpu")
    assert not may_start_together([spec("a", "0,1"), spec("b", "1")], "gpu")  # both would size GPU 1
    assert not may_start_together([spec("a", "0"), spec("b")], "gpu")  # b's GPUs are not known
    assert may_start_together([spec("a", "0"), spec("b", url="http://127.0.0.1:9/v1")], "gpu")  # b: not ours
    monkeypatch.setenv("VERLKIT_B_URL", "http://127.0.0.1:9/v1")
    assert may_start_together([spec("a"), spec("b")], "gpu")


def test_local_model_values():
    cfg = OmegaConf.create({"policy": "/models/p", "verifier": {"model": "local:nonexistent"}})
    with pytest.raises(SettingError, match="local:nonexistent: no such local model"):
        local_model_overrides(cfg)
    assert local_model_overrides(OmegaConf.create({"policy": "/models/p", "n": 3})) == []


def test_a_process_group_is_logged_and_ended_with_its_leader(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("VERBOSE", raising=False)
    with contextlib.ExitStack() as stack:
        run = Run("test", "cpu", tmp_path, stack)
        # the leader exits while a member it left behind still holds the output pipe
        rc = run.run_process("job", ["bash", "-c", "echo one; sleep 300 & echo two; exit 3"], tmp_path / "job.log")
        record = json.loads((tmp_path / "processes.json").read_text())
    assert rc == 3
    assert (tmp_path / "job.log").read_text() == "one\ntwo\n"
    console = capfd.readouterr()
    # quiet by default: the output is in the log; after a failure the console shows the log's tail
    assert console.out == ""
    assert f"the last 2 lines of {tmp_path / 'job.log'}" in console.err and "one\ntwo" in console.err
    group = record["process_groups"]["job"]
    assert group["state"] == "ended" and group_members(group["pgid"]) == []


STEP_LINES = (
    "(TaskRunner pid=1) a config dump line\n"
    "step:1 - critic/score/mean:0.25 - reward/verifier_ok/mean:1.0 - reward/cache_hit/mean:0.5 - timing_s/step:3.0\n"
    "Traceback (most recent call last): wandb teardown noise\n"
    "step:2 - critic/score/mean:np.float64(0.5) - reward/verifier_ok/mean:0.75 - reward/cache_hit/mean:nan\n"
)


def test_the_console_shows_one_line_per_step_with_reward_and_verifier_rates(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("VERBOSE", raising=False)
    (tmp_path / "out.txt").write_text(STEP_LINES)
    with contextlib.ExitStack() as stack:
        run = Run("test", "cpu", tmp_path, stack)
        rc = run.run_process("train", ["cat", str(tmp_path / "out.txt")], tmp_path / "train.log", total_steps=2)
    assert rc == 0
    console = capfd.readouterr()
    assert console.out == ""
    lines = [line.split("] ", 1)[1] for line in console.err.splitlines() if "] train: step" in line]
    assert lines == ["train: step 1/2: reward 0.25, verifier ok 100%, cache hits 50%",
                     "train: step 2/2: reward 0.5, verifier ok 75%"]
    assert "Traceback" not in console.err and "config dump" not in console.err
    assert (tmp_path / "train.log").read_text() == STEP_LINES


def test_verbose_restores_the_full_stream(tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("VERBOSE", "1")
    (tmp_path / "out.txt").write_text(STEP_LINES)
    with contextlib.ExitStack() as stack:
        Run("test", "cpu", tmp_path, stack).run_process("train", ["cat", str(tmp_path / "out.txt")], tmp_path / "t.log")
    assert capfd.readouterr().out == STEP_LINES


DRIVER = """
import sys
from pathlib import Path
from recipes.driver import Run, main

def body(stack):
    run = Run("signals", "cpu", Path(sys.argv[1]), stack)
    return run.run_process("sleepers", ["bash", "-c", "sleep 300 & sleep 300 & wait"], Path(sys.argv[1]) / "log")

sys.exit(main(body))
"""


def _sleeps(pgid: int) -> list[int]:
    """The members of the group that are ``sleep`` (bash's children once they have exec'd)."""
    out = []
    for pid in group_members(pgid):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                out.append(pid)
        except OSError:
            pass
    return out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_every_process_group_and_sets_the_exit_status(tmp_path, sig):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(DRIVER))
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env, start_new_session=True)
    record = tmp_path / "processes.json"
    deadline = time.monotonic() + 60
    pgid = None
    while time.monotonic() < deadline and proc.poll() is None:  # polling the driver's record; bounded
        if record.exists():
            groups = json.loads(record.read_text())["process_groups"]
            if "sleepers" in groups and len(_sleeps(groups["sleepers"]["pgid"])) == 2:
                pgid = groups["sleepers"]["pgid"]
                break
        time.sleep(0.1)
    assert pgid is not None, "the driver never started its process group"
    # the trainer must be able to act on SIGTERM: nothing blocked in the programs the group runs (bash
    # itself blocks SIGINT/SIGTERM/SIGCHLD for a moment around each fork, so only the sleeps are read)
    for member in _sleeps(pgid):
        blocked = int(next(line for line in Path(f"/proc/{member}/status").read_text().splitlines()
                           if line.startswith("SigBlk:")).split()[1], 16)  # fmt: skip
        assert not blocked & ((1 << (signal.SIGTERM - 1)) | (1 << (signal.SIGINT - 1))), member
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig
    assert group_members(pgid) == []


LEADER_DRIVER = """
import sys
from pathlib import Path
from recipes.driver import Run, main

def body(stack):
    run = Run("sigkill", "cpu", Path(sys.argv[1]), stack)
    return run.run_process("trainer", [sys.executable, "-c", sys.argv[2]], Path(sys.argv[1]) / "log")

sys.exit(main(body))
"""


TRAINERS = {
    "alone": "import time; time.sleep(300)",
    # a trainer that exits on SIGTERM and leaves its child running (as main_ppo leaves Ray's agents)
    "leaving a child": "import signal, subprocess, sys, time; subprocess.Popen(['sleep', '300']); "
                       "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(300)",
}


@pytest.mark.parametrize("trainer", TRAINERS)
def test_sigkill_of_the_driver_ends_its_process_group(tmp_path, trainer):
    # SIGKILL runs none of the driver's handlers: the group it started (a trainer and whatever the trainer
    # started) must end on its own: the parent-death signal the driver gave the group's guard
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(LEADER_DRIVER))
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), TRAINERS[trainer]], env=env,
                            start_new_session=True)  # fmt: skip
    record, pgid = tmp_path / "processes.json", None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:  # polling the driver's record; bounded
        if record.exists():
            groups = json.loads(record.read_text())["process_groups"]
            if "trainer" in groups and group_members(groups["trainer"]["pgid"]):
                candidate = groups["trainer"]["pgid"]
                if trainer == "alone" or _sleeps(candidate):  # the child is running
                    pgid = candidate
                    break
        time.sleep(0.1)
    assert pgid is not None, "the driver never started its process group"
    proc.kill()
    assert proc.wait(timeout=30) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling another process's exit; bounded by the deadline
    assert group_members(pgid) == []


def test_export_copies_the_model_saved_with_the_checkpoint(tmp_path):
    root = tmp_path / "checkpoints"
    for step in (1, 2, 10):
        (root / f"global_step_{step}" / "actor").mkdir(parents=True)
    saved = root / "global_step_10" / "actor" / "huggingface"
    saved.mkdir()
    (saved / "model.safetensors").write_bytes(b"weights")
    (saved / "config.json").write_text("{}")
    assert latest_actor_checkpoint(root) == root / "global_step_10" / "actor"  # numeric, not lexical
    with contextlib.ExitStack() as stack:
        run = Run("test", "cpu", tmp_path, stack)
        target = export_hf(run, root, tmp_path / "hf", tmp_path / "export.log", actor=True)
    assert (target / "model.safetensors").read_bytes() == b"weights" and not (tmp_path / "export.log").exists()
    (root / "latest_checkpointed_iteration.txt").write_text("2")
    assert latest_actor_checkpoint(root) == root / "global_step_2" / "actor"  # verl's marker decides
    with pytest.raises(FileNotFoundError, match="no global_step"):
        latest_actor_checkpoint(tmp_path / "empty")


def test_a_runs_evaluations_join_its_training_runs_in_the_tracker(tmp_path, monkeypatch):
    """Run.open points wandb at RUN_DIR, offline, grouped by the experiment (only where the user set
    nothing) and removes its values when the run ends; an evaluation gets the training run's project and
    that group, or the console when the trainer does not log to wandb."""
    from recipes.driver import Run

    for key in ("WANDB_MODE", "WANDB_DIR", "WANDB_RUN_GROUP", "WANDB_ERROR_REPORTING"):
        monkeypatch.delenv(key, raising=False)
    with contextlib.ExitStack() as stack:
        run = Run.open("test", "cpu", str(tmp_path / "exp-1"), stack)
        assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_RUN_GROUP"] == "exp-1"
        assert os.environ["WANDB_DIR"] == str(tmp_path / "exp-1") and os.environ["WANDB_ERROR_REPORTING"] == "false"
        assert run.evaluation_tracker(["console", "wandb"], "verlkit-pipeline-rloo", "exp-1-eval-winrate-rloo") == [
            "--tracker", "wandb", "--tracker-project", "verlkit-pipeline-rloo", "--tracker-group", "exp-1",
            "--tracker-run-name", "exp-1-eval-winrate-rloo", "--tracker-dir", str(tmp_path / "exp-1")]
        assert run.evaluation_tracker(["console"], "verlkit-pipeline-rloo", "x") == ["--tracker", "console"]
    assert not {"WANDB_MODE", "WANDB_DIR", "WANDB_RUN_GROUP", "WANDB_ERROR_REPORTING"} & set(os.environ)
    monkeypatch.setenv("WANDB_RUN_GROUP", "mine")
    monkeypatch.setenv("WANDB_MODE", "online")
    with contextlib.ExitStack() as stack:
        run = Run.open("test", "cpu", str(tmp_path / "exp-2"), stack)
        assert os.environ["WANDB_RUN_GROUP"] == "mine" and os.environ["WANDB_MODE"] == "online"
        assert "WANDB_ERROR_REPORTING" not in os.environ
        assert run.evaluation_tracker(["wandb"], "p", "n")[5] == "mine"
    assert os.environ["WANDB_RUN_GROUP"] == "mine" and "WANDB_DIR" not in os.environ
