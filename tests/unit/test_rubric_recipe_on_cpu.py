"""run_rubric.sh's command lines, composed through verl 0.9.1's own hydra config without launching."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl
from recipes.rubric import RubricRun, overrides, rrm_overrides

CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")


def compose_ppo(args):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=args)


def original_8gpu_run(**kw):
    return RubricRun(model="/models/policy", train_files="/data/train.parquet", val_files="/data/test.parquet",
                     verifier_url="http://127.0.0.1:8000/v1", verifier_name="rubric-model", **kw)


def test_gpu_command_line_of_the_original_8gpu_configuration_composes():
    cfg = compose_ppo(overrides(original_8gpu_run()))
    assert cfg.algorithm.adv_estimator == "gae" and cfg.critic.model.path == "/models/policy"
    assert cfg.data.train_batch_size == 512 and cfg.actor_rollout_ref.rollout.n == 8
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 64
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 15360
    assert cfg.actor_rollout_ref.rollout.max_num_batched_tokens == 5120
    assert cfg.actor_rollout_ref.actor.optim.lr == 5e-7 and cfg.critic.optim.lr == 9e-6
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False and cfg.algorithm.use_kl_in_reward is False
    assert cfg.trainer.n_gpus_per_node == 8 and cfg.trainer.total_epochs == 12
    kwargs = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs)
    assert kwargs["tinyv"] == {
        "url": "http://127.0.0.1:8000/v1", "model": "rubric-model", "setup": "tinyv_only", "weight": 1.0,
        "template": "rubric", "max_concurrency": 64, "timeout_s": 120.0, "on_failure": "rule",
    }
    assert cfg.reward.custom_reward_function.name == "compute_score_async"
    # ... and the tinyv reward accepts them as they come from hydra
    from verl.utils.reward_score.options import parse_options
    from verl.utils.reward_score.tinyv import TinyVOptions

    opts = parse_options(TinyVOptions, kwargs["tinyv"])
    assert (opts.template, opts.setup, opts.timeout_s, opts.model) == ("rubric", "tinyv_only", 120.0, "rubric-model")


def test_grpo_and_kl_variants_compose():
    cfg = compose_ppo(overrides(original_8gpu_run(algorithm="grpo", no_entropy_loss_and_kl=False, setup="addon")))
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.actor_rollout_ref.actor.use_kl_loss is True
    assert cfg.reward.custom_reward_function.reward_kwargs.tinyv.setup == "addon"


def test_cpu_command_line_composes():
    cfg = compose_ppo(overrides(original_8gpu_run(profile="cpu", algorithm="grpo")))
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.device == "cpu"


def test_the_originals_removed_keys_fail():
    # The original passed its verifier setup as reward_model.tinyv_setup; verl 0.9.1 has no such key.
    with pytest.raises(Exception, match="tinyv_setup"):
        compose_ppo(overrides(original_8gpu_run()) + ["reward_model.tinyv_setup=addon"])


def test_rrm_training_command_lines_compose():
    cfg = compose_ppo(rrm_overrides("/models/rrm-sft", "/data/train_rrm.parquet", "/data/test_rrm.parquet"))
    assert cfg.data.train_batch_size == 128 and cfg.data.max_prompt_length == 10000
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 128
    assert cfg.reward.custom_reward_function.name == "compute_score_async"
    assert "reward_kwargs" not in cfg.reward.custom_reward_function or not cfg.reward.custom_reward_function.reward_kwargs
    cfg = compose_ppo(rrm_overrides("/m", "/t.parquet", "/v.parquet", profile="cpu", algorithm="grpo"))
    assert cfg.data.max_prompt_length == 512 and cfg.actor_rollout_ref.rollout.name == "hf"
