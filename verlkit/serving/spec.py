"""What to serve (``ServerSpec``), where its files go, and the errors of serving it."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

TASKS = ("generate", "classify")


class ServerStartError(RuntimeError):
    """The server could not be started or never became ready (message names the log file)."""


class PortInUseError(ServerStartError):
    """The requested port is already taken by another process."""


@dataclass
class ServerSpec:
    """What to serve and where. ``model``: a local directory or a Hugging Face Hub id (``launch``
    resolves it through the HF cache before starting anything, see ``verlkit.models.resolve``).
    ``port`` None/0 picks a free port; ``devices`` is a CUDA_VISIBLE_DEVICES subset like ``"0,1"`` (GPU only)."""

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
        """The server's role name: ``name``, else the served model name, else the model directory's name."""
        return self.name or self.served_model_name or Path(self.model).name or "server"

    @property
    def api_model_name(self) -> str:
        """The model name clients send (``served_model_name``, else the role)."""
        return self.served_model_name or self.role

    @property
    def log_path(self) -> Path:
        """``<run_dir>/<role>.vllm.log``: the server's output."""
        return Path(self.run_dir).resolve() / f"{self.role}.vllm.log"

    @property
    def state_path(self) -> Path:
        """``<run_dir>/<role>.server.json``: what was started, for other processes (see state_file)."""
        return Path(self.run_dir).resolve() / f"{self.role}.server.json"


def external_url_env_var(role: str) -> str:
    """``VERLKIT_<ROLE>_URL``, the role upper-cased with every other character as ``_``."""
    return "VERLKIT_" + re.sub(r"[^A-Za-z0-9]", "_", role).upper() + "_URL"


def external_url_for(spec: ServerSpec) -> str | None:
    """``spec.external_url``, else ``VERLKIT_<NAME>_URL``, else ``VERLKIT_EXTERNAL_URL``."""
    return (
        spec.external_url
        or os.environ.get(external_url_env_var(spec.role))
        or os.environ.get("VERLKIT_EXTERNAL_URL")
        or None
    )
