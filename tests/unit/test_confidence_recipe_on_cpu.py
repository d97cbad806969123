"""run_confidence.sh: its configs (recipes/confidence/config) composed through verl's hydra with the
overrides its driver builds, its GPU placement and its evaluation report, without launching anything."""

import pytest
from omegaconf import OmegaConf
from support.recipe_configs import compose_recipe

from recipes.compose import script_settings
from recipes.confidence import run as confidence
from recipes.driver import RecipeError

RUNTIME = ["recipe.run_dir=/runs/c1", "recipe.downstream.url='http://127.0.0.1:8001/v1'", "recipe.train_gpu_count=3"]


def compose_confidence(argv, environ=None, profile="gpu", runtime=RUNTIME):
    chosen, extra = script_settings(confidence.KNOBS, confidence.POSITIONAL, argv, environ or {}, confidence.USAGE)
    return compose_recipe("confidence/confidence_cpu" if profile == "cpu" else "confidence/confidence", chosen + extra + runtime)


def assert_reference_grpo(cfg):
    """The seed's MedMCQA GRPO settings both designs share (reference-methods §2.6, mapped in §2.11)."""
    actor = cfg.actor_rollout_ref.actor
    assert cfg.algorithm.adv_estimator == "grpo"
    assert cfg.algorithm.norm_adv_by_std_in_grpo is False  # TRL scale_rewards=false
    assert cfg.algorithm.use_kl_in_reward is False
    assert actor.optim.lr == 1e-6 and actor.ppo_epochs == 4 and actor.grad_clip == 1.0
    assert actor.entropy_coeff == 0


def assert_prompt4trust_sampling(cfg):
    """Prompt4Trust's seed: KL 0.04 (k3), temperature 0.1 / top_p 0.95 / top_k 50 (§2.6)."""
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert actor.use_kl_loss is True and actor.kl_loss_coef == 0.04 and actor.kl_loss_type == "low_var_kl"
    assert (rollout.temperature, rollout.top_p, rollout.top_k) == (0.1, 0.95, 50)
    assert actor.optim.lr_warmup_steps_ratio == 0.0


def assert_rlcr_sampling(cfg):
    """The RLCR paper: beta 0 (no KL), temperature 0.7 without top-p/top-k cuts, 5 % warm-up (§2.9)."""
    actor, rollout = cfg.actor_rollout_ref.actor, cfg.actor_rollout_ref.rollout
    assert actor.use_kl_loss is False and actor.kl_loss_coef == 0.0
    assert (rollout.temperature, rollout.top_p, rollout.top_k) == (0.7, 1.0, -1)
    assert actor.optim.lr_warmup_steps_ratio == 0.05


def test_gpu_cgp_config_has_the_reference_settings():
    cfg = compose_confidence(["/models/qwen2-0.5b-instruct", "cgp", "/models/downstream"])
    assert_reference_grpo(cfg)
    assert_prompt4trust_sampling(cfg)
    assert cfg.actor_rollout_ref.rollout.n == 8 and cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.data.max_response_length == 256  # short hints
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 20480
    assert cfg.actor_rollout_ref.rollout.max_num_batched_tokens == 10240
    assert cfg.data.train_batch_size == 32 and cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 32
    assert cfg.trainer.n_gpus_per_node == 3 and cfg.trainer.total_epochs == 3 and cfg.trainer.save_freq == 200
    assert cfg.data.train_files == "/runs/c1/data/cgp/train.parquet"
    assert cfg.trainer.project_name == "verlkit-confidence-cgp"
    fn = cfg.reward.custom_reward_function
    assert fn.path == "pkg://verl.utils.reward_score.registry" and fn.name == "compute_score_async"
    assert OmegaConf.to_container(fn.reward_kwargs, resolve=True) == {"cgp": {
        "url": "http://127.0.0.1:8001/v1", "model": "downstream", "variant": "log_penalized", "max_tokens": 256,
        "api_key_env": None, "rate_limit_rps": None, "template_file": None, "constrained": False,
        "reasoning_chars": None,
    }}
    assert confidence.downstream_eval_arguments(cfg.recipe.downstream) == ["--downstream-constrained", "false"]
    assert cfg.recipe.eval.policy_max_tokens == 256


def test_hosted_downstream_passes_the_key_by_env_var_name_and_a_rate_limit():
    cfg = compose_confidence(["/m", "cgp", "gpt-4o-mini"], {
        "DOWNSTREAM_URL": "https://api.example.com/v1", "DOWNSTREAM_API_KEY_ENV": "OPENAI_API_KEY",
        "DOWNSTREAM_RATE_LIMIT_RPS": "5", "VARIANT": "brier",
    }, runtime=["recipe.run_dir=/r", "recipe.downstream.served_name=gpt-4o-mini"])
    cgp = cfg.reward.custom_reward_function.reward_kwargs.cgp
    assert cgp.api_key_env == "OPENAI_API_KEY" and cgp.rate_limit_rps == 5.0 and cgp.model == "gpt-4o-mini"
    assert cgp.url == "https://api.example.com/v1" and cgp.variant == "brier"


def test_the_reward_options_are_accepted_by_the_cgp_reward(monkeypatch):
    monkeypatch.setenv("K", "a-key")  # the options check that the named key variable is set
    from verl.utils.reward_score.calibration import CGPOptions
    from verl.utils.reward_score.options import parse_options

    cfg = compose_confidence(["/m", "cgp", "/d"], {"VARIANT": "brier", "DOWNSTREAM_RATE_LIMIT_RPS": "2",
                                                   "DOWNSTREAM_API_KEY_ENV": "K"})
    opts = parse_options(CGPOptions, OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs.cgp,
                                                            resolve=True))
    assert opts.variant == "brier" and opts.rate_limit_rps == 2 and opts.api_key_env == "K"


def test_gpu_rlcr_config_has_no_downstream_and_longer_responses():
    cfg = compose_confidence(["/m", "rlcr"])
    assert_reference_grpo(cfg)
    assert_rlcr_sampling(cfg)
    assert cfg.actor_rollout_ref.rollout.n == 32 and cfg.data.max_response_length == 1024
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 32768
    assert not cfg.reward.custom_reward_function.get("reward_kwargs")
    assert cfg.reward.custom_reward_function.name == "compute_score_async"
    assert cfg.recipe.design == "rlcr" and cfg.recipe.eval.policy_max_tokens == 1024
    assert cfg.data.val_files == "/runs/c1/data/rlcr/dev.parquet"


def test_cpu_config_saves_its_last_step_and_evaluates_briefly():
    cfg = compose_confidence([], profile="cpu", runtime=["recipe.run_dir=/r"])
    assert_reference_grpo(cfg)
    assert_prompt4trust_sampling(cfg)
    assert cfg.actor_rollout_ref.rollout.n == 2
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.device == "cpu"
    assert cfg.trainer.total_training_steps == 2 and cfg.trainer.save_freq == 2
    assert cfg.recipe.policy == "local:tiny" and cfg.recipe.downstream.model == "local:smollm2"
    assert OmegaConf.to_container(cfg.recipe.eval) == {"limit": None, "policy_max_tokens": 32, "max_concurrency": 16,
                                                       "downstream_temperature": 0}
    cfg = compose_confidence([], {"STEPS": "5", "EVAL_LIMIT": "8"}, profile="cpu", runtime=["recipe.run_dir=/r"])
    assert cfg.trainer.save_freq == 5 and cfg.recipe.eval.limit == 8


def test_cpu_downstream_is_constrained_in_training_and_evaluation():
    from verl.utils.reward_score.calibration import CGPOptions
    from verl.utils.reward_score.options import parse_options

    cfg = compose_confidence([], profile="cpu", runtime=["recipe.run_dir=/r", "recipe.downstream.url='http://127.0.0.1:1/v1'"])
    cgp = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs.cgp, resolve=True)
    constraint = parse_options(CGPOptions, cgp).constraint(4)
    assert constraint.admits("The hint points to insulin.\nthe answer is 2 with confidence 70")
    assert not constraint.admits("The answer is insulin.")  # no answer line, no confidence
    assert not constraint.admits("the answer is 5 with confidence 70")  # only 4 options
    assert confidence.downstream_eval_arguments(cfg.recipe.downstream) == ["--downstream-constrained", "true"]
    off = compose_confidence([], {"DOWNSTREAM_CONSTRAINED": "false"}, profile="cpu", runtime=["recipe.run_dir=/r"])
    assert off.reward.custom_reward_function.reward_kwargs.cgp.constrained is False


def test_downstream_template_file_reaches_reward_and_evaluation(tmp_path):
    template = tmp_path / "downstream.yaml"
    template.write_text("messages:\n  - role: user\n    content: |\n      {question}\n      {options}\n"
                        "      Hint: {hint}\n      End with: the answer is N with confidence C\n")
    cfg = compose_confidence(["/m", "cgp", "/d"], {"DOWNSTREAM_TEMPLATE_FILE": str(template),
                                                   "DOWNSTREAM_CONSTRAINED": "1"})
    assert cfg.reward.custom_reward_function.reward_kwargs.cgp.template_file == str(template)
    assert confidence.downstream_eval_arguments(cfg.recipe.downstream) == [
        "--downstream-constrained", "true", "--downstream-template-file", str(template)]
    from verlkit.evaluation.calibration import build_parser

    args = build_parser().parse_args(["--design", "cgp", "--data", "d.parquet", "--out", "o", "--policy-url", "u",
                                      "--policy-model", "p", *confidence.downstream_eval_arguments(cfg.recipe.downstream)])
    assert (args.downstream_constrained, args.downstream_template_file) == ("true", str(template))


def test_a_bad_downstream_template_or_a_refused_constraint_stops_the_run(tmp_path, monkeypatch):
    bad = tmp_path / "bad.yaml"
    bad.write_text("messages:\n  - role: user\n    content: '{question} {options} {clue}'\n")
    cfg = compose_confidence(["/m", "cgp", "/d"], {"DOWNSTREAM_TEMPLATE_FILE": str(bad)})
    with pytest.raises(RecipeError, match="clue") as e:
        confidence.probe_downstream(cfg)
    assert e.value.code == 2
    from verl.utils.reward_score import calibration
    from verl.utils.reward_score.templated import ServerFeatureError

    def refusing(opts):
        raise ServerFeatureError("cgp: the server refuses regex")

    monkeypatch.setattr(calibration, "probe_downstream", refusing)  # a fault no real server produces on demand
    cfg = compose_confidence([], profile="cpu", runtime=["recipe.run_dir=/r", "recipe.downstream.url='http://127.0.0.1:1/v1'"])
    with pytest.raises(RecipeError, match="refuses regex"):
        confidence.probe_downstream(cfg)


def test_the_two_designs_compose_their_own_training_settings():
    """rlcr trains as the RLCR paper, cgp as Prompt4Trust: on the GPU profile and, scaled down, on the CPU
    default (issue 12, point 5); a user override still wins."""
    for profile, (cgp_n, rlcr_n) in (("gpu", (8, 32)), ("cpu", (2, 4))):
        runtime = ["recipe.run_dir=/r"] if profile == "cpu" else RUNTIME
        cgp = compose_confidence(["", "cgp"] if profile == "cpu" else ["/m", "cgp", "/d"], profile=profile, runtime=runtime)
        rlcr = compose_confidence(["", "rlcr"] if profile == "cpu" else ["/m", "rlcr"], profile=profile, runtime=runtime)
        assert_prompt4trust_sampling(cgp)
        assert_rlcr_sampling(rlcr)
        assert (cgp.actor_rollout_ref.rollout.n, rlcr.actor_rollout_ref.rollout.n) == (cgp_n, rlcr_n)
        # what both designs share stays the same
        assert_reference_grpo(cgp)
        assert_reference_grpo(rlcr)
    chosen = compose_confidence(["/m", "rlcr", "", "", "--", "actor_rollout_ref.rollout.n=16",
                                 "actor_rollout_ref.rollout.temperature=1.0"])
    assert (chosen.actor_rollout_ref.rollout.n, chosen.actor_rollout_ref.rollout.temperature) == (16, 1.0)


def test_unknown_designs_are_refused():
    with pytest.raises(Exception, match="must be cgp or rlcr"):
        compose_confidence(["/m", "selfcheck"])


def test_gpu_placement():
    gpus = ["0", "1", "2", "3"]
    assert confidence.place_devices(gpus, "cgp", False, [], []) == (["0", "1", "2"], ["3"])
    assert confidence.place_devices(gpus, "cgp", False, [], ["2", "3"]) == (["0", "1"], ["2", "3"])
    assert confidence.place_devices(gpus, "cgp", True, [], []) == (gpus, [])  # a hosted downstream
    assert confidence.place_devices(gpus, "rlcr", False, ["1"], []) == (["1"], [])
    with pytest.raises(RecipeError, match="share device\\(s\\) 1") as e:
        confidence.place_devices(gpus, "cgp", False, ["0", "1"], ["1", "2"])
    assert e.value.code == 2
    with pytest.raises(RecipeError, match="cgp needs 2\\+ GPUs"):
        confidence.place_devices(["0"], "cgp", False, [], [])
    with pytest.raises(RecipeError, match="no GPU left for training"):
        confidence.place_devices(["0", "1"], "cgp", False, [], ["0", "1"])


def test_eval_report_tables_the_metrics_and_fails_on_a_condition_without_answers():
    answered = {"n": 16, "parse_failure_rate": 0.25, "request_failures": 1,
                "all": {"accuracy": 0.5, "ece": 0.125, "brier": 0.25, "auroc": None, "mean_confidence": 0.6}}
    table, problems = confidence.eval_report({"conditions": {"with_hint": answered,
                                                             "baseline": {"n": 0, "request_failures": 16}}})
    assert problems == ["baseline: no answered rows (16 request failures)"]
    row = table.splitlines()[1].split()
    assert row == ["with_hint", "16", "0.500", "0.125", "0.250", "n/a", "0.600", "0.250", "1"]
    assert confidence.eval_report({"conditions": {"policy": answered}})[1] == []


def test_gdpo_is_chosen_from_the_config_with_each_designs_score_components():
    # grpo by default; the design's components are there but only gdpo reads them
    cfg = compose_confidence(["/m", "rlcr"])
    assert cfg.algorithm.adv_estimator == "grpo"
    confidence.check_estimator(cfg)
    cfg = compose_confidence(["/m", "rlcr"], {"ALGORITHM": "gdpo"})
    assert cfg.algorithm.adv_estimator == "gdpo"
    assert list(cfg.algorithm.gdpo_reward_keys) == ["format_term", "accuracy_term", "brier_term"]
    assert list(cfg.algorithm.gdpo_reward_weights) == [0.5, 0.5, 0.5]  # RLCR's score: 0.5 each
    confidence.check_estimator(cfg)
    cfg = compose_confidence(["/m", "cgp", "/d"], {"ALGORITHM": "gdpo"}, profile="cpu",
                             runtime=["recipe.run_dir=/r"])  # fmt: skip
    assert list(cfg.algorithm.gdpo_reward_keys) == ["accuracy_term", "calibration_term"]
    assert list(cfg.algorithm.gdpo_reward_weights) == [1.0, 1.0]
    # verl's own algorithm config class accepts the section as the trainer will read it
    from verl.trainer.config import AlgoConfig
    from verl.utils.config import omega_conf_to_dataclass

    algo = omega_conf_to_dataclass(cfg.algorithm, AlgoConfig)
    assert algo.adv_estimator == "gdpo" and algo.gdpo_reward_keys == ["accuracy_term", "calibration_term"]


def test_gdpo_keys_are_score_components_the_designs_rewards_return():
    from verl.utils.reward_score.registry import resolve

    for design, source in (("rlcr", "medmcqa_rlcr"), ("cgp", "medmcqa_cgp")):
        keys = compose_confidence(["/m", design, "/d"], {"ALGORITHM": "gdpo"}).algorithm.gdpo_reward_keys
        assert set(keys) <= set(resolve(source).metrics), design  # declared reward keys of the design's rows


def test_estimators_other_than_grpo_and_gdpo_or_gdpo_without_keys_are_refused():
    with pytest.raises(RecipeError, match="must be one of grpo, gdpo") as e:
        confidence.check_estimator(compose_confidence(["/m", "rlcr"], {"ALGORITHM": "gae"}))
    assert e.value.code == 2
    cfg = compose_confidence(["/m", "rlcr", "", "", "--", "algorithm.gdpo_reward_weights=[1.0]"], {"ALGORITHM": "gdpo"})
    with pytest.raises(RecipeError, match="one weight per key"):
        confidence.check_estimator(cfg)


def test_the_calibration_monitor_is_set_from_the_config():
    cfg = compose_confidence(["/m", "rlcr"])
    assert confidence.monitor_environment(cfg) == {
        "VERLKIT_CALIBRATION_MONITOR": "1", "VERLKIT_CONFIDENCE_STD_MIN": "0.05",
        "VERLKIT_CONFIDENCE_COLLAPSE_STEPS": "3"}
    cfg = compose_confidence(["/m", "rlcr", "", "", "--", "recipe.calibration_monitor.collapse_steps=5"],
                             {"VERLKIT_CONFIDENCE_STD_MIN": "0.1", "CALIBRATION_MONITOR": "false"})
    assert confidence.monitor_environment(cfg) == {
        "VERLKIT_CALIBRATION_MONITOR": "0", "VERLKIT_CONFIDENCE_STD_MIN": "0.1",
        "VERLKIT_CONFIDENCE_COLLAPSE_STEPS": "5"}


def test_the_monitor_reads_the_environment_the_driver_sets(monkeypatch):
    from verlkit.plugin import calibration_monitor as cmon

    cfg = compose_confidence(["/m", "rlcr", "", "", "--", "recipe.calibration_monitor.std_min=0.5",
                              "recipe.calibration_monitor.collapse_steps=1"])  # fmt: skip
    for name, value in confidence.monitor_environment(cfg).items():
        monkeypatch.setenv(name, value)
    monitor = cmon.CalibrationMonitor()
    # conf [0.6, 0.8]: std 0.1 < 0.5 -> the alarm fires on the first step (collapse_steps 1)
    out = monitor.update({"confidence": [0.6, 0.8], "acc": [1.0, 0.0]})
    assert out["calibration/low_std_steps"] == 1.0 and out["calibration/collapse_warnings"] == 1.0
    monkeypatch.setenv("VERLKIT_CALIBRATION_MONITOR", "0")
    assert cmon.CalibrationMonitor().update({"confidence": [0.6, 0.8], "acc": [1.0, 0.0]}) == {}


# ---- hosted downstream presets (issue 17.2) ----------------------------------------------------------


def compose_with_preset(argv, environ=None):
    """The config the driver trains with: the user's settings, then the preset's overrides."""
    from recipes.confidence.hosted import preset_overrides

    runtime = ["recipe.run_dir=/r"]
    cfg = compose_confidence(argv, environ, runtime=runtime)
    return compose_confidence(argv, environ, runtime=runtime + preset_overrides(cfg.recipe.downstream))


@pytest.mark.parametrize("name, url, key, rps", [
    ("gpt-4o-mini-2024-07-18", "https://api.openai.com/v1", "OPENAI_API_KEY", 8.0),
    ("gemini-2.0-flash-001", "https://generativelanguage.googleapis.com/v1beta/openai", "GEMINI_API_KEY", 0.25),
])  # fmt: skip
def test_a_hosted_preset_fills_in_endpoint_name_key_variable_and_rate(name, url, key, rps):
    cgp = compose_with_preset(["/m", "cgp", name]).reward.custom_reward_function.reward_kwargs.cgp
    assert (cgp.url, cgp.model, cgp.api_key_env, cgp.rate_limit_rps) == (url, name, key, rps)


def test_the_users_settings_win_over_the_presets():
    cgp = compose_with_preset(["/m", "cgp", "gpt-4o-mini-2024-07-18"], {
        "DOWNSTREAM_API_KEY_ENV": "MY_OPENAI_KEY", "DOWNSTREAM_RATE_LIMIT_RPS": "2"}).reward.custom_reward_function.reward_kwargs.cgp  # fmt: skip
    assert (cgp.url, cgp.api_key_env, cgp.rate_limit_rps) == ("https://api.openai.com/v1", "MY_OPENAI_KEY", 2.0)
    # with DOWNSTREAM_URL the name is just the model name on that API: no preset applies
    cgp = compose_with_preset(["/m", "cgp", "gemini-2.0-flash-001"], {
        "DOWNSTREAM_URL": "https://proxy.example.com/v1"}).reward.custom_reward_function.reward_kwargs.cgp  # fmt: skip
    assert (cgp.url, cgp.api_key_env, cgp.rate_limit_rps) == ("https://proxy.example.com/v1", None, None)


def test_an_open_model_stays_served_by_us():
    from recipes.confidence.hosted import preset_overrides

    cfg = compose_confidence(["/m", "cgp", "/models/llama-3.1-8b-instruct"], runtime=["recipe.run_dir=/r"])
    assert preset_overrides(cfg.recipe.downstream) == [] and cfg.recipe.downstream.url is None


def test_missing_key_stops_the_run_before_anything_starts(monkeypatch, tmp_path, capsys):
    """The driver's order: the key check comes before the run directory, the data, any server and any
    trainer (each of them would fail the test if reached)."""
    from recipes import driver

    def reached(*args, **kwargs):
        raise AssertionError("the run went past the key check")

    monkeypatch.setenv("VK_PROFILE", "gpu")  # no nvidia-smi here: placement would fail if it ran first
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    for name in ("open", "serve", "serve_together", "train", "run_process"):
        monkeypatch.setattr(driver.Run, name, reached)
    monkeypatch.setattr(confidence, "gpu_indices", reached)
    rc = confidence.main(["/m", "cgp", "gpt-4o-mini-2024-07-18", "--", f"recipe.run_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc == 2 and "OPENAI_API_KEY" in err and "gpt-4o-mini-2024-07-18" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs").exists()


def test_with_the_key_set_the_run_goes_on_to_placement(monkeypatch):
    monkeypatch.setenv("VK_PROFILE", "gpu")
    monkeypatch.setenv("GEMINI_API_KEY", "not-a-real-key")
    monkeypatch.setattr(confidence, "gpu_indices", lambda: [])  # placement refuses: no GPU
    with pytest.raises(RecipeError, match="no GPU found for training"):
        confidence.body(None, ["/m", "cgp", "gemini-2.0-flash-001"])
