"""``bash run_confidence.sh`` on the CPU default end to end (data, downstream server, GRPO, export, served
policy, evaluation), and its refusals before anything is started.

The end-to-end run tracks every process of the run two ways: what the driver recorded in
``<run>/processes.json`` (the downstream and policy servers' PIDs, the trainer's and the export's process
groups) and a snapshot of the script's whole process tree taken while it runs; none may survive the
script.
"""

import json

import pytest
from support.recipe_runs import RecipeRun
from support.wandb_files import offline_runs

from verlkit.runs.summary import parse_step_metrics

pytestmark = pytest.mark.integration

METRIC_FIELDS = ("accuracy", "ece", "brier", "auroc", "mean_confidence")


def _assert_report(report: dict):
    assert report["n"] > 0 and report["request_failures"] == 0
    assert 0.0 <= report["parse_failure_rate"] <= 1.0
    for view in ("all", "parseable"):
        assert set(METRIC_FIELDS) <= set(report[view])
    a = report["all"]
    assert 0.0 <= a["accuracy"] <= 1.0 and 0.0 <= a["ece"] <= 1.0 and 0.0 <= a["brier"] <= 1.0
    assert 0.0 <= a["mean_confidence"] <= 1.0
    # AUROC is undefined (null) when every row is right or every row is wrong
    assert a["auroc"] is None or 0.0 <= a["auroc"] <= 1.0


def test_cpu_default_trains_exports_and_evaluates(tmp_path):
    run = RecipeRun("run_confidence.sh", tmp_path / "run", LOGGER="console,wandb", WANDB_MODE="offline")
    rc = run.wait(timeout=2400)
    out, run_dir = run.output(), run.run_dir
    assert rc == 0, out[-6000:]

    # training: the requested steps ran, every rollout's hint went to the real downstream server
    steps = parse_step_metrics((run_dir / "train.log").read_text())
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        assert m["reward/downstream_ok/mean"] == 1.0 and "reward/parse_ok/mean" in m
        # issue 18: the CPU downstream model is held to its answer-and-confidence line
        assert m["reward/parse_ok/mean"] >= 0.95

    # export: a Hugging Face directory of the last step
    assert (run_dir / "checkpoints" / "global_step_2" / "actor").is_dir()
    assert (run_dir / "policy_hf" / "config.json").is_file()

    # evaluation: both conditions, every field, the reliability diagrams
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["design"] == "cgp" and metrics["data"].endswith("cgp/dev.parquet")
    assert set(metrics["conditions"]) == {"with_hint", "baseline"}
    for report in metrics["conditions"].values():
        _assert_report(report)
        assert report["n"] == 16  # the bundled sample's dev split
        # issue 18: the constrained downstream replies parse (the diagram is not drawn from nothing)
        assert report["parse_failure_rate"] <= 0.10
    for png in ("reliability.png", "reliability_baseline.png"):
        data = (run_dir / "eval" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    predictions = (run_dir / "eval" / "predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 32
    assert f"{run_dir}/eval/metrics.json" in out and "reliability diagram:" in out

    # the tracker (offline wandb under RUN_DIR/wandb): the evaluation beside the training run, in its
    # project and run group, with both conditions' metrics and reliability diagrams
    runs = offline_runs(run_dir / "wandb")
    (evaluation,) = [r for r in runs if r.job_type == "eval"]
    assert evaluation.name == f"{run_dir.name}-eval-calibration" and evaluation.group == run_dir.name
    assert evaluation.project == "verlkit-confidence-cgp"
    assert any(r.project == evaluation.project and r.group == evaluation.group for r in runs if r.job_type != "eval")
    for condition in ("with_hint", "baseline"):
        assert evaluation.summary[f"eval/{condition}/n"] == 16
        assert evaluation.summary[f"plots/reliability_{condition}/_type"] == "image-file"
    assert len(evaluation.files("media/images/**/*.png")) == 2

    # nothing of the run survives it: neither server, nor Ray, nor the trainer
    run.assert_nothing_left(("downstream", "policy"))


# The slow tier (python -m pytest tests -m slow): a second whole confidence run (~3 min). The default suite
# covers gdpo and the monitor on verl's real trainer (tests/integration/test_ppo_cpu.py) and by composition.
@pytest.mark.slow
def test_cpu_default_with_gdpo_and_the_calibration_monitor(tmp_path):
    """ALGORITHM=gdpo and the calibration monitor chosen from the recipe's settings (the alarm set to
    fire from the 2nd low-spread step: a std of confidences in [0, 1] is at most 0.5 < 1.0)."""
    dump = tmp_path / "advantages.jsonl"
    run = RecipeRun("run_confidence.sh", tmp_path / "run", ALGORITHM="gdpo", VERLKIT_CONFIDENCE_STD_MIN="1.0",
                    VERLKIT_CONFIDENCE_COLLAPSE_STEPS="2", VERLKIT_ADVANTAGE_DUMP=str(dump))  # fmt: skip
    rc = run.wait(timeout=2400)
    out, run_dir = run.output(), run.run_dir
    assert rc == 0, out[-6000:]
    config = (run_dir / "config.yaml").read_text()
    assert "adv_estimator: gdpo" in config and "- calibration_term" in config
    steps = parse_step_metrics((run_dir / "train.log").read_text())
    assert sorted(steps) == [1, 2]
    for step, m in sorted(steps.items()):
        print(f"step {step}: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(m.items())
                                          if k.startswith(("calibration/", "gdpo/", "critic/score/mean"))))
        # gdpo saw both of cgp's components on every step
        assert {"gdpo/accuracy_term/mean", "gdpo/calibration_term/mean", "gdpo/filled_components"} <= set(m)
        # the monitor: every row whose downstream confidence parsed is counted; a step without one adds
        # nothing (on the CPU default SmolLM2 may state no parseable confidence at all)
        if m["reward/parse_ok/mean"] == 0:
            assert not any(k.startswith("calibration/") for k in m)
            continue
        assert m["calibration/rows"] == pytest.approx(8 * m["reward/parse_ok/mean"])
        assert {"calibration/ece", "calibration/brier", "calibration/confidence_std"} <= set(m)
    monitored = [step for step, m in sorted(steps.items()) if "calibration/rows" in m]
    if monitored == [1, 2]:  # the alarm fires from the 2nd consecutive low-spread step
        assert [steps[s]["calibration/low_std_steps"] for s in (1, 2)] == [1.0, 2.0]
        assert steps[1]["calibration/collapse_warnings"] == 0 and steps[2]["calibration/collapse_warnings"] == 1
        assert "stated confidences have collapsed" in (run_dir / "train.log").read_text()  # the trainer's own log
    # the trained advantages next to GRPO's on the same batches
    from verlkit.runs.advantages import main as advantages

    assert dump.is_file() and advantages([str(dump)]) == 0
    run.assert_nothing_left(("downstream", "policy"))


def test_overlapping_gpu_devices_are_refused_before_anything_starts(tmp_path):
    run = RecipeRun("run_confidence.sh", tmp_path / "run", "/models/policy", "cgp", "/models/downstream",
                    VK_PROFILE="gpu", TRAIN_DEVICES="0,1", DOWNSTREAM_DEVICES="1,2")
    rc = run.wait(timeout=300)
    out = run.output()
    assert rc == 2, out
    assert "share device(s) 1" in out
    assert not (tmp_path / "run").exists()  # refused before the run directory, data or a server


def test_hosted_downstream_without_its_key_is_refused(tmp_path):
    run = RecipeRun("run_confidence.sh", tmp_path / "run", "", "cgp", "gpt-4o-mini",
                    DOWNSTREAM_URL="http://127.0.0.1:9/v1", DOWNSTREAM_API_KEY_ENV="VERLKIT_TEST_UNSET_KEY")
    rc = run.wait(timeout=600)
    out = run.output()
    assert rc == 2, out  # a usage error, found before anything starts
    assert "VERLKIT_TEST_UNSET_KEY, which is empty or unset" in out
    assert not (tmp_path / "run" / "train.log").exists()
