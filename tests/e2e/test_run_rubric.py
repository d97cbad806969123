"""``bash run_rubric.sh`` end to end on the CPU default, and what it leaves behind after a normal run,
a SIGINT in the middle of training, a SIGKILL of the script itself and a trainer crash.

Every process of a run is tracked two ways: what the driver recorded in ``<run>/processes.json`` (the
verifier's PIDs, the trainer's process group) and a snapshot of the script's whole process tree (Ray's
daemons and workers included) taken while it runs.
"""

import json
import os
import signal

import pytest
from support.recipe_runs import RecipeRun

from verlkit.runs.summary import parse_step_metrics

pytestmark = pytest.mark.integration


@pytest.mark.own_vllm_server
def test_cpu_default_end_to_end_with_verifier_metrics(tmp_path):
    run = RecipeRun("run_rubric.sh", tmp_path / "run")
    run.wait_for(run.run_dir / "train.log", "step:1 ", timeout=1500)
    rc = run.wait(timeout=1200)
    out, run_dir = run.output(), run.run_dir
    assert rc == 0, out[-6000:]
    steps = parse_step_metrics((run_dir / "train.log").read_text())
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        # every rollout went to the real verifier, and its counters are step metrics
        assert m["reward/verifier_called/mean"] == 1.0
        assert m["reward/verifier_ok/mean"] == 1.0, "the verifier answered every request"
        assert "reward/verifier_ok/mean" in m and "reward/cache_hit/mean" in m and "reward/latency_s/mean" in m
        assert "reward/verifier_failed/count" in m and "critic/score/mean" in m
        # issue 18: the CPU verifier is held to reasoning + a score line, so (nearly) every reply parses
        assert m["reward/parse_ok/mean"] >= 0.95
    assert json.loads((run_dir / "metrics.json").read_text())["2"]["reward/verifier_called/mean"] == 1.0
    assert "reward/verifier_called/mean" in out  # the end-of-run summary table
    # the bundled sample's rule-graded math validation rows (polaris_math, test_math.parquet), scored by the
    # rule-based math grader (routing.fallback=rule), once after the last step; pass@1 in the summary
    pass_key = "val-core/polaris_math/acc/mean@1"
    assert pass_key not in steps[1] and 0.0 <= steps[2][pass_key] <= 1.0
    assert "val-aux/polaris_math/rule_failed/mean@1" in steps[2]
    pass_at_1 = json.loads((run_dir / "math_pass_at_1.json").read_text())
    assert pass_at_1 == {"polaris_math": {"pass@1": steps[2][pass_key], "step": 2}}
    assert f"pass@1 on polaris_math: {steps[2][pass_key]:.4g} (validation at step 2)" in out
    # the composed config the run used, with the settings it names resolved
    config = (run_dir / "config.yaml").read_text()
    assert "max_tokens: 256" in config and "adv_estimator: grpo" in config and "constrained: true" in config
    run.assert_nothing_left(("verifier",))


# The slow tier (python -m pytest tests -m slow): a whole rubric run with two served models (~3.5 min).
# The default suite covers hybrid by its scripted two-server integration tests and the session server's
# (tests/integration/test_hybrid_scripted_models.py, test_verifier_server.py).
@pytest.mark.slow
@pytest.mark.own_vllm_server
def test_cpu_hybrid_serves_two_models_and_reports_each_ones_share(tmp_path):
    """setup=hybrid on the CPU default: the verifier and the rubric model (SmolLM2 twice) are served
    by the driver, every sample goes to at most one of them, and the summary has both shares."""
    run = RecipeRun("run_rubric.sh", tmp_path / "run", "", "", "", "", "", "hybrid")
    rc = run.wait(timeout=2400)
    out, run_dir = run.output(), run.run_dir
    assert rc == 0, out[-6000:]
    steps = parse_step_metrics((run_dir / "train.log").read_text())
    assert sorted(steps) == [1, 2]
    for step, m in sorted(steps.items()):
        to_verifier, to_rubric = m["reward/sent_to_verifier/mean"], m["reward/sent_to_rubric/mean"]
        rule_correct = m["reward/rule_correct/mean"]
        print(f"step {step}: sent_to_verifier {to_verifier:.3f} sent_to_rubric {to_rubric:.3f} "
              f"rule_correct {rule_correct:.3f} score {m['critic/score/mean']:.3f}")
        # the verifier gets exactly the rule-wrong samples; the rubric model at most the rule-correct ones
        assert to_verifier == pytest.approx(1.0 - rule_correct)
        assert to_rubric <= rule_correct + 1e-9
        assert m["reward/verifier_called/mean"] == pytest.approx(to_verifier + to_rubric)
        assert m["reward/verifier_failed/count"] == 0.0
    assert "reward/sent_to_verifier/mean" in out and "reward/sent_to_rubric/mean" in out  # the summary
    config = (run_dir / "config.yaml").read_text()
    assert "setup: hybrid" in config and "share: 0.5" in config
    record = run.processes()["servers"]
    assert record["rubric"]["base_url"] != record["verifier"]["base_url"]
    run.assert_nothing_left(("verifier", "rubric"))


# The slow tier (python -m pytest tests -m slow): about 5.5 min on 2 cores, a second whole rubric run.
# The default suite covers the managed path by composition (tests/unit/test_served_backends_on_cpu.py)
# and by the replica itself behind verl's manager (tests/integration/test_frozen_vllm_replica.py).
@pytest.mark.slow
@pytest.mark.own_vllm_server
def test_cpu_default_end_to_end_with_the_verifier_managed_by_verl(tmp_path):
    # VERIFIER_BACKEND=managed: verl's RewardModelManager runs the verifier (our CPU replica, the CPU
    # build of vLLM in a Ray actor) behind its router; the driver starts no server.
    run = RecipeRun("run_rubric.sh", tmp_path / "run", VERIFIER_BACKEND="managed")
    run.wait_for(run.run_dir / "train.log", "step:1 ", timeout=1500)
    rc = run.wait(timeout=1200)
    out, run_dir = run.output(), run.run_dir
    assert rc == 0, out[-6000:]
    steps = parse_step_metrics((run_dir / "train.log").read_text())
    assert sorted(steps) == [1, 2]
    for m in steps.values():
        assert m["reward/verifier_called/mean"] == 1.0
        assert m["reward/verifier_ok/mean"] == 1.0, "the verifier answered every request"
        assert m["reward/verifier_failed/count"] == 0
    config = (run_dir / "config.yaml").read_text()
    assert "name: vllm_cpu" in config and "num_gpus: 2" in config
    record = run.processes()
    assert record["servers"] == {}, "the driver started no server: verl did"
    # every request went through verl's router to the replica: the reward had no other URL (the driver
    # set none), and the replica's server log has the requests
    replica_log = run_dir / "reward_replica_0.vllm.log"
    posts = replica_log.read_text(errors="replace").count("POST /v1/chat/completions")
    # 2 steps x 4 prompts x 2 samples; identical answers are asked once (the client dedupes and caches)
    assert 1 <= posts <= 16, posts
    run.assert_nothing_left()


def test_sigint_during_training_leaves_nothing_alive(tmp_path, tiny_model_dir, vllm_server):
    # The verifier comes from the session server (the launcher's own SIGINT handling is covered by
    # the normal run above and tests/integration/test_launcher.py); this test is about the trainer.
    run = RecipeRun("run_rubric.sh", tmp_path / "run", str(tiny_model_dir), "1", "", "True", str(tiny_model_dir),
                    STEPS="50", VERLKIT_VERIFIER_URL=vllm_server.base_url)
    run.wait_for(run.run_dir / "train.log", "Training Progress", timeout=1500)
    os.killpg(run.proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    rc = run.wait(timeout=300)
    assert rc == 130, run.output()[-4000:]
    run.assert_nothing_left(("verifier",))
    assert vllm_server.is_alive()  # the separately started server is not ours to stop


def test_sigkill_of_the_script_during_training_leaves_nothing_alive(tmp_path, tiny_model_dir, vllm_server):
    # SIGKILL runs no handler of the driver: the trainer's process group must end on its own (the
    # parent-death signal the driver gives it; Ray's daemons share the trainer's fate).
    run = RecipeRun("run_rubric.sh", tmp_path / "run", str(tiny_model_dir), "1", "", "True", str(tiny_model_dir),
                    STEPS="50", VERLKIT_VERIFIER_URL=vllm_server.base_url)
    run.wait_for(run.run_dir / "train.log", "Training Progress", timeout=1500)
    assert run.processes()["process_groups"]["training"]["state"] == "running"
    os.kill(run.proc.pid, signal.SIGKILL)  # the script itself (run_rubric.sh exec's the driver)
    rc = run.wait(timeout=60)
    assert rc == -signal.SIGKILL
    run.assert_nothing_left(("verifier",))
    assert vllm_server.is_alive()  # the separately started server is not ours to stop


def test_trainer_crash_leaves_nothing_alive_with_external_verifier(tmp_path, tiny_model_dir, vllm_server):
    # external-url mode (a server started separately) + a trainer that crashes after Ray started
    run = RecipeRun("run_rubric.sh", tmp_path / "run", str(tiny_model_dir), "1", "", "True", str(tiny_model_dir),
                    "--", "actor_rollout_ref.model.path=/nonexistent/model",
                    VERLKIT_VERIFIER_URL=vllm_server.base_url)
    rc = run.wait(timeout=1500)
    out = run.output()
    assert rc != 0
    assert "verifier ready at " + vllm_server.base_url.rstrip("/") in out.replace("/v1/", "/v1")
    run.assert_nothing_left(("verifier",))
    # the separately started server is not ours to stop
    assert vllm_server.is_alive()
