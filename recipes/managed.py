"""Served models that verl manages: the choice between our launcher and verl's reward-model replicas.

Each recipe with a served model (the rubric verifier, the Prompt4Trust downstream model) has a config
group for its backend (``verifier_backend``, ``downstream_backend``): ``launcher`` (the driver starts
one vLLM server with ``verlkit.serving``, or attaches to a given URL), ``external`` (a running server;
its URL is required) or ``managed`` (the group composes ``reward.reward_model.*``: verl's
RewardModelManager starts the replicas on Ray and the reward follows verl's router). This module holds
what the drivers decide around that choice; the settings themselves are in the group files.
"""

from __future__ import annotations

import os
from pathlib import Path

from recipes.compose import SettingError
from recipes.driver import RecipeError

BACKENDS = ("launcher", "managed", "external")


def backend_choice(raw: str) -> str:
    """A ``*_BACKEND`` knob's value as the option of its config group."""
    if raw not in BACKENDS:
        raise SettingError(f"must be one of {', '.join(BACKENDS)}, got {raw!r}")
    return raw


def check_backend(section, what: str, url_knob: str) -> str:
    """The backend of a served-model config section (``recipe.verifier``, ``recipe.downstream``), checked
    against its URL: ``external`` needs one; ``managed`` refuses one (the URL would win over verl's
    router, and the replicas would serve nobody). Raises RecipeError (code 2)."""
    backend = section.backend
    if backend not in BACKENDS:
        raise RecipeError(f"{what} backend must be one of {', '.join(BACKENDS)}, got {backend!r}", code=2)
    if backend == "external" and not section.url:
        raise RecipeError(f"{what} backend external needs the running server's URL ({url_knob})", code=2)
    if backend == "managed" and section.url:
        raise RecipeError(f"{what} backend managed: verl serves it behind its router; {url_knob} names another "
                          "server (use the external backend for that)", code=2)  # fmt: skip
    return backend


def refuse_launcher_placement(backend: str, placements: dict[str, object]) -> None:
    """With ``managed``, verl places the replicas (``recipe.<model>.managed``): the launcher's device
    knobs (name -> value) would be silently ignored, so a set one is an error (code 2)."""
    given = [name for name, value in placements.items() if value]
    if backend == "managed" and given:
        raise RecipeError(f"{', '.join(given)} place the launcher's server; with the managed backend verl places "
                          "the replicas (docs/gpu.md, 'Served models managed by verl')", code=2)  # fmt: skip


def pool_gpus(cfg) -> int:
    """GPUs of verl's standalone reward-model pool (0 when the replicas are colocated with the actor)."""
    rm = cfg.reward.reward_model
    if not (rm.enable and rm.enable_resource_pool):
        return 0
    return int(rm.nnodes) * int(rm.n_gpus_per_node)


def cpu_ray_overrides(cfg) -> list[str]:
    """On the CPU profile, Ray's logical GPUs cover the trainer's workers AND a standalone reward pool
    (verl asks Ray for one GPU per replica process; cpu_profile/ppo.yaml counts the trainer's only)."""
    return ray_gpus_override(int(cfg.trainer.n_gpus_per_node) * int(cfg.trainer.nnodes), pool_gpus(cfg))


def ray_gpus_override(trainer_gpus: int, pool: int) -> list[str]:
    """``ray_kwargs.ray_init.num_gpus`` for the trainer's and a standalone pool's logical GPUs (none
    without a pool: cpu_profile/ppo.yaml's count stands)."""
    return [f"ray_kwargs.ray_init.num_gpus={trainer_gpus + pool}"] if pool else []


def replica_logs_in(run_dir: Path) -> None:
    """verl's replicas (Ray actors, children of the trainer) write their server logs to the run directory:
    ``reward_replica_<rank>.vllm.log`` (the CPU replica reads ``VERLKIT_RUN_DIR``; Ray workers inherit
    the trainer's environment, which is ours)."""
    os.environ["VERLKIT_RUN_DIR"] = str(run_dir)
