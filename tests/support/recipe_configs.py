"""Composing the recipes' hydra configs in tests, and finding the keys verl does not know.

Hydra merges a YAML file's keys into the config whether or not verl's config has them, so a typo in a
recipe config (``ppo_mini_batch_sz``) composes fine and is silently ignored by the trainer.
:func:`unknown_keys` compares a composed recipe config with verl's own base config of the same trainer
and lists every key path the base lacks, outside the namespaces verl leaves open.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from omegaconf import OmegaConf, SCMode

from recipes.compose import compose

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"

# Every primary config of every recipe -> the trainer config it composes on (its base).
BASES = {
    "rubric/rubric": "ppo_trainer",
    "rubric/rubric_cpu": "ppo_trainer",
    "rubric/rrm": "ppo_trainer",
    "rubric/rrm_cpu": "ppo_trainer",
    "confidence/confidence": "ppo_trainer",
    "confidence/confidence_cpu": "ppo_trainer",
    "c3po/c3po": "preference_trainer",
    "c3po/c3po_cpu": "preference_trainer",
    "pipeline/pipeline": None,  # the pipeline's own settings: a `recipe` section only
    "pipeline/pipeline_cpu": None,
    "pipeline/sft": "sft_trainer_engine",
    "pipeline/sft_cpu": "sft_trainer_engine",
    "pipeline/dpo": "preference_trainer",
    "pipeline/dpo_cpu": "preference_trainer",
    "pipeline/rm": "preference_trainer",
    "pipeline/rm_cpu": "preference_trainer",
    "pipeline/judge": "preference_trainer",
    "pipeline/judge_cpu": "preference_trainer",
    "pipeline/rloo": "ppo_trainer",
    "pipeline/rloo_cpu": "ppo_trainer",
}

# Ours: the driver's settings, the options verl passes to our reward registry, the preference trainer's group.
OPEN_NAMESPACES = ("recipe", "reward.custom_reward_function.reward_kwargs", "preference")
# Mappings verl hands on as they are: keyword arguments of ray.init().
PASS_THROUGH = ("ray_kwargs.ray_init",)


def primary_configs() -> list[str]:
    """``<recipe>/<name>`` of every YAML file directly in a ``recipes/<recipe>/config/`` folder."""
    return sorted(f"{p.parent.parent.name}/{p.stem}" for p in RECIPES.glob("*/config/*.yaml"))


def compose_recipe(config: str, overrides=(), config_root: Path = RECIPES):
    """``<recipe>/<name>`` composed the way its driver and trainer compose it."""
    recipe, name = config.split("/")
    return compose(config_root / recipe / "config", name, list(overrides))


def compose_base(trainer: str):
    """verl's own config of a trainer (or the preference trainer's), with no recipe on top."""
    if trainer == "preference_trainer":
        from verlkit.preference.train import compose_config

        return compose_config()
    import verl

    return compose(Path(verl.__file__).parent / "trainer" / "config", trainer)


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=False, structured_config_mode=SCMode.DICT)


def _dataclass_fields(node: dict) -> set[str]:
    """The fields of the dataclass a base node names in ``_target_`` (verl's config dataclasses have
    fields their YAML leaves out, e.g. FSDPEngineConfig.mixed_precision)."""
    target = node.get("_target_")
    if not isinstance(target, str):
        return set()
    module, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return set()
    return {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()


def unknown_keys(cfg, base) -> list[str]:
    """Key paths of ``cfg`` that ``base`` does not have: not a key of its YAML, not a field of the
    dataclass a node names, not under an empty (free-form) mapping such as ``override_config``, not in
    :data:`OPEN_NAMESPACES` or :data:`PASS_THROUGH`."""
    found: list[str] = []

    def walk(node: dict, base_node: dict, prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path in OPEN_NAMESPACES or prefix.rstrip(".") in PASS_THROUGH:
                continue
            if key in base_node:
                below = base_node[key]
                if isinstance(value, dict) and isinstance(below, dict) and below:
                    walk(value, below, path + ".")
            elif key not in _dataclass_fields(base_node):
                found.append(path)

    walk(_plain(cfg), _plain(base) if base is not None else {}, "")
    return found
