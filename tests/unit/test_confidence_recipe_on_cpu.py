"""run_confidence.sh's command lines, composed through verl 0.9.1's own hydra config without launching."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl
from recipes.confidence import (
    ConfidenceRun,
    check_devices,
    latest_actor_checkpoint,
    overrides,
)
from recipes.confidence.args import main as args_main

CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")


def compose_ppo(args):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=args)


def gpu_run(**kw):
    kw.setdefault("downstream_url", "http://127.0.0.1:8001/v1")
    return ConfidenceRun(model="/models/qwen2-0.5b-instruct", train_files="/data/cgp/train.parquet",
                         val_files="/data/cgp/dev.parquet", **kw)


def assert_reference_grpo(cfg):
    """The seed's MedMCQA GRPO settings (reference-methods §2.6, mapped in §2.11)."""
    actor = cfg.actor_rollout_ref.actor
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.algorithm.norm_adv_by_std_in_grpo is False  # TRL scale_rewards=false
    assert actor.use_kl_loss is True and actor.kl_loss_coef == 0.04 and actor.kl_loss_type == "low_var_kl"
    assert cfg.algorithm.use_kl_in_reward is False
    assert actor.optim.lr == 1e-6 and actor.ppo_epochs == 4 and actor.grad_clip == 1.0
    assert actor.entropy_coeff == 0
    rollout = cfg.actor_rollout_ref.rollout
    assert (rollout.temperature, rollout.top_p, rollout.top_k) == (0.1, 0.95, 50)


def test_gpu_cgp_command_line_has_the_reference_settings():
    cfg = compose_ppo(overrides(gpu_run(n_gpus_per_node=3)))
    assert_reference_grpo(cfg)
    assert cfg.actor_rollout_ref.rollout.n == 8 and cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.data.max_response_length == 256  # short hints
    assert cfg.data.train_batch_size == 32 and cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 32
    assert cfg.trainer.n_gpus_per_node == 3 and cfg.trainer.total_epochs == 3 and cfg.trainer.save_freq > 0
    fn = cfg.reward.custom_reward_function
    assert fn.path == "pkg://verl.utils.reward_score.registry" and fn.name == "compute_score_async"
    assert OmegaConf.to_container(fn.reward_kwargs) == {"cgp": {
        "url": "http://127.0.0.1:8001/v1", "model": "downstream", "variant": "log_penalized", "max_tokens": 256,
    }}


def test_hosted_downstream_passes_the_key_by_env_var_name_and_a_rate_limit():
    cfg = compose_ppo(overrides(gpu_run(downstream_url="https://api.example.com/v1", downstream_name="gpt-4o-mini",
                                        downstream_api_key_env="OPENAI_API_KEY", downstream_rate_limit_rps=5.0)))
    cgp = cfg.reward.custom_reward_function.reward_kwargs.cgp
    assert cgp.api_key_env == "OPENAI_API_KEY" and cgp.rate_limit_rps == 5.0 and cgp.model == "gpt-4o-mini"


def test_the_reward_options_are_accepted_by_the_cgp_reward(monkeypatch):
    monkeypatch.setenv("K", "a-key")  # the options check that the named key variable is set
    from verl.utils.reward_score.calibration import CGPOptions
    from verl.utils.reward_score.options import parse_options

    cfg = compose_ppo(overrides(gpu_run(variant="brier", downstream_api_key_env="K", downstream_rate_limit_rps=2)))
    opts = parse_options(CGPOptions, OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs.cgp))
    assert opts.variant == "brier" and opts.rate_limit_rps == 2 and opts.api_key_env == "K"


def test_gpu_rlcr_command_line_has_no_downstream_and_longer_responses():
    cfg = compose_ppo(overrides(gpu_run(design="rlcr", downstream_url="")))
    assert_reference_grpo(cfg)
    assert cfg.actor_rollout_ref.rollout.n == 8 and cfg.data.max_response_length == 1024
    assert not cfg.reward.custom_reward_function.get("reward_kwargs")
    assert cfg.reward.custom_reward_function.name == "compute_score_async"


def test_cpu_command_line_composes_and_saves_its_last_step():
    cfg = compose_ppo(overrides(gpu_run(profile="cpu", steps=2)))
    assert_reference_grpo(cfg)
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.device == "cpu"
    assert cfg.trainer.total_training_steps == 2 and cfg.trainer.save_freq == 2


def test_cgp_without_a_downstream_and_unknown_designs_are_refused():
    with pytest.raises(ValueError, match="downstream_url"):
        gpu_run(downstream_url="")
    with pytest.raises(ValueError, match="design"):
        gpu_run(design="selfcheck")


def test_overlapping_devices_are_named():
    assert check_devices("0,1,2", "3") is None
    message = check_devices("0,1,2", "2,3")
    assert "share device(s) 2" in message and "DOWNSTREAM_DEVICES=2,3" in message
    assert args_main(["check-devices", "0, 1", "1"]) == 2 and args_main(["check-devices", "0", "1"]) == 0


def test_latest_actor_checkpoint_follows_verls_marker(tmp_path):
    for step in (1, 2, 10):
        (tmp_path / f"global_step_{step}" / "actor").mkdir(parents=True)
    assert latest_actor_checkpoint(str(tmp_path)).endswith("global_step_10/actor")  # numeric, not lexical
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2")
    assert latest_actor_checkpoint(str(tmp_path)).endswith("global_step_2/actor")
    with pytest.raises(FileNotFoundError, match="no global_step"):
        latest_actor_checkpoint(str(tmp_path / "empty"))


def test_args_cli_prints_one_override_per_line(capsys):
    assert args_main(["overrides", "--profile", "gpu", "--design", "rlcr", "--model", "/m",
                      "--train", "/t.parquet", "--val", "/v.parquet", "--n-gpus-per-node", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "trainer.n_gpus_per_node=4" in lines and "algorithm.norm_adv_by_std_in_grpo=False" in lines
    compose_ppo(lines)


def test_eval_report_tables_the_metrics_and_fails_on_a_condition_without_answers():
    from recipes.confidence import eval_report

    answered = {"n": 16, "parse_failure_rate": 0.25, "request_failures": 1,
                "all": {"accuracy": 0.5, "ece": 0.125, "brier": 0.25, "auroc": None, "mean_confidence": 0.6}}
    table, problems = eval_report({"conditions": {"with_hint": answered, "baseline": {"n": 0, "request_failures": 16}}})
    assert problems == ["baseline: no answered rows (16 request failures)"]
    row = table.splitlines()[1].split()
    assert row == ["with_hint", "16", "0.500", "0.125", "0.250", "n/a", "0.600", "0.250", "1"]
    assert eval_report({"conditions": {"policy": answered}})[1] == []
