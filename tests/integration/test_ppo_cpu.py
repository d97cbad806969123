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


REGISTRY_REWARD = ("pkg://verl.utils.reward_score.registry", "compute_score_async")


def run_main_ppo(tmp_path: Path, model_dir: Path, *extra: str, use_critic=False, steps=2, timeout=900,
                 reward=REGISTRY_REWARD, env=None):
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
        f"reward.custom_reward_function.path={reward[0]}",
        f"reward.custom_reward_function.name={reward[1]}",
        *ppo(1, use_critic=use_critic),
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env={**cpu_env(), **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
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


def gdpo_reference(rows: list[dict], weights: dict[str, float]) -> list[float]:
    """GDPO written out (not verl's code): per group and component (x - mean) / (unbiased std + 1e-6),
    the weighted sum, then whitened over every valid response token (unbiased variance)."""
    import math
    from collections import defaultdict

    summed = [0.0] * len(rows)
    for key, weight in weights.items():
        groups = defaultdict(list)
        for i, r in enumerate(rows):
            groups[r["uid"]].append(i)
        for members in groups.values():
            values = [rows[i]["components"][key] for i in members]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
            for i, v in zip(members, values):
                summed[i] += weight * (v - mean) / (std + 1e-6)
    tokens = [s for s, r in zip(summed, rows) for _ in range(r["response_tokens"])]
    mean = sum(tokens) / len(tokens)
    var = sum((t - mean) ** 2 for t in tokens) / (len(tokens) - 1)
    return [(s - mean) / math.sqrt(var + 1e-8) for s in summed]


def ece_reference(conf: list[float], right: list[float]) -> float:
    """ECE with 10 bins (i/10, (i+1)/10], 0 in the first, as a plain loop."""
    total = 0.0
    for b in range(10):
        rows = [(c, y) for c, y in zip(conf, right) if (b == 0 and c == 0) or b / 10 < c <= (b + 1) / 10]
        if rows:
            total += len(rows) / len(conf) * abs(sum(c for c, _ in rows) / len(rows) - sum(y for _, y in rows) / len(rows))
    return total


@pytest.fixture(scope="module")
def component_run(tmp_path_factory, tiny_model_dir):
    """One real run with gdpo over a two-component reward that also states a confidence; the
    calibration monitor's alarm set to fire from the 2nd consecutive step."""
    tmp_path = tmp_path_factory.mktemp("gdpo_run")
    reward_file = Path(__file__).resolve().parents[1] / "support" / "component_reward.py"
    steps = run_main_ppo(
        tmp_path, tiny_model_dir,
        "algorithm.adv_estimator=gdpo", "+algorithm.gdpo_reward_keys=[even_term,letter_term]",
        "+algorithm.gdpo_reward_weights=[1.0,2.0]", "actor_rollout_ref.actor.use_kl_loss=False",
        f"trainer.rollout_data_dir={tmp_path / 'rollouts'}",
        reward=(str(reward_file), "compute_score"),
        env={"VERLKIT_ADVANTAGE_DUMP": str(tmp_path / "advantages.jsonl"), "VERLKIT_CONFIDENCE_STD_MIN": "1.0",
             "VERLKIT_CONFIDENCE_COLLAPSE_STEPS": "2"},
    )
    return tmp_path, steps


def test_gdpo_on_the_v1_trainer_normalises_each_reward_component(component_run):
    """verl's v1 trainer hands gdpo no reward components of its own; our hook does. The advantages it
    trained on match GDPO recomputed from the dumped components, step by step."""
    import json

    run_dir, steps = component_run
    assert sorted(steps) == [1, 2]
    for metrics in steps.values():
        assert metrics["gdpo/filled_components"] == 0.0
        assert 0.0 <= metrics["gdpo/even_term/mean"] <= 1.0 and "gdpo/letter_term/std" in metrics
    records = [json.loads(line) for line in (run_dir / "advantages.jsonl").read_text().splitlines()]
    assert {r["step"] for r in records} == {1, 2}
    for step in (1, 2):
        rows = [r for r in records if r["step"] == step and r["response_tokens"] > 0]
        assert len(rows) == 8 and all(set(r["components"]) == {"even_term", "letter_term"} for r in rows)
        # the trainer's score is the components' sum, as the reward function defines it
        for r in rows:
            assert r["score"] == pytest.approx(r["components"]["even_term"] + 2 * r["components"]["letter_term"], abs=1e-5)
        expected = gdpo_reference(rows, {"even_term": 1.0, "letter_term": 2.0})
        assert [r["advantage"] for r in rows] == pytest.approx(expected, abs=1e-4)


def test_calibration_monitor_on_the_trainers_steps(component_run):
    """The monitor's step metrics match the stated confidences of the step's rollouts (recomputed from
    verl's rollout dump with a plain loop), and the collapse alarm fires from the 2nd step on."""
    import json

    from support.component_reward import parts

    run_dir, steps = component_run
    for step in (1, 2):
        dumped = [json.loads(line) for line in (run_dir / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
        rows = [parts(d["output"]) for d in dumped]
        conf, right = [r["confidence"] for r in rows], [r["acc"] for r in rows]
        mean = sum(conf) / len(conf)
        metrics = steps[step]
        assert metrics["calibration/rows"] == 8.0
        assert metrics["calibration/confidence_mean"] == pytest.approx(mean, abs=1e-6)
        assert metrics["calibration/confidence_std"] == pytest.approx(
            (sum((c - mean) ** 2 for c in conf) / len(conf)) ** 0.5, abs=1e-6)
        assert metrics["calibration/brier"] == pytest.approx(
            sum((c - y) ** 2 for c, y in zip(conf, right)) / len(conf), abs=1e-6)
        assert metrics["calibration/ece"] == pytest.approx(ece_reference(conf, right), abs=1e-6)
    assert [steps[s]["calibration/low_std_steps"] for s in (1, 2)] == [1.0, 2.0]
    assert [steps[s]["calibration/collapse_warnings"] for s in (1, 2)] == [0.0, 1.0]
    assert "stated confidences have collapsed" in (run_dir / "train.log").read_text()
