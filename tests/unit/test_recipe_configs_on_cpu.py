"""Every recipe config, composed through verl's hydra on verl's own trainer config, uses only keys verl
knows (outside the recipe's own namespaces): a misspelt key fails here instead of being ignored by a
user's run."""

from __future__ import annotations

import shutil

import pytest
from omegaconf import OmegaConf
from support.recipe_configs import BASES, RECIPES, compose_base, compose_recipe, primary_configs, unknown_keys

# the options of the config groups, each composed too
GROUP_OPTIONS = [
    ("rubric/rubric", ["regularization=kl"]),
    ("rubric/rubric_cpu", ["regularization=kl", "algorithm.adv_estimator=gae"]),
    ("rubric/rubric", ["verification=hybrid"]),
    ("rubric/rubric_cpu", ["verification=hybrid"]),
    ("rubric/rrm", ["regularization=kl"]),
    ("confidence/confidence", ["design=rlcr"]),
    ("confidence/confidence_cpu", ["design=rlcr"]),
    ("rubric/rubric", ["verifier_backend=managed"]),
    ("rubric/rubric", ["verifier_backend=external"]),
    ("rubric/rubric_cpu", ["verifier_backend=managed"]),
    ("confidence/confidence", ["downstream_backend=managed"]),
    ("confidence/confidence", ["downstream_backend=external"]),
    ("confidence/confidence_cpu", ["downstream_backend=managed"]),
    ("pipeline/rloo", ["reward_backend=managed"]),
    ("pipeline/rloo_cpu", ["reward_backend=managed"]),
    ("c3po/c3po", ["method=dpo"]),
    ("c3po/c3po", ["method=sft"]),
    ("c3po/c3po_cpu", ["method=sft_neg"]),
]

_bases: dict = {}


def base_of(config: str):
    trainer = BASES[config]
    if trainer is None:
        return None
    if trainer not in _bases:
        _bases[trainer] = compose_base(trainer)
    return _bases[trainer]


def test_every_recipe_config_is_checked():
    assert primary_configs() == sorted(BASES)


@pytest.mark.parametrize("config,overrides", [(c, []) for c in sorted(BASES)] + GROUP_OPTIONS)
def test_recipe_config_has_no_key_verl_does_not_know(config, overrides):
    cfg = compose_recipe(config, overrides)
    assert unknown_keys(cfg, base_of(config)) == []
    assert "recipe" in cfg  # the driver's settings travel with the trainer's config


def test_a_typo_in_a_recipe_config_is_found(tmp_path):
    """A misspelt key in a recipe's YAML composes without a complaint from hydra; the check finds it."""
    shutil.copytree(RECIPES / "rubric", tmp_path / "rubric")
    yaml = tmp_path / "rubric" / "config" / "rubric.yaml"
    yaml.write_text(yaml.read_text().replace("    ppo_mini_batch_size: 64", "    ppo_mini_batch_sz: 64"))
    cfg = compose_recipe("rubric/rubric_cpu", config_root=tmp_path)  # composes fine: hydra merges new keys
    assert unknown_keys(cfg, base_of("rubric/rubric_cpu")) == ["actor_rollout_ref.actor.ppo_mini_batch_sz"]


def test_a_new_key_from_the_command_line_is_found():
    cfg = compose_recipe("pipeline/sft_cpu", ["+optim.lrr=1e-3", "+trainer.totl_epochs=2", "+recipe.anything=1"])
    assert unknown_keys(cfg, base_of("pipeline/sft_cpu")) == ["optim.lrr", "trainer.totl_epochs"]


def test_the_open_namespaces_and_verls_free_form_mappings_pass():
    cfg = compose_recipe("rubric/rubric_cpu")
    # in verl's base: no reward_kwargs, no ray_init.num_gpus, an empty override_config
    base = base_of("rubric/rubric_cpu")
    assert OmegaConf.select(base, "reward.custom_reward_function.reward_kwargs") is None
    assert "num_gpus" not in base.ray_kwargs.ray_init and len(base.critic.model.override_config) == 0
    assert cfg.ray_kwargs.ray_init.num_gpus == 1 and cfg.critic.model.override_config.attn_implementation == "sdpa"
    # a field of verl's FSDPEngineConfig dataclass that its YAML leaves out
    sft = compose_recipe("pipeline/sft_cpu")
    assert "mixed_precision" not in base_of("pipeline/sft_cpu").engine and sft.engine.mixed_precision.param_dtype == "fp32"


def test_a_pipeline_setting_outside_recipe_is_found():
    cfg = compose_recipe("pipeline/pipeline_cpu", ["+trainer.logger=[console]"])
    assert unknown_keys(cfg, None) == ["trainer"]
