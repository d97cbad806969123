"""The CPU profile's trainer settings as command-line overrides, and the environment of its processes.

The settings themselves live once, as hydra config fragments in ``verlkit/cpu_profile/config/
cpu_profile/`` (``ppo.yaml``, ``critic.yaml``, ``sft.yaml``): the recipe configs compose them
(``defaults: [<recipe>, cpu_profile/ppo, _self_]``); scripts and tests that build their own verl command
line get the same settings here as ``++key=value`` overrides (``++`` sets a key whether or not verl's
config has it). ``python -m verlkit.cpu_profile.overrides ppo|ppo-critic|sft|env`` prints them one per
line. docs/cpu-profile.md names the blocker each setting removes. Imports nothing of upstream verl.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FRAGMENTS = Path(__file__).resolve().parent / "config" / "cpu_profile"


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


def _literal(value) -> str:
    """A YAML scalar as hydra's override grammar reads it back (interpolations stay interpolations)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if isinstance(value, str) and not text.startswith("${") and any(c in text for c in " ,=:'\"[]{}()"):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def fragment_overrides(name: str, **replace) -> list[str]:
    """``cpu_profile/<name>.yaml`` flattened to ``++dotted.key=value`` lines; ``replace`` maps dotted
    keys to values that take the place of the file's (e.g. the number of workers)."""
    from omegaconf import OmegaConf

    flat: dict[str, object] = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(value, path + ".")
            else:
                flat[path] = value

    walk(OmegaConf.to_container(OmegaConf.load(FRAGMENTS / f"{name}.yaml"), resolve=False), "")
    unknown = sorted(set(replace) - set(flat))
    if unknown:
        raise KeyError(f"cpu_profile/{name}.yaml has no {unknown}")
    flat.update(replace)
    return [f"++{key}={_literal(value)}" for key, value in flat.items()]


def ppo(n_workers: int = 1, use_critic: bool = False) -> list[str]:
    """Overrides for ``python -m verl.trainer.main_ppo`` with ``n_workers`` FSDP workers."""
    # 3 CPUs per worker bundle plus one free CPU per actor: the file's 16 covers up to 3 workers
    cpus = max(16, 4 * n_workers + 4)
    out = fragment_overrides("ppo", **{"trainer.n_gpus_per_node": n_workers, "ray_kwargs.ray_init.num_cpus": cpus})
    return out + (fragment_overrides("critic") if use_critic else [])


def sft(n_procs: int = 1) -> list[str]:
    """Overrides for ``torchrun --nproc_per_node=n_procs -m verl.trainer.sft_trainer`` (and the
    preference trainer built on it)."""
    return fragment_overrides("sft", **{"trainer.n_gpus_per_node": n_procs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
