"""``bash run_pipeline.sh`` on the CPU default, end to end, checked stage by stage.

One run (module fixture) of the real chain: data prep on the bundled samples, verl's SFT trainer,
the preference trainer for DPO and for the Bradley–Terry reward model, the reward model served by
the CPU build of vLLM for ``/classify``, verl's ``main_ppo`` with ``adv_estimator=rloo`` scoring
rollouts through that server, the win-rate judge (a second reward model, on the preference pairs kept
apart from the RLOO reward model's), and the win-rate evaluation against the reference (the base model)
with both models served by vLLM and judged by the judge. The run logs to offline wandb (training and
evaluation), as the CPU default does. The tests then read what each stage wrote. With
``VERLKIT_ADVANTAGE_DUMP`` set, the trainer records every sample's score and advantage, so RLOO's
leave-one-out formula is checked on the real batches of the run.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
from support.recipe_runs import RecipeRun
from support.wandb_files import offline_runs

pytestmark = [pytest.mark.integration, pytest.mark.own_vllm_server]

LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    run = RecipeRun("run_pipeline.sh", work / "run", VERLKIT_ADVANTAGE_DUMP=str(work / "advantages.jsonl"),
                    LOGGER="console,wandb", WANDB_MODE="offline")  # fmt: skip
    rc = run.wait(timeout=3000)
    assert rc == 0, run.output()[-6000:]
    return run, work


def metrics(run_dir: Path, stage: str) -> dict[int, dict[str, float]]:
    raw = json.loads((run_dir / stage / "metrics.json").read_text())
    return {int(k): v for k, v in raw.items()}


def test_sft_dpo_and_reward_model_train(chain):
    run, _ = chain
    sft = metrics(run.run_dir, "sft")
    assert sft[max(sft)]["train/loss"] < sft[1]["train/loss"]
    dpo = metrics(run.run_dir, "dpo")
    assert dpo[1]["pref/dpo"] == pytest.approx(LN2, abs=1e-4)  # the policy starts as its reference
    assert dpo[max(dpo)]["pref/dpo"] < dpo[1]["pref/dpo"]
    rm = metrics(run.run_dir, "rm")
    assert rm[max(rm)]["pref/bt"] < rm[1]["pref/bt"]
    for stage in ("sft", "dpo", "rloo"):
        assert (run.run_dir / stage / "hf" / "config.json").is_file()
    config = json.loads((run.run_dir / "rm" / "hf" / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification") and len(config["id2label"]) == 1


def test_reward_model_separates_the_held_out_pairs(chain):
    """The bundled preference pairs are separable by design; the SERVED model must rank them."""
    run, _ = chain
    report = json.loads((run.run_dir / "rm" / "eval.json").read_text())
    assert report["n_scored"] == report["n_pairs"] == 24 and report["scoring_failures"] == 0
    assert report["accuracy"] >= 0.9


def test_rloo_rewards_come_from_the_reward_model_and_advantages_are_leave_one_out(chain):
    run, work = chain
    steps = metrics(run.run_dir, "rloo")
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        assert m["reward/rm_ok/mean"] == 1.0 and m["reward/rm_failed/count"] == 0
        # rollouts sampled at temperature 0.7 are scored by the rollout under the same (T-scaled)
        # distribution as by the actor (unscaled rollout log-probs gave mean 2e-2, correlation 0.989)
        assert m["training/rollout_probs_diff_mean"] < 1e-3
        assert m["training/rollout_actor_probs_pearson_corr"] > 0.999
    groups = defaultdict(list)
    for line in (work / "advantages.jsonl").read_text().splitlines():
        rec = json.loads(line)
        groups[(rec["step"], rec["uid"])].append(rec)
    assert {step for step, _ in groups} == {1, 2}
    for members in groups.values():
        assert len(members) == 4  # k = 4 samples per prompt
        total = sum(r["score"] for r in members)
        for r in members:
            baseline = (total - r["score"]) / 3
            assert r["advantage"] == pytest.approx(r["score"] - baseline, abs=1e-4)
    # the batch's rewards are the reward model's scores (critic/score/mean is their mean)
    for step, m in steps.items():
        scores = [r["score"] for (s, _), rs in groups.items() if s == step for r in rs]
        assert sum(scores) / len(scores) == pytest.approx(m["critic/score/mean"], abs=1e-3)


def test_evaluation_reports_win_rate_with_a_confidence_interval(chain):
    run, _ = chain
    summary = json.loads((run.run_dir / "eval" / "rloo" / "winrate.json").read_text())
    assert summary["n_prompts"] == summary["n_compared"] == 24 and summary["scoring_failures"] == 0
    assert summary["win_rate"] + summary["tie_rate"] + summary["loss_rate"] == pytest.approx(1.0)
    low, high = summary["ci"]
    assert low <= summary["mean_reward_difference"] <= high
    assert summary["mean_reward_difference"] == pytest.approx(
        summary["mean_model_reward"] - summary["mean_reference_reward"], abs=1e-9)
    assert summary["length_ratio_tokens"] > 0 and summary["tie_band"] == 0.1
    png = (run.run_dir / "eval" / "rloo" / "winrate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((run.run_dir / "summary.json").read_text())
    assert table["reward_model_heldout_accuracy"] >= 0.9 and "rloo" in table["eval"]


def test_the_win_rate_is_judged_by_the_independent_judge(chain):
    """The judge is a reward model of its own, trained on prefs/judge (no prompt of prefs/train); the
    report names it and says it is independent of the training reward."""
    import pyarrow.parquet as pq

    run, _ = chain
    data = run.run_dir / "data" / "prefs"
    judge_prompts = {json.dumps(p) for p in pq.read_table(data / "judge.parquet").column("prompt").to_pylist()}
    train_prompts = {json.dumps(p) for p in pq.read_table(data / "train.parquet").column("prompt").to_pylist()}
    assert judge_prompts and not judge_prompts & train_prompts
    config = (run.run_dir / "judge" / "config.yaml").read_text()
    assert "prefs/judge.parquet" in config and "verlkit-pipeline-judge" in config
    judge = metrics(run.run_dir, "judge")
    assert judge[max(judge)]["pref/bt"] < judge[1]["pref/bt"]
    heldout = json.loads((run.run_dir / "judge" / "eval.json").read_text())
    assert heldout["n_scored"] == 24 and heldout["scoring_failures"] == 0
    summary = json.loads((run.run_dir / "eval" / "rloo" / "winrate.json").read_text())
    assert summary["judge"]["name"] == "judge" and summary["judge"]["relation"] == "independent"
    assert summary["judge"]["is_training_reward"] is False and Path(summary["judge"]["dir"]).resolve() == (run.run_dir / "judge" / "hf").resolve()
    assert "judge: independent of the training reward" in run.output()


def test_the_evaluations_are_in_the_tracker_beside_the_training_runs(chain):
    """Offline wandb under RUN_DIR/wandb: each evaluation is a run (job_type eval) in the project and run
    group of the training run it evaluates, with its metrics and its plot."""
    run, _ = chain
    experiment = run.run_dir.name
    runs = offline_runs(run.run_dir / "wandb")
    evals = {r.name: r for r in runs if r.job_type == "eval"}
    training = {r.project: r for r in runs if r.job_type != "eval"}
    assert {"verlkit-pipeline-sft", "verlkit-pipeline-rm", "verlkit-pipeline-rloo", "verlkit-pipeline-judge"} <= set(training)
    assert all(r.group == experiment for r in runs)
    winrate = evals[f"{experiment}-eval-winrate-rloo"]
    assert winrate.project == training["verlkit-pipeline-rloo"].project == "verlkit-pipeline-rloo"
    s = winrate.summary
    assert s["eval/n_compared"] == 24 and s["eval/too_few"] == 0 and s["eval/judge/relation"] == "independent"
    for key in ("eval/win_rate", "eval/mean_model_reward", "eval/mean_reference_reward", "eval/mean_reward_difference",
                "eval/length_ratio_tokens"):
        assert isinstance(s[key], float), key
    assert s["plots/winrate/_type"] == "image-file"
    (png,) = winrate.files("media/images/**/*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for stage in ("rm", "judge"):
        accuracy = evals[f"{experiment}-eval-{stage}-accuracy"]
        assert accuracy.project == f"verlkit-pipeline-{stage}" and accuracy.summary["eval/n_scored"] == 24


def test_reported_scores_come_from_the_trained_reward_model_not_a_fresh_head(chain):
    """Re-score the evaluation's conversations with transformers: the trained judge's head reproduces
    the served scores (bf16 serving: small differences); a freshly initialised head does not."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from verl.utils.reward_score.scalar_rm import conversation_ids

    run, _ = chain
    rm_dir, sft_dir = run.run_dir / "judge" / "hf", run.run_dir / "sft" / "hf"
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    trained = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    torch.manual_seed(0)
    fresh = AutoModelForSequenceClassification.from_pretrained(sft_dir, num_labels=1).eval()
    records = [json.loads(line) for line in (run.run_dir / "eval" / "rloo" / "predictions.jsonl").read_text().splitlines()]
    reported, mine, theirs = [], [], []
    with torch.no_grad():
        for rec in records:
            for text, reward in ((rec["model_text"], rec["model_reward"]), (rec["reference_text"], rec["reference_reward"])):
                ids = torch.tensor([conversation_ids(tokenizer, rec["prompt"] + [{"role": "assistant", "content": text}])])
                reported.append(reward)
                mine.append(float(trained(input_ids=ids).logits))
                theirs.append(float(fresh(input_ids=ids).logits))
    # the judge may score every evaluated text alike (a tiny judge saturates on its pairs: all near its
    # "rejected" score), so the tolerance follows the scores' size, not their spread: bf16 serving keeps
    # about three significant digits
    assert len(set(reported)) > 1  # one score per conversation, not a constant
    tolerance = 0.01 * max(abs(r) for r in reported) + 0.05
    assert max(abs(a - b) for a, b in zip(reported, mine)) < tolerance
    assert max(abs(a - b) for a, b in zip(reported, theirs)) > 5 * tolerance


def test_nothing_of_the_run_survives_it(chain):
    run, _ = chain
    run.assert_nothing_left(("rm", "judge", "reference", "policy_rloo"))
