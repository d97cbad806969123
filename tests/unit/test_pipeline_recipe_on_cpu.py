"""The pipeline's command lines (recipes/pipeline) composed through verl 0.9.1's own hydra configs,
its stage selection and its report, without launching anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import verl
from recipes.pipeline import PipelineRun, overrides, parse_stages, report
from verlkit.preference.train import compose_config

CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")


def compose_verl(name: str, args: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name=name, overrides=args)


def run(profile: str, **kw) -> PipelineRun:
    return PipelineRun(profile=profile, model="/models/init", data="/data", run_dir="/runs/p", **kw)


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_sft_stage_composes_with_verls_sft_config(profile):
    cfg = compose_verl("sft_trainer_engine", overrides("sft", run(profile)))
    assert cfg.model.path == "/models/init" and cfg.data.messages_key == "messages"
    assert cfg.data.train_files == "/data/sft/train.parquet" and cfg.data.val_files == "/data/sft/val.parquet"
    assert cfg.trainer.default_local_dir == "/runs/p/sft/checkpoints"
    assert cfg.optim.lr == (1e-3 if profile == "cpu" else 1e-5)
    assert cfg.trainer.device == ("cpu" if profile == "cpu" else "cuda")


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_dpo_and_reward_model_stages_compose_with_the_preference_trainer(profile):
    dpo = compose_config(overrides("dpo", run(profile)))
    assert dpo.preference.loss == "dpo" and dpo.preference.beta == 0.1
    assert dpo.data.train_files == "/data/prefs/train.parquet"
    rm = compose_config(overrides("rm", run(profile)))
    assert rm.preference.loss == "bt" and rm.trainer.default_local_dir == "/runs/p/rm/checkpoints"


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_rloo_stage_composes_with_verls_ppo_config(profile):
    cfg = compose_verl("ppo_trainer", overrides("rloo", run(profile, rm_url="http://127.0.0.1:9/v1", rm_tokenizer="/rm")))
    assert cfg.algorithm.adv_estimator == "rloo" and cfg.actor_rollout_ref.rollout.n == 4
    assert cfg.actor_rollout_ref.rollout.temperature == 0.7 and cfg.actor_rollout_ref.rollout.top_p == 0.9
    kw = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs)
    assert kw == {"scalar_rm": {"url": "http://127.0.0.1:9/v1", "model": "reward_model", "tokenizer": "/rm"}}
    from verl.utils.reward_score.options import parse_options
    from verl.utils.reward_score.scalar_rm import ScalarRMOptions

    assert parse_options(ScalarRMOptions, kw["scalar_rm"]).tokenizer == "/rm"  # the reward accepts them
    assert cfg.actor_rollout_ref.rollout.name == ("hf" if profile == "cpu" else "vllm")


def test_rloo_needs_the_served_reward_model():
    with pytest.raises(ValueError, match="reward model"):
        overrides("rloo", run("cpu"))


def test_stage_selection_keeps_pipeline_order_and_rejects_unknown_stages():
    assert parse_stages("eval, sft,rm") == ["sft", "rm", "eval"]
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("sft,ppo")


def test_report_reads_every_stage(tmp_path: Path):
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "metrics.json").write_text(json.dumps({"1": {"train/loss": 3.0}, "2": {"train/loss": 2.0}}))
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "eval.json").write_text(json.dumps({"accuracy": 0.95, "n_scored": 20}))
    (tmp_path / "eval" / "rloo").mkdir(parents=True)
    summary = {"win_rate": 0.5, "tie_rate": 0.25, "loss_rate": 0.25, "mean_reward_difference": 0.1, "ci": [-0.2, 0.4],
               "length_ratio_tokens": 1.1}
    (tmp_path / "eval" / "rloo" / "winrate.json").write_text(json.dumps(summary))
    table, out = report(str(tmp_path))
    assert out["stages"]["sft"] == {"metric": "train/loss", "first": 3.0, "last": 2.0}
    assert out["reward_model_heldout_accuracy"] == 0.95 and out["eval"]["rloo"]["win_rate"] == 0.5
    assert "0.500/0.250/0.250" in table and "[-0.200, 0.400]" in table
