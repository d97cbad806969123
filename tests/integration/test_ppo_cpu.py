"""verl's real PPO trainer (``python -m verl.trainer.main_ppo``) on the CPU profile with the tiny model.

Each run is a full verl run: Ray, FSDP2 actor/ref/critic workers, the HF rollout replica, the reward
loop workers scoring ``openai/gsm8k`` rows through our registry. A few steps each.
"""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from verlkit.runs.summary import parse_step_metrics

pytestmark = pytest.mark.integration

QUESTIONS = [("What is 2 plus 3?", "5"), ("What is 4 times 2?", "8"), ("What is 10 minus 7?", "3"),
             ("What is 6 divided by 2?", "3"), ("What is 1 plus 1?", "2"), ("What is 3 times 3?", "9"),
             ("What is 9 minus 4?", "5"), ("What is 8 plus 1?", "9")]


def write_gsm8k_rows(path: Path) -> Path:
    rows = [
        {
            "prompt": [{"role": "user", "content": f'{q} Let\'s think step by step and output the final answer after "####".'}],
            "data_source": "openai/gsm8k",
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": a},
            "extra_info": {"split": "train", "index": i},
        }
        for i, (q, a) in enumerate(QUESTIONS)
    ]
    pd.DataFrame(rows).to_parquet(path)
    return path


def cpu_env() -> dict:
    from verlkit.cpu_profile.overrides import env

    base = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "RAY_ADDRESS")}
    base.update(env())
    return base


def run_main_ppo(tmp_path: Path, model_dir: Path, *extra: str, use_critic=False, steps=2, timeout=900):
    from verlkit.cpu_profile.overrides import ppo

    data = write_gsm8k_rows(tmp_path / "gsm8k.parquet")
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        f"data.train_files={data}", f"data.val_files={data}",
        "data.train_batch_size=4", "data.max_prompt_length=64", "data.max_response_length=16",
        f"actor_rollout_ref.model.path={model_dir}",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        "trainer.logger=console", "trainer.val_before_train=False",
        f"trainer.total_training_steps={steps}", "trainer.save_freq=-1", "trainer.test_freq=-1",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        "trainer.project_name=verlkit-tests", f"trainer.experiment_name={tmp_path.name}",
        "reward.custom_reward_function.path=pkg://verl.utils.reward_score.registry",
        "reward.custom_reward_function.name=compute_score_async",
        *ppo(1, use_critic=use_critic),
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=cpu_env(), capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    (tmp_path / "train.log").write_text(log)
    assert proc.returncode == 0, log[-6000:]
    return parse_step_metrics(log)


def test_grpo_two_steps_scores_through_registry(tmp_path, tiny_model_dir):
    steps = run_main_ppo(tmp_path, tiny_model_dir, "algorithm.adv_estimator=grpo",
                         "actor_rollout_ref.actor.use_kl_loss=False")
    assert sorted(steps) == [1, 2]
    for metrics in steps.values():
        assert "critic/score/mean" in metrics
        # extra keys of our fixed-schema result become step metrics (verl logs them only in validation)
        assert "reward/acc/mean" in metrics and metrics["reward/reward_error/mean"] == 0.0
        # weights pushed to the HF rollout after each update: rollout and actor agree
        assert metrics["training/rollout_probs_diff_max"] < 1e-3


def test_ppo_with_critic_and_kl_two_steps(tmp_path, tiny_model_dir):
    steps = run_main_ppo(
        tmp_path, tiny_model_dir,
        "algorithm.adv_estimator=gae",
        "actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0.001",
        f"critic.model.path={tiny_model_dir}", "critic.ppo_micro_batch_size_per_gpu=4",
        use_critic=True,
    )
    assert sorted(steps) == [1, 2]
    for metrics in steps.values():
        assert "critic/vf_loss" in metrics and "critic/values/mean" in metrics
        assert "reward/acc/mean" in metrics
