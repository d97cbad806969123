"""run_pipeline.sh: the stage configs (recipes/pipeline/config) composed through verl's hydra (verl's SFT
and PPO configs, the preference trainer's), the routing of overrides to stages, the stage sequencing
and the report, without launching anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support.recipe_configs import compose_recipe

from recipes.pipeline.run import route_overrides
from recipes.pipeline.stages import missing_inputs, parse_stages, report

STAGE_RUNTIME = ["recipe.init=/models/init", "recipe.data_dir=/data"]


def compose_stage(stage: str, profile: str, *extra: str):
    name = f"pipeline/{stage}_cpu" if profile == "cpu" else f"pipeline/{stage}"
    return compose_recipe(name, [*STAGE_RUNTIME, f"recipe.stage_dir=/runs/p/{stage}", *extra])


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_sft_stage_on_verls_sft_config(profile):
    cfg = compose_stage("sft", profile)
    assert cfg.model.path == "/models/init" and cfg.data.messages_key == "messages"
    assert cfg.data.train_files == "/data/sft/train.parquet" and cfg.data.val_files == "/data/sft/val.parquet"
    assert cfg.trainer.default_local_dir == "/runs/p/sft/checkpoints"
    assert list(cfg.checkpoint.save_contents) == ["model", "optimizer", "extra", "hf_model"]
    gpu = profile == "gpu"
    assert cfg.optim.lr == (1e-5 if gpu else 1e-3) and cfg.trainer.total_epochs == (3 if gpu else 1)
    assert cfg.data.train_batch_size == (64 if gpu else 4) and cfg.data.max_length == (1024 if gpu else 256)
    assert cfg.trainer.device == ("cuda" if gpu else "cpu") and cfg.engine.strategy == "fsdp2"


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_dpo_and_reward_model_stages_on_the_preference_trainer(profile):
    dpo = compose_stage("dpo", profile)
    assert dpo.preference.loss == "dpo" and dpo.preference.beta == 0.1
    assert dpo.data.train_files == "/data/prefs/train.parquet" and dpo.optim.clip_grad == 1.0
    assert dpo.optim.lr == (1e-6 if profile == "gpu" else 1e-4) and "hf_model" in dpo.checkpoint.save_contents
    rm = compose_stage("rm", profile)
    assert rm.preference.loss == "bt" and rm.trainer.default_local_dir == "/runs/p/rm/checkpoints"
    assert rm.optim.lr == (1e-5 if profile == "gpu" else 1e-3)
    assert rm.data.train_batch_size == (32 if profile == "gpu" else 8)


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_judge_stage_is_the_reward_model_stage_on_the_judges_pairs(profile):
    judge, rm = compose_stage("judge", profile), compose_stage("rm", profile)
    assert judge.data.train_files == "/data/prefs/judge.parquet" and rm.data.train_files == "/data/prefs/train.parquet"
    assert judge.preference.loss == "bt" and judge.optim.lr == rm.optim.lr
    assert judge.data.train_batch_size == (32 if profile == "gpu" else 4)
    assert judge.trainer.project_name == "verlkit-pipeline-judge" and rm.trainer.project_name == "verlkit-pipeline-rm"
    assert judge.trainer.default_local_dir == "/runs/p/judge/checkpoints"
    assert judge.trainer.total_epochs == (1 if profile == "gpu" else 2)


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_rloo_stage_on_verls_ppo_config(profile):
    cfg = compose_stage("rloo", profile, "recipe.reward_model.url='http://127.0.0.1:9/v1'", "recipe.reward_model.dir=/rm")
    assert cfg.algorithm.adv_estimator == "rloo" and cfg.actor_rollout_ref.rollout.n == 4
    assert cfg.actor_rollout_ref.rollout.temperature == 0.7 and cfg.actor_rollout_ref.rollout.top_p == 0.9
    kw = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs, resolve=True)
    assert kw == {"scalar_rm": {"url": "http://127.0.0.1:9/v1", "model": "reward_model", "tokenizer": "/rm"}}
    from verl.utils.reward_score.options import parse_options
    from verl.utils.reward_score.scalar_rm import ScalarRMOptions

    assert parse_options(ScalarRMOptions, kw["scalar_rm"]).tokenizer == "/rm"  # the reward accepts them
    assert cfg.actor_rollout_ref.rollout.name == ("hf" if profile == "cpu" else "vllm")
    assert cfg.data.train_files == cfg.data.val_files == "/data/rl/train.parquet"
    if profile == "cpu":
        assert cfg.trainer.total_training_steps == 2 and cfg.trainer.save_freq == 2
    else:
        assert cfg.trainer.total_training_steps is None and cfg.trainer.save_freq == 100
        assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6 and cfg.data.train_batch_size == 64


def test_overrides_are_routed_to_the_pipeline_every_stage_or_one_stage():
    pipeline, every, per_stage = route_overrides([
        "recipe.stages=['sft']", "trainer.logger=['console']", "rloo.trainer.total_training_steps=5",
        "+sft.optim.betas=[0.9,0.95]", "dpo.preference.beta=0.2", "+recipe.eval.options.seed=3",
        "judge.trainer.total_epochs=3", "recipe.eval.judge.source=training_reward",
    ])
    assert pipeline == ["recipe.stages=['sft']", "+recipe.eval.options.seed=3", "recipe.eval.judge.source=training_reward"]
    assert every == ["trainer.logger=['console']"]
    assert per_stage == {"sft": ["+optim.betas=[0.9,0.95]"], "dpo": ["preference.beta=0.2"], "rm": [],
                         "rloo": ["trainer.total_training_steps=5"], "judge": ["trainer.total_epochs=3"]}


def test_pipeline_settings():
    gpu = compose_recipe("pipeline/pipeline", ["recipe.base=/b", "recipe.reference=/r"])
    assert list(gpu.recipe.eval_models) == ["sft", "dpo", "rloo"] and gpu.recipe.nproc is None
    assert OmegaConf.to_container(gpu.recipe.eval.options) == {"max_tokens": 256, "temperature": 0.7, "tie_band": 0.1}
    cpu = compose_recipe("pipeline/pipeline_cpu", ["recipe.base=/tiny"])
    assert cpu.recipe.reference == "/tiny" and list(cpu.recipe.eval_models) == ["rloo"] and cpu.recipe.nproc == 1
    assert OmegaConf.to_container(cpu.recipe.eval.options) == {"max_tokens": 24, "temperature": 0, "tie_band": 0.1}


def test_stage_selection_keeps_pipeline_order_and_rejects_unknown_stages():
    assert parse_stages("eval, sft,rm") == ["sft", "rm", "eval"]
    assert parse_stages(["rloo", "prep"]) == ["prep", "rloo"]
    with pytest.raises(ValueError, match="unknown stage"):
        parse_stages("sft,ppo")


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")


def test_a_skipped_stages_output_must_already_be_in_the_run_directory(tmp_path: Path):
    everything = ["prep", "sft", "dpo", "rm", "rloo", "judge", "eval"]
    assert missing_inputs(everything, tmp_path, "sft", ["sft", "dpo", "rloo"]) == []
    assert missing_inputs(["eval"], tmp_path, "sft", ["rloo"]) == [
        f"no prepared data (missing {tmp_path}/data/manifest.json): run that stage first, or reuse its RUN_DIR",
        f"no evaluation prompts (missing {tmp_path}/data/eval/prompts.parquet): run that stage first, or reuse its RUN_DIR",
        f"no win-rate judge (missing {tmp_path}/judge/hf/config.json): run that stage first, or reuse its RUN_DIR",
        f"no rloo model to evaluate (missing {tmp_path}/rloo/hf/config.json): run that stage first, or reuse its RUN_DIR",
    ]
    # judged by the RLOO reward model (opt-in) it needs that one instead; a served judge needs neither
    assert f"no reward model (missing {tmp_path}/rm/hf/config.json): run that stage first, or reuse its RUN_DIR" in (
        missing_inputs(["eval"], tmp_path, "sft", ["rloo"], "training_reward"))
    assert not any("judge" in m or "reward model" in m for m in missing_inputs(["eval"], tmp_path, "sft", ["rloo"], None))
    assert missing_inputs(["eval"], tmp_path, "sft", ["rloo"], "rm")[0].startswith("EVAL_JUDGE")
    assert missing_inputs(["judge"], tmp_path, "sft", [])[1] == (
        f"no SFT model to start the win-rate judge from (missing {tmp_path}/sft/hf/config.json): run that stage first, "
        "or reuse its RUN_DIR")
    for produced in ("data/manifest.json", "data/eval/prompts.parquet", "judge/hf/config.json", "sft/hf/config.json"):
        touch(tmp_path / produced)
    assert missing_inputs(["eval"], tmp_path, "sft", ["rloo"]) == [
        f"no rloo model to evaluate (missing {tmp_path}/rloo/hf/config.json): run that stage first, or reuse its RUN_DIR",
    ]
    assert missing_inputs(["rloo", "eval"], tmp_path, "sft", ["rloo"]) == [
        f"no reward model (missing {tmp_path}/rm/hf/config.json): run that stage first, or reuse its RUN_DIR",
    ]  # RLOO's reward model
    touch(tmp_path / "rm/hf/config.json")
    assert missing_inputs(["rloo", "eval"], tmp_path, "sft", ["rloo"]) == []
    assert missing_inputs(["rloo"], tmp_path, "dpo", []) == [
        f"no dpo model to start RLOO from (missing {tmp_path}/dpo/hf/config.json): run that stage first, or reuse its RUN_DIR",
    ]
    assert missing_inputs(["rloo"], tmp_path, "rm", [])[0].startswith("RLOO_INIT")
    assert missing_inputs(["eval"], tmp_path, "sft", ["reference"])[0].startswith("EVAL_MODELS")


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


def test_report_names_the_judge_and_prints_no_rate_from_too_few_pairs(tmp_path: Path):
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "eval.json").write_text(json.dumps({"accuracy": 0.875, "n_scored": 24}))
    (tmp_path / "eval" / "rloo").mkdir(parents=True)
    summary = {"win_rate": 0.5, "tie_rate": 0.25, "loss_rate": 0.25, "mean_reward_difference": 0.1, "ci": [-0.2, 0.4],
               "n_compared": 4, "too_few": True,
               "judge": {"name": "judge", "relation": "independent", "relation_words": "independent of the training reward"}}
    (tmp_path / "eval" / "rloo" / "winrate.json").write_text(json.dumps(summary))
    table, out = report(tmp_path)
    assert out["judge_heldout_accuracy"] == 0.875 and "held-out accuracy (24 pairs)" in table and "0.875" in table
    assert "judge: independent of the training reward" in table
    assert "too few (n=4)/too few (n=4)/too few (n=4)" in table and "0.500" not in table
