"""Served models: vLLM processes we start (or external servers we reuse), their readiness and their end.

``with launch(ServerSpec(...)) as server:`` starts a server in its own process group, waits until it
answered a real request, and stops the whole group on exit (also on signals and when our process dies).
"""

from verlkit.serving.launcher import (  # noqa: F401
    PortInUseError,
    ServedModel,
    ServerSpec,
    ServerStartError,
    gpu_available,
    launch,
    load_lora_adapter,
)
