"""One recipe run, orchestrated in one Python process (each ``run_*.sh`` ``exec``s a recipe's driver).

What every recipe shares: profile detection, the run directory, the CPU profile's environment, served
models (``verlkit.serving.launch``), trainers and other tools as subprocesses in process groups of
their own, and the guarantee that nothing the run started outlives it — on a normal end, an error,
SIGINT, SIGTERM or SIGHUP. Everything the run started is listed in ``RUN_DIR/processes.json``.

The run's resources sit on one ``contextlib.ExitStack``: a signal raises :class:`Interrupted` in the
main thread, the stack unwinds (trainer process groups: SIGTERM, grace period, SIGKILL; servers: the
launcher's stop) and the driver exits 128 + the signal number, like a shell would.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_GRACE_S = 30.0  # a trainer's process group gets this long after SIGTERM (Ray shuts down its workers)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


class RecipeError(Exception):
    """A run that cannot go on; the message is for the user, ``code`` the exit status (2: usage)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived (a BaseException: no ``except Exception`` swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM/SIGHUP while a stop is in progress, so a second Ctrl-C cannot cut a
    SIGTERM -> wait -> SIGKILL sequence short; they are delivered when the block ends."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ---- profile and devices ---------------------------------------------------------------------------


def detect_profile(environ=os.environ) -> str:
    """``gpu`` when ``nvidia-smi -L`` lists a GPU, else ``cpu``; ``VK_PROFILE`` decides when set."""
    chosen = environ.get("VK_PROFILE", "")
    if chosen:
        if chosen not in ("gpu", "cpu"):
            raise RecipeError(f"VK_PROFILE must be gpu or cpu, got {chosen!r}", code=2)
        return chosen
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if not smi:
        return "cpu"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"
    return "gpu" if out.returncode == 0 and "GPU" in out.stdout else "cpu"


def gpu_indices() -> list[str]:
    """The indices of the visible GPUs, as nvidia-smi lists them (none if it cannot tell)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def parse_devices(value) -> list[str]:
    """``"0,1, 2"`` (or a list, or an int) -> ``["0", "1", "2"]``; None -> []."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(d).strip() for d in value if str(d).strip()]
    return [d.strip() for d in str(value).split(",") if d.strip()]


def devices_except(all_devices: Sequence[str], taken: Sequence[str]) -> list[str]:
    """The devices of ``all_devices`` that ``taken`` does not name, in order."""
    return [d for d in all_devices if d not in set(taken)]


def overlap_error(first_name: str, first: Sequence[str], second_name: str, second: Sequence[str]) -> str | None:
    """None if two device lists are disjoint, else a message naming the shared devices."""
    shared = sorted(set(first) & set(second))
    if not shared:
        return None
    return (f"{second_name}={','.join(second)} and {first_name}={','.join(first)} share device(s) "
            f"{','.join(shared)}: each needs its own GPUs")  # fmt: skip


def cpu_profile_environment() -> None:
    """The environment verl's processes need on the CPU profile, for this process and its children."""
    from verlkit.cpu_profile.overrides import env

    os.environ.update(env())


def call_tool(tool_main: Callable[[list[str]], int], argv: Sequence[str], what: str, code: int = 1) -> None:
    """A command-line tool's ``main(argv)`` called in this process (its report goes to the console's
    log side, stderr); a non-zero status stops the run."""
    with contextlib.redirect_stdout(sys.stderr):
        rc = tool_main([str(a) for a in argv])
    if rc:
        raise RecipeError(f"{what} failed (see above)", code=code)


def validate_data(*files: Path, kind: str = "rl", reward_options: dict | None = None) -> None:
    """data_prep.validate on the files a trainer will read, under the run's reward options (which sources
    are routed, what their rows need): a bad row stops the run before it starts."""
    from data_prep.validate import main as validate_main

    options = ["--reward-options", json.dumps(reward_options)] if reward_options else []
    if validate_main([*map(str, files), "--kind", kind, *options]):
        raise RecipeError("the data does not validate (see the problems above)")


# ---- the run ---------------------------------------------------------------------------------------


def may_start_together(specs, profile: str) -> bool:
    """Can these servers load at the same time? On the CPU build, yes (each has a KV cache of a fixed
    size). On GPUs only when each names its GPUs and no two share one: vLLM sizes its KV cache from the
    memory it finds free when it starts, so two starting on one GPU misjudge each other."""
    from verlkit.serving.spec import external_url_for

    own = [spec for spec in specs if not external_url_for(spec)]
    if len(own) < 2 or profile == "cpu":
        return True
    seen: set[str] = set()
    for spec in own:
        devices = {d.strip() for d in str(spec.devices or "").split(",") if d.strip()}
        if not devices or devices & seen:
            return False
        seen |= devices
    return True


class Run:
    """A run directory and everything started for it, stopped when ``stack`` closes."""

    def __init__(self, recipe: str, profile: str, run_dir: Path, stack: contextlib.ExitStack):
        self.recipe, self.profile, self.run_dir, self.stack = recipe, profile, run_dir, stack
        self._record: dict = {"driver": {"pid": os.getpid(), "pgid": os.getpgid(0)}, "servers": {},
                              "process_groups": {}}  # fmt: skip
        self._write_record()

    @classmethod
    def open(cls, recipe: str, profile: str, run_dir: str | None, stack: contextlib.ExitStack) -> Run:
        path = Path(run_dir or f"runs/{recipe}-{datetime.now():%Y%m%d-%H%M%S}").resolve()
        path.mkdir(parents=True, exist_ok=True)
        run = cls(recipe, profile, path, stack)
        # wandb: offline (no network, no key), the run's training and evaluation runs under RUN_DIR/wandb/,
        # grouped by the experiment (verl's trainers call wandb.init without a group: wandb reads the
        # group from WANDB_RUN_GROUP). A value the user set wins; ours are removed when the run ends.
        for key, value in (("WANDB_MODE", "offline"), ("WANDB_DIR", str(path)), ("WANDB_RUN_GROUP", run.experiment)):
            if key not in os.environ:
                os.environ[key] = value
                stack.callback(os.environ.pop, key, None)
        if os.environ["WANDB_MODE"] != "online" and "WANDB_ERROR_REPORTING" not in os.environ:
            # offline sends nothing: no error/usage telemetry from the trainers' wandb either
            os.environ["WANDB_ERROR_REPORTING"] = "false"
            stack.callback(os.environ.pop, "WANDB_ERROR_REPORTING", None)
        return run

    def evaluation_tracker(self, logger, project: str, name: str) -> list[str]:
        """The tracker options of an evaluation CLI (``verlkit.evaluation.tracking``) for an evaluation of
        a training run that logs to ``logger`` in wandb ``project``: wandb in the same project and run
        group when the trainer's logger list names wandb, else the console."""
        if "wandb" not in [str(x) for x in (logger or [])]:
            return ["--tracker", "console"]
        return ["--tracker", "wandb", "--tracker-project", project, "--tracker-group",
                os.environ.get("WANDB_RUN_GROUP", self.experiment), "--tracker-run-name", name,
                "--tracker-dir", os.environ.get("WANDB_DIR", str(self.run_dir))]  # fmt: skip

    @property
    def experiment(self) -> str:
        return self.run_dir.name

    def _write_record(self) -> None:
        path = self.run_dir / "processes.json"
        tmp = path.with_name(".processes.json.tmp")
        tmp.write_text(json.dumps(self._record, indent=2) + "\n")
        os.replace(tmp, path)

    # -- served models

    def serve(self, spec):
        """Start (or attach to) a served model; it is stopped when the run ends (or by :meth:`stop`)."""
        return self.serve_together(spec)[0]

    def serve_together(self, *specs) -> list:
        """Start several served models and return them once all are ready. Those that may load side by
        side (:func:`may_start_together`) start at once, so their start-ups (mostly imports and weight
        loading, one core each on the CPU build) overlap; the others start one after the other."""
        from verlkit.serving import ServerStartError, start, wait_ready

        batches = [list(specs)] if may_start_together(specs, self.profile) else [[spec] for spec in specs]
        servers = []
        for batch in batches:
            starting = []
            for spec in batch:
                log(f"starting the {spec.name} server ({spec.model})")
                try:
                    starting.append((spec, self.stack.enter_context(start(spec))))
                except ServerStartError as e:
                    raise RecipeError(f"the {spec.name} server did not start: {e}") from None
            for spec, server in starting:  # each wait is bounded by its spec's ready_timeout_s
                try:
                    wait_ready(server)
                except ServerStartError as e:
                    raise RecipeError(f"the {spec.name} server did not become ready: {e}") from None
                self._record["servers"][spec.name] = {
                    "external": bool(server.external), "base_url": server.base_url, "model_name": server.model_name,
                    "host": spec.host, "pid": server.pid, "pgid": server.pgid, "pids": list(getattr(server, "pids", [])),
                    "log": str(server.log_path) if server.log_path else None, "state": "ready",
                }  # fmt: skip
                self._write_record()
                log(f"{spec.name} ready at {server.base_url} as '{server.model_name}' (log: {server.log_path})")
                servers.append(server)
        return servers

    def stop(self, server) -> None:
        """Stop a server before the run ends (frees its memory or GPU)."""
        with signals_deferred():
            server.stop()
        name = server.spec.name if server.spec else None
        if name in self._record["servers"]:
            self._record["servers"][name]["state"] = "stopped"
            self._write_record()

    # -- subprocesses

    def run_process(self, name: str, command: Sequence[str], log_path: Path, *, console: bool = True,
                    env: dict[str, str] | None = None, total_steps: int | None = None) -> int:  # fmt: skip
        """Run ``command`` in a session (process group) of its own, its output to ``log_path`` and (with
        ``console``) a progress view of it on the console (:mod:`recipes.console`; the full stream with
        ``VERBOSE=1``); return its exit status. Its whole group is stopped when it ends, and on any way
        out of here (an exception, a signal)."""
        from recipes.console import TrainerConsole
        from verlkit.serving.lifecycle import GROUP_GUARD

        log_path.parent.mkdir(parents=True, exist_ok=True)
        view = TrainerConsole(name, total_steps) if console else None
        # The group's first process is the guard vLLM servers have too (verlkit.serving.group_guard): when the
        # driver dies without a word (SIGKILL), its parent-death signal reaches the guard, which ends the
        # whole group: Ray's daemons and agents that the trainer's own exit would leave behind included.
        guarded = [sys.executable, str(GROUP_GUARD), str(STOP_GRACE_S), "--", *command]
        with open(log_path, "wb") as log_file:
            # (not under signals_deferred: a child inherits the blocked signals and would ignore SIGTERM)
            proc = subprocess.Popen(guarded, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO, env=env,
                                    preexec_fn=_parent_death_hook())  # noqa: PLW1509 (see _parent_death_hook)  # fmt: skip
            group = ProcessGroup(proc)
            self.stack.callback(group.stop)
            self._record["process_groups"][name] = {"pgid": proc.pid, "command": list(command),
                                                    "log": str(log_path), "state": "running"}  # fmt: skip
            self._write_record()
            # A thread copies the output: the pipe stays open as long as any process that inherited it
            # lives (a daemon the trainer left behind), while the run goes on when the trainer exits.
            pump = threading.Thread(target=_copy_output, args=(proc.stdout, log_file, view), daemon=True)
            pump.start()
            rc = None
            try:
                rc = proc.wait()
            finally:
                with signals_deferred():
                    group.stop()
                pump.join(timeout=10)
                if view is not None:
                    view.close(rc, log_path)
                self._record["process_groups"][name]["state"] = "ended"
                self._write_record()
        return rc

    def train(self, label: str, module: str, config_dir: Path, name: str, overrides: Sequence[str], workdir: Path,
              *, launcher: Sequence[str] = (), env: dict[str, str] | None = None) -> int:  # fmt: skip
        """Run a trainer (``python -m <module>``, or under ``launcher`` such as torchrun) on the recipe
        config ``<config_dir>/<name>.yaml`` with ``overrides``: the composed config goes to
        ``<workdir>/config.yaml``, the trainer's output to the console and ``<workdir>/train.log``, hydra's
        own record of the run to ``<workdir>/.hydra/``. Returns the trainer's exit status."""
        from recipes.compose import compose, quoted, searchpath_override, write_config

        cfg = compose(config_dir, name, overrides)
        write_config(cfg, workdir / "config.yaml")
        total_steps = cfg.get("trainer", {}).get("total_training_steps")
        command = [*(launcher or (sys.executable, "-m")), module, "--config-path", str(config_dir), "--config-name",
                   name, searchpath_override(), *overrides, f"hydra.run.dir={quoted(workdir)}"]  # fmt: skip
        log(f"{label}: python {' '.join(command[1:])}")
        log(f"{label}: the composed config is in {workdir / 'config.yaml'}; its log: {workdir / 'train.log'}")
        rc = self.run_process(label, command, workdir / "train.log", env=env,
                              total_steps=total_steps if isinstance(total_steps, int) else None)
        if rc:
            log(f"{label}: the trainer exited with status {rc} (log: {workdir / 'train.log'})")
        return rc

    def summary(self, train_log: Path, json_out: Path, prefixes: Sequence[str] | None = None) -> int:
        """The end-of-run table of the step metrics in ``train_log`` (also written to ``json_out``)."""
        from verlkit.runs.summary import main as summary_main

        argv = [str(train_log), "--json", str(json_out)] + (["--prefixes", ",".join(prefixes)] if prefixes else [])
        return summary_main(argv)


def _parent_death_hook():
    """SIGKILL of the driver runs none of its handlers, and a process group of its own keeps a trainer
    out of the terminal's signals: the kernel's parent-death signal (SIGTERM) to the group's guard is what
    ends the trainer's group then (the guard SIGTERMs every member, then SIGKILLs what is left after the
    grace; Ray's workers, in groups of their own, exit with their raylet). prctl binds it to the launching
    *thread*, so only a launch from the main thread gets it (from another thread it would fire when that
    thread ends)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    from verlkit.serving.processes import parent_death_hook

    return parent_death_hook()


def _copy_output(pipe, log_file, view) -> None:
    try:
        while chunk := pipe.read1(1 << 16):
            log_file.write(chunk)
            log_file.flush()
            if view is not None:
                view.feed(chunk)
    except (ValueError, OSError):  # the run moved on and closed the log (a stray process kept the pipe)
        pass


class ProcessGroup:
    """A subprocess started in a session of its own: ``stop()`` ends every live member of its group
    (SIGTERM, up to STOP_GRACE_S, then SIGKILL; verlkit.serving's group stop). Idempotent."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.pgid, self.stopped = proc, proc.pid, False

    def stop(self) -> None:
        from verlkit.serving.processes import kill_process_group

        if self.stopped:
            return
        self.stopped = True
        kill_process_group(self.pgid, grace_s=STOP_GRACE_S, popen=self.proc)


def main(body: Callable[[contextlib.ExitStack], int]) -> int:
    """Run a recipe's ``body`` with the run's cleanup guaranteed; returns the exit status."""
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        signal.signal(signum, _raise_interrupted)
    stack = contextlib.ExitStack()
    try:
        return body(stack)
    except Interrupted as e:
        log(f"{e} received: stopping everything this run started")
        return 128 + e.signum
    except RecipeError as e:
        log(f"error: {e}")
        return e.code
    finally:
        # a further signal during the cleanup is ignored: the cleanup is what it would ask for
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        stack.close()
        # the caller's handlers back: an ignored SIGTERM would be inherited by every process it starts next
        for signum, handler in previous.items():
            signal.signal(signum, handler)
