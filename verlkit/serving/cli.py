"""Run a served model by hand: start it, wait until it is ready, stop it.

    python -m verlkit.serving serve --name verifier --model DIR --run-dir DIR [--port 0] ... [-- vLLM args]
    python -m verlkit.serving wait-ready --state DIR/verifier.server.json --timeout 300
    python -m verlkit.serving stop --state DIR/verifier.server.json

``serve`` stays in the foreground supervising the server until SIGTERM/SIGINT; the other two work
from the state file it writes (see ``verlkit.serving.state_file``), from any process.
Python code calls ``with launch(spec) as server:`` instead (``verlkit.serving``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from verlkit.serving.lifecycle import launch, log_tail, stop_all
from verlkit.serving.processes import STOP_GRACE_S
from verlkit.serving.spec import TASKS, ServerSpec, ServerStartError
from verlkit.serving.state_file import stop_from_state, update_state, wait_ready_from_state


class _StopRequested(Exception):
    pass


def _spec_from_args(args: argparse.Namespace) -> ServerSpec:
    return ServerSpec(
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


def serve(spec: ServerSpec) -> int:
    """Launch, print the base URL, supervise until a signal (exit 0) or the server's death (exit 1)."""

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
            # wait-ready polls the state file: say "failed" (with the whole message) rather than
            # leave it to time out
            update_state(spec.state_path, name=spec.role, state="failed", error=str(e))
            return 1
        server.update_state(supervised=True)
        print(server.base_url, flush=True)
        if server.external:
            threading.Event().wait()  # nothing to supervise: wait for a signal
        rc = server.wait()
        print(
            f"launcher: the {spec.role!r} server exited with code {rc}. Log: {server.log_path}\n{log_tail(server.log_path)}",
            file=sys.stderr,
        )
        server.stop()
        server.update_state(state="died", error=f"exited with code {rc}")
        return 1
    except _StopRequested:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not interrupt the cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stop_all()
        # Stopped on request: fine once the server was serving; a failure if it never became ready.
        return 0 if server is not None else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m verlkit.serving", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start a server, print its base_url, supervise it until SIGTERM/SIGINT")
    p.add_argument("--name", required=True, help="role: verifier, judge, teacher, ... (file names, env var)")
    p.add_argument("--model", required=True, help="model directory or Hugging Face Hub id (resolved through the HF cache)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.command == "serve":
        if args.extra_args and args.extra_args[0] == "--":
            args.extra_args = args.extra_args[1:]
        return serve(_spec_from_args(args))
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
