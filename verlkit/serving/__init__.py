"""Served models: vLLM processes we start (or external servers we reuse), their readiness and their end.

``with launch(ServerSpec(...)) as server:`` starts a server in its own process group, waits until it
answered a real request, and stops the whole group on exit (also on signals and when our process dies).
``server = launch(spec); ...; server.stop()`` works the same way. ``launch`` is ``start`` then
``wait_ready``: servers that do not share a GPU can be started side by side and waited for in turn.

Modules, bottom to top: ``spec`` (ServerSpec, errors), ``processes`` (PIDs, process groups, ports),
``vllm_command`` (the vLLM command line for GPU or the CPU build), ``probes`` (readiness requests,
LoRA loading), ``state_file`` (``<role>.server.json``), ``lifecycle`` (launch, ServedModel, stopping on
exit) and ``cli`` (``python -m verlkit.serving serve|wait-ready|stop``). Only the standard library
and ``verlkit.clients.urls`` are imported: no torch, no verl.
"""

from verlkit.serving.lifecycle import ServedModel, launch, start, stop_all, wait_ready
from verlkit.serving.probes import load_lora_adapter, probe
from verlkit.serving.spec import PortInUseError, ServerSpec, ServerStartError
from verlkit.serving.vllm_command import build_command, gpu_available

__all__ = [
    "PortInUseError",
    "ServedModel",
    "ServerSpec",
    "ServerStartError",
    "build_command",
    "gpu_available",
    "launch",
    "load_lora_adapter",
    "probe",
    "start",
    "stop_all",
    "wait_ready",
]
