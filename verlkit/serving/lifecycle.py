"""Start a served model, know when it is ready, and make sure it ends.

``launch(spec)`` starts ``python -m vllm.entrypoints.openai.api_server`` in its own process group
(bound to 127.0.0.1 by default), logs to ``<run_dir>/<role>.vllm.log``, records what it started in
``<run_dir>/<role>.server.json`` and returns a ``ServedModel`` only once the server answered a real
request. The whole group is stopped when the ``ServedModel`` is stopped (``stop()`` or leaving its
``with`` block), at interpreter exit, on SIGINT/SIGTERM (our handlers chain to the previous ones)
and, for a launch from the main thread, when the launching process dies (Linux parent-death
signal): a crashed training leaves no server behind. The group's first process is a small guard
(``group_guard``) that ends the whole group, vLLM's engine process included, however the server or
its launcher ends (the engine outlives an API server killed by SIGKILL, as Ray kills the children of
an actor it kills).

An already running server is used instead when a URL is given (``spec.external_url``,
``VERLKIT_<NAME>_URL`` or ``VERLKIT_EXTERNAL_URL``): it is health-checked the same way and never
stopped by us.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

from verlkit.clients.urls import normalize_base_url
from verlkit.models.resolve import ModelResolutionError, resolve_model
from verlkit.serving.probes import NotReadyInTime, wait_until_ready
from verlkit.serving.processes import (
    STOP_GRACE_S,
    descendants,
    group_pids,
    kill_process_group,
    parent_death_hook,
    pick_free_port,
    port_is_free,
    start_time,
    wait_on_child,
)
from verlkit.serving.spec import PortInUseError, ServerSpec, ServerStartError, external_url_for
from verlkit.serving.state_file import update_state, write_state
from verlkit.serving.vllm_command import build_command, gpu_available

# run by path, not ``-m``: the guard must not import the package (it starts before every server)
GROUP_GUARD = Path(__file__).resolve().with_name("group_guard.py")

logger = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
_PORT_IN_USE_RE = re.compile(r"address already in use|errno 98", re.IGNORECASE)


def log_tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    """The last ``n`` lines of a log file (a note instead if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=n))
    except OSError as e:
        return f"<cannot read {path}: {e}>"


class ServedModel:
    """A running (or external) OpenAI-compatible server. ``stop()`` is idempotent; a context manager."""

    def __init__(
        self,
        base_url: str,
        model_name: str,
        *,
        spec: ServerSpec | None = None,
        popen: subprocess.Popen | None = None,
        log_path: Path | None = None,
        state_path: Path | None = None,
        external: bool = False,
    ):
        self.base_url = base_url
        self.model_name = model_name
        self.spec = spec
        self.log_path = log_path
        self.state_path = state_path
        self.external = external
        self._popen = popen
        self.pid: int | None = popen.pid if popen else None
        self.pgid: int | None = popen.pid if popen else None  # start_new_session: pgid == pid
        self._recorded: list[tuple[int, int | None]] = []
        self._stopped = external
        self._lock = threading.RLock()  # stop() may be re-entered from a signal handler

    def __repr__(self) -> str:
        kind = "external" if self.external else f"pid={self.pid}"
        return f"ServedModel({self.model_name!r} at {self.base_url}, {kind})"

    def __enter__(self) -> ServedModel:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """Every PID this server started that we know of (API server, engine, helpers)."""
        return sorted({p for p, _ in self._recorded} | ({self.pid} if self.pid else set()))

    def is_alive(self) -> bool:
        if self.external:
            return True
        return self._popen is not None and self._popen.poll() is None

    def wait(self) -> int:
        """Block until our server process exits; returns its exit code."""
        if self._popen is None:
            raise RuntimeError(f"{self!r} is not a process of ours to wait for")
        return self._popen.wait()

    def record_pids(self) -> None:
        """Record the group's current members and the server's descendants in the state file."""
        if self.pid is None:
            return
        found = set(group_pids(self.pgid)) | set(descendants(self.pid)) | {self.pid}
        known = {p for p, _ in self._recorded}
        for p in sorted(found - known):
            started = start_time(p)
            if started is not None:
                self._recorded.append((p, started))
        self.update_state()

    def update_state(self, **fields) -> None:
        """Write the recorded PIDs and ``fields`` into the state file (if this server has one)."""
        if self.state_path is None:
            return
        update_state(self.state_path, pids=[{"pid": p, "start_time": st} for p, st in self._recorded], **fields)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the process group, wait up to ``grace_s``, then SIGKILL it. No-op if external."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                with _signals_deferred():
                    if self.pgid is not None:
                        clean = kill_process_group(self.pgid, self._recorded, grace_s, self._popen)
                        logger.info("stopped %s (%s)", self, "clean" if clean else "SIGKILL")
                    self.update_state(state="stopped")
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(self)


# ----------------------------------------------------------------------------------------------
# Stopping on exit: every server this process launched, at exit and on SIGINT/SIGTERM.

_LIVE: set[ServedModel] = set()
_LIVE_LOCK = threading.RLock()  # re-entrant: signal handlers may run while it is held
_HANDLERS_INSTALLED = False


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM (they stay pending) while a stop is in progress, so a second Ctrl-C
    cannot abort the SIGTERM -> wait -> SIGKILL sequence half way. Main thread only (Python runs
    signal handlers there)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_all() -> None:
    """Stop every server this process launched (atexit / signal handlers)."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for server in live:
        try:
            server.stop()
        except Exception:  # keep stopping the others
            logger.exception("stopping %s failed", server)


def _chain_handler(signum: int, previous) -> None:
    if callable(previous):
        previous(signum, None)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    # SIG_IGN / None: nothing more to do


def _install_exit_hooks() -> None:
    """atexit + SIGINT/SIGTERM handlers that stop our servers, then chain to the previous handler."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        logger.debug("launch() not on the main thread: no signal handlers (atexit still stops servers)")
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(signum)

        def handler(sig, frame, _previous=previous):
            stop_all()
            _chain_handler(sig, _previous)

        signal.signal(signum, handler)


# ----------------------------------------------------------------------------------------------
# Launch


def launch(spec: ServerSpec) -> ServedModel:
    """Start (or attach to) the server described by ``spec`` and return once it is ready.

    Use it as ``with launch(spec) as server: ...`` or ``server = launch(spec); ...; server.stop()``.
    Raises ServerStartError (PortInUseError for a taken port) naming the log file, after stopping
    whatever it started.
    """
    return wait_ready(start(spec))


def start(spec: ServerSpec) -> ServedModel:
    """The first half of ``launch``: start the server and return at once, its state file saying
    ``starting`` (an external server is checked and returned ready). Several servers started this way
    load side by side; ``wait_ready`` each before use. Refusals (a taken port, an unresolvable model)
    raise here, before any process starts."""
    Path(spec.run_dir).resolve().mkdir(parents=True, exist_ok=True)
    url = external_url_for(spec)
    if url:
        return _use_external(spec, url)

    try:  # a Hub id resolves through the HF cache (downloading when the Hub is reachable), before any process
        model_path = resolve_model(spec.model, role=spec.role)
    except ModelResolutionError as e:
        _refuse(spec, ServerStartError(f"{e} (log: {spec.log_path})"))
    port = spec.port or pick_free_port(spec.host)
    if spec.port and not port_is_free(spec.host, port):
        _refuse(spec, PortInUseError(
            f"port {port} on {spec.host} is already in use by another process: cannot start the "
            f"{spec.role!r} server (choose another --port, or --port 0 for a free one). Log: {spec.log_path}"
        ))  # fmt: skip

    on_gpu = gpu_available() if spec.use_gpu is None else spec.use_gpu
    return _start(spec, port, on_gpu, model_path)


def wait_ready(server: ServedModel) -> ServedModel:
    """The second half of ``launch``: wait until ``server`` (from ``start``) answered a real request, within
    its spec's ``ready_timeout_s``. On failure the server is stopped, its state file says ``failed``, and
    ServerStartError names the log."""
    if server.external:
        return server
    assert server.spec is not None
    try:
        _wait_ready(server, server.spec, urlsplit(server.base_url).port)
    except BaseException as e:
        server.stop()
        server.update_state(state="failed", error=str(e).splitlines()[0] if str(e) else repr(e))
        raise
    server.record_pids()
    server.update_state(state="ready", ready_at=time.time())
    return server


def _refuse(spec: ServerSpec, error: ServerStartError) -> NoReturn:
    """Fail before starting anything: the reason goes to the log and the state file, then raise."""
    spec.log_path.write_text(f"{error}\n")
    write_state(spec.state_path, {"name": spec.role, "state": "failed", "error": str(error), "log_path": str(spec.log_path)})
    raise error


def _start(spec: ServerSpec, port: int, on_gpu: bool, model_path: Path) -> ServedModel:
    """Start vLLM in a new process group (session) under its group guard (``group_guard``: it ends the
    whole group, vLLM's engine process included, on any exit), register it for stopping, write the
    state file."""
    cmd, env = build_command(spec, port, on_gpu, model_path)
    guarded = [spec.python, str(GROUP_GUARD), str(STOP_GRACE_S), "--", *cmd]
    host = spec.host if ":" not in spec.host else f"[{spec.host}]"
    base_url = f"http://{host}:{port}/v1"
    log_path, state_path = spec.log_path, spec.state_path
    _install_exit_hooks()
    with open(log_path, "ab") as log_file:
        log_file.write(f"[verlkit launcher] {' '.join(cmd)}\n".encode())
        log_file.flush()
        # prctl's parent is the launching *thread*: from another thread the server would die with it
        use_pdeathsig = threading.current_thread() is threading.main_thread() and sys.platform.startswith("linux")
        popen = subprocess.Popen(
            guarded,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=Path(spec.run_dir).resolve(),
            start_new_session=True,
            preexec_fn=parent_death_hook() if use_pdeathsig else None,  # noqa: PLW1509 (see parent_death_hook)
        )
    server = ServedModel(base_url, spec.api_model_name, spec=spec, popen=popen, log_path=log_path, state_path=state_path)
    with _LIVE_LOCK:
        _LIVE.add(server)
    write_state(state_path, {
        "name": spec.role, "model": str(spec.model), "model_path": str(model_path),
        "served_model_name": spec.api_model_name, "base_url": base_url, "host": spec.host, "port": port, "pid": popen.pid, "pgid": popen.pid,
        "log_path": str(log_path), "external": False, "state": "starting", "on_gpu": on_gpu,
        "devices": spec.devices, "tensor_parallel_size": spec.tensor_parallel_size, "cmd": cmd,
        "launcher_pid": os.getpid(), "launcher_start_time": start_time(os.getpid()), "started_at": time.time(),
    })  # fmt: skip
    server.record_pids()
    logger.info("starting %s on %s (%s), log %s", spec.role, base_url, "GPU" if on_gpu else "CPU build", log_path)
    return server


def _wait_ready(server: ServedModel, spec: ServerSpec, port: int) -> None:
    popen, log_path = server._popen, server.log_path
    tail_note = f"Log: {log_path}\n--- last {LOG_TAIL_LINES} lines of {log_path} ---\n"

    def between_probes(seconds: float) -> None:
        server.record_pids()
        wait_on_child(popen, seconds)  # wakes at once if the server dies
        if popen.poll() is None:
            return
        tail = log_tail(log_path)
        if _PORT_IN_USE_RE.search(tail):
            raise PortInUseError(
                f"port {port} on {spec.host} is already in use: the {spec.role!r} server could not bind it. "
                f"{tail_note}{tail}"
            )
        raise ServerStartError(
            f"the {spec.role!r} server (pid {popen.pid}) exited with code {popen.returncode} before it was "
            f"ready. {tail_note}{tail}"
        )

    t0 = time.monotonic()
    try:
        wait_until_ready(server.base_url, spec.api_model_name, spec.ready_timeout_s, spec.task, pause=between_probes)
    except NotReadyInTime as e:
        raise ServerStartError(
            f"the {spec.role!r} server was not ready after {spec.ready_timeout_s:.0f}s ({e.reason}). "
            f"{tail_note}{log_tail(log_path)}"
        ) from None
    logger.info("%s ready after %.1fs", spec.role, time.monotonic() - t0)


def _use_external(spec: ServerSpec, url: str) -> ServedModel:
    base_url = normalize_base_url(url)
    try:
        served = wait_until_ready(base_url, spec.served_model_name, spec.ready_timeout_s, spec.task)
    except NotReadyInTime as e:
        raise ServerStartError(
            f"external server for {spec.role!r} at {base_url} is not usable after {spec.ready_timeout_s:.0f}s: {e.reason}"
        ) from None
    write_state(spec.state_path, {
        "name": spec.role, "model": str(spec.model), "served_model_name": served, "base_url": base_url,
        "external": True, "state": "ready", "pids": [], "pgid": None, "pid": None, "log_path": None,
        "launcher_pid": os.getpid(), "launcher_start_time": start_time(os.getpid()),
    })  # fmt: skip
    logger.info("using external server %s (%s) for %s", base_url, served, spec.role)
    return ServedModel(base_url, served, spec=spec, state_path=spec.state_path, external=True)
