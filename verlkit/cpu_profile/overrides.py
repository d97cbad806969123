"""Hydra overrides that put ``verl.trainer.main_ppo`` and ``verl.trainer.sft_trainer`` on the CPU profile.

Recipes append these when no GPU is visible (``python -m verlkit.cpu_profile.overrides ppo`` prints one
per line for shell scripts). Each line answers one accelerator assumption of verl 0.9.1; see
docs/cpu-profile.md for the blocker each one removes.
"""

from __future__ import annotations

import argparse

ROLES = ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic")


def env() -> dict[str, str]:
    """Environment for every process of a CPU-profile run (inherited by Ray workers)."""
    return {
        "VERL_PLATFORM": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_DEDUP_LOGS": "0",
        "WANDB_MODE": "offline",
        # The raylet starts spare Python workers when the driver connects (the "N PYTHON worker
        # processes ... Nx the maximum expected" warnings on 2 cores); every actor gets its own
        # process anyway, so the spares only cost a worker boot and ~85 MB each. Measured with
        # benchmarks/profile_reward_phase.py (docs/cpu-profile.md).
        "RAY_prestart_worker_first_driver": "0",
    }


def ppo(n_workers: int = 1, use_critic: bool = False) -> list[str]:
    out = [
        "trainer.device=cpu",
        f"trainer.n_gpus_per_node={n_workers}",
        "trainer.nnodes=1",
        # verl's resource pools always ask Ray for GPUs: give Ray logical ones, and enough logical
        # CPUs for its 3-CPUs-per-GPU bundles.
        f"+ray_kwargs.ray_init.num_gpus={n_workers}",
        f"ray_kwargs.ray_init.num_cpus={max(16, 4 * n_workers + 4)}",
        # The dashboard is ~10 Python processes (~4 CPU-s to start, then idle polling); nothing
        # in verl needs it.
        "+ray_kwargs.ray_init.include_dashboard=False",
        # TransferQueue defaults to 8 storage-unit actors, one Python process each (~400 MB, ~4.5
        # CPU-s to boot and import torch); a CPU run's batches fit in one.
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.mode=async",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.free_cache_engine=False",
        "actor_rollout_ref.rollout.load_format=auto",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.model.enable_gradient_checkpointing=False",
        # default attention is flash-attention 2
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "data.dataloader_num_workers=0",
        "reward.num_workers=1",
    ]
    for role in ROLES[:2]:
        out += [
            f"{role}.strategy=fsdp2",  # FSDP1 hard-codes sync_module_states=True (needs a GPU)
            f"{role}.use_torch_compile=False",
        ]
    if use_critic:
        out += [
            "critic.strategy=fsdp2",
            "critic.model.use_remove_padding=False",
            "critic.model.enable_gradient_checkpointing=False",
            "+critic.model.override_config.attn_implementation=sdpa",
        ]
    return out


def sft(n_procs: int = 1) -> list[str]:
    """Overrides for ``torchrun --nproc_per_node=n_procs -m verl.trainer.sft_trainer`` (and the
    preference trainer built on it). Checked with 1 and 2 processes (tests/integration/test_sft_cpu.py)."""
    return [
        "trainer.device=cpu",
        "trainer.nnodes=1",
        f"trainer.n_gpus_per_node={n_procs}",
        # FSDP1 hard-codes sync_module_states=True, which needs an accelerator.
        "engine.strategy=fsdp2",
        # The default is bf16 autocast; full fp32 is the natural CPU precision, and it keeps
        # losses comparable across process counts.
        "+engine.mixed_precision.param_dtype=fp32",
        "+engine.mixed_precision.reduce_dtype=fp32",
        "+engine.mixed_precision.buffer_dtype=fp32",
        # torch.compile of the entropy helper would need inductor's C++ toolchain for nothing.
        "engine.use_torch_compile=False",
        # The default attention is flash-attention 2.
        "+model.override_config.attn_implementation=sdpa",
        "model.use_remove_padding=False",
        "model.enable_gradient_checkpointing=False",
        # Dataloader worker processes only add start-up time and teardown noise here.
        "data.num_workers=0",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["ppo", "ppo-critic", "sft", "env"])
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.kind == "env":
        lines = [f"{k}={v}" for k, v in env().items()]
    elif args.kind == "sft":
        lines = sft(args.workers)
    else:
        lines = ppo(args.workers, use_critic=args.kind == "ppo-critic")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
