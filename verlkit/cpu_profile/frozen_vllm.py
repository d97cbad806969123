"""A rollout replica for frozen served models on the CPU: the CPU build of vLLM inside a Ray actor.

verl 0.9.1 serves a reward model (verifier, rubric model, downstream LLM, scalar reward model) itself
when ``reward.reward_model.enable=True``: its ``RewardModelManager`` builds one rollout replica per
``tensor_model_parallel_size`` GPUs of its pool, puts its naive router in front of them and passes
the router's address to the reward function. verl's own vLLM replica cannot start on a machine
without an accelerator, so the CPU profile registers this one as ``rollout.name=vllm_cpu``
(``reward.reward_model.rollout.name=vllm_cpu``); the manager and the router run unchanged.

Per replica:

* verl's worker group places one :class:`FrozenVLLMServer` actor in the replica's bundle of the pool
  (colocated with the trainer's pool, or a standalone pool), as it places the checkpoint-engine
  worker of a GPU replica. It holds no model weights of its own.
* :meth:`FrozenVLLMServer.start` runs on the actor's main thread and starts
  ``python -m vllm.entrypoints.openai.api_server`` with :func:`verlkit.serving.launch`: its own
  process group, bound to 127.0.0.1 on a free port, ready only once it answered a real generation (or
  classification, for a ``*ForSequenceClassification`` model), log ``<run dir>/<role>.vllm.log``.
  The server gets SIGTERM when the actor's process dies however it dies (Linux parent-death signal,
  armed because the launch runs on the main thread), so a killed replica or ``ray.shutdown()`` leaves
  no vLLM process behind; the actor's own exit paths stop the group as well.
* The served model name is the model path verl was given (``HFModelConfig.local_path``), which is
  what verl's GPU replica serves too, so a reward function names the model the same way on both
  (``verlkit.clients.routing.router_model_name``).

Frozen: the weights never change, so there is no weight-update path. ``sleep``/``wake_up`` (verl calls
them around each colocated reward computation, and once at start-up when ``free_cache_engine``) are
no-ops: the CPU build of vLLM has no sleep mode, its KV cache is a fixed ``VLLM_CPU_KVCACHE_SPACE``
of RAM, and a CPU run has no accelerator memory to hand back to the trainer. The other control calls
verl may make (abort/resume, KV-cache, profiling) are no-ops for the same reason.

One process per replica: ``tensor_model_parallel_size``, ``data_parallel_size`` and
``pipeline_model_parallel_size`` must be 1. The server binds 127.0.0.1, so every replica must run on
the node of verl's router (the CPU profile is single-node).

Settings from the environment (Ray workers inherit the driver's): ``VERLKIT_RUN_DIR`` (else
``RUN_DIR``, else ``<tmp>/verlkit-replicas``) for logs and state files, and
``VERLKIT_REPLICA_READY_TIMEOUT`` (seconds, default 900: Ray and vLLM on 2 cores start slowly).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import ray

from verl.single_controller.ray import RayClassWithInitArgs
from verl.workers.rollout.replica import RolloutReplica
from verlkit.serving import ServedModel, ServerSpec, launch

logger = logging.getLogger("verlkit.cpu_profile.frozen_vllm")

REPLICA_NAME = "vllm_cpu"
READY_TIMEOUT_ENV = "VERLKIT_REPLICA_READY_TIMEOUT"
DEFAULT_READY_TIMEOUT_S = 900.0


def replica_run_dir() -> Path:
    """Where replicas write their vLLM logs and state files (see the module docstring)."""
    chosen = os.environ.get("VERLKIT_RUN_DIR") or os.environ.get("RUN_DIR")
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / "verlkit-replicas"


def _model_config_json(model_path: str) -> dict:
    try:
        return json.loads((Path(model_path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}


def serving_task(model_path: str) -> str:
    """``classify`` for a ``*ForSequenceClassification`` model (served for ``/classify``), else
    ``generate``: what the readiness probe must exercise."""
    architectures = _model_config_json(model_path).get("architectures") or []
    return "classify" if any(str(a).endswith("ForSequenceClassification") for a in architectures) else "generate"


def max_model_len_for(config: Any, model_path: str) -> int:
    """``rollout.max_model_len``, else prompt + response length, never past the model's positions."""
    wanted = config.max_model_len or (config.prompt_length + config.response_length)
    positions = _model_config_json(model_path).get("max_position_embeddings")
    return int(min(wanted, positions)) if isinstance(positions, int) and not config.max_model_len else int(wanted)


class FrozenVLLMServer:
    """One replica's Ray actor: owns one vLLM process group (see the module docstring).

    A plain (non-async, one-call-at-a-time) actor on purpose: Ray runs its methods on the process's
    main thread, which the parent-death signal needs."""

    def __init__(self, model_path: str, served_model_name: str, max_model_len: int, role: str,
                 ready_timeout_s: float | None = None):
        self._spec = ServerSpec(
            model=model_path,
            served_model_name=served_model_name,
            name=role,
            host="127.0.0.1",
            port=None,
            max_model_len=max_model_len,
            run_dir=replica_run_dir(),
            ready_timeout_s=ready_timeout_s or float(os.environ.get(READY_TIMEOUT_ENV, DEFAULT_READY_TIMEOUT_S)),
            use_gpu=False,
            task=serving_task(model_path),
        )
        self._served: ServedModel | None = None
        self._on_main_thread = False

    def start(self) -> str:
        """Start the server (idempotent) and return its ``host:port`` once it answered a real request."""
        if self._served is None:
            self._on_main_thread = threading.current_thread() is threading.main_thread()
            if not self._on_main_thread:
                logger.warning("%s: not on the actor's main thread, so no parent-death signal", self._spec.role)
            self._spec.run_dir.mkdir(parents=True, exist_ok=True)
            self._served = launch(self._spec)
        host_port = self._served.base_url.removeprefix("http://").removesuffix("/v1")
        return host_port

    def status(self) -> dict:
        """What runs: PIDs of the vLLM group, its log, whether the parent-death signal is armed."""
        served = self._served
        if served is None:
            return {"started": False}
        served.record_pids()
        return {
            "started": True, "alive": served.is_alive(), "pid": served.pid, "pgid": served.pgid,
            "pids": served.pids, "base_url": served.base_url, "model": served.model_name,
            "log_path": str(served.log_path), "actor_pid": os.getpid(),
            "parent_death_signal": self._on_main_thread,
        }  # fmt: skip

    def stop(self) -> None:
        if self._served is not None:
            self._served.stop()

    # verl's replica control calls: nothing to do for a frozen model on the CPU (module docstring).
    def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    def sleep(self) -> None:
        return None

    def clear_kv_cache(self) -> None:
        return None

    def release_kv_cache(self) -> None:
        return None

    def resume_kv_cache(self) -> None:
        return None

    def wait_for_requests_to_drain(self) -> None:
        return None

    def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {"aborted_count": 0, "request_ids": []}

    def resume_generation(self) -> None:
        return None

    def set_global_steps(self, global_steps: int) -> None:
        return None

    def start_profile(self, **kwargs) -> None:
        return None

    def stop_profile(self) -> None:
        return None


class FrozenVLLMReplica(RolloutReplica):
    """verl's ``RolloutReplica`` for ``rollout.name=vllm_cpu``: one :class:`FrozenVLLMServer` per replica."""

    def _role(self) -> str:
        kind = "reward" if self.is_reward_model else "teacher" if self.is_teacher_model else "served"
        return f"{kind}_replica_{self.replica_rank}{self.name_suffix}"

    def get_ray_class_with_init_args(self) -> RayClassWithInitArgs:
        """The actor verl's worker group places in this replica's bundle: the server itself (a GPU
        replica places a checkpoint-engine worker there, for weight updates a frozen model never gets)."""
        path = str(self.model_config.local_path or self.model_config.path)
        return RayClassWithInitArgs(
            cls=ray.remote(FrozenVLLMServer),
            model_path=path,
            served_model_name=path,
            max_model_len=max_model_len_for(self.config, path),
            role=self._role(),
        )

    async def launch_servers(self):
        if self.world_size != 1:
            raise ValueError(
                f"rollout.name={REPLICA_NAME} runs one CPU process per replica: tensor/data/pipeline parallel "
                f"sizes must be 1 (their product is {self.world_size})"
            )
        if len(self.workers) != 1:
            raise RuntimeError(f"{self._role()}: expected one server actor in its bundle, got {len(self.workers)}")
        server = self.workers[0]
        self._server_address = await server.start.remote()
        self.servers = [server]
        self._server_handle = server
        logger.info("%s serving %s at http://%s", self._role(), self.model_config.local_path, self._server_address)
