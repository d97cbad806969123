"""run_rubric.sh with setup=hybrid: the verifier and the rubric model on the two sides of the rule check,
their options composed through verl's hydra as the driver builds them, without launching anything."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from recipes.driver import RecipeError
from recipes.rubric import run as rubric

ORIGINAL_8GPU = ["/models/policy", "12", "/data", "True", "/models/rubric-rm"]
RUNTIME = ["recipe.run_dir=/runs/r1", "recipe.verifier.url='http://127.0.0.1:8000/v1'",
           "recipe.verifier.served_name=rubric-model"]

HYBRID_RUNTIME = RUNTIME + ["recipe.rubric_model.url='http://127.0.0.1:8001/v1'", "recipe.rubric_model.served_name=rubric"]


def hybrid_settings(argv, environ, monkeypatch, profile="gpu"):
    """The driver's settings of a run, as its body builds them (profile from VK_PROFILE)."""
    from recipes.settings import RecipeSettings

    monkeypatch.setenv("VK_PROFILE", profile)
    for name in rubric.KNOBS:  # only this call's knobs
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    s = RecipeSettings("rubric", rubric.CONFIG_DIR, rubric.KNOBS, rubric.POSITIONAL, argv, rubric.USAGE)
    return s, rubric.choose_verification(s)


def test_setup_hybrid_selects_both_models_options(monkeypatch):
    s, hybrid = hybrid_settings(["/m", "", "", "True", "/tinyv-verifier", "hybrid"], {"RUBRIC_MODEL": "/rrm"}, monkeypatch)
    assert hybrid and "verification=hybrid" in s.overrides()  # the trainer gets the same choice
    s.add(*HYBRID_RUNTIME)
    kwargs = OmegaConf.to_container(s.cfg.reward.custom_reward_function.reward_kwargs, resolve=True)
    assert kwargs["routing"] == {"match": "strict", "fallback": "rule"}
    assert {"tinyv": kwargs["tinyv"]} == {"tinyv": {
        "setup": "hybrid",
        "verifier": {"url": "http://127.0.0.1:8000/v1", "model": "rubric-model", "template": "tinyv", "weight": 1.0,
                     "template_file": None, "verdict": None, "verdict_mode": "label", "constrained": False,
                     "reasoning_chars": None,
                     "max_concurrency": 64, "timeout_s": 120.0, "max_tokens": 0, "on_failure": "rule"},
        "rubric": {"url": "http://127.0.0.1:8001/v1", "model": "rubric", "template": "rubric", "weight": 0.5,
                   "template_file": None, "verdict": None, "verdict_mode": "label", "constrained": False,
                   "reasoning_chars": None,
                   "mode": "weighted", "flaw_threshold": 0.7, "share": 0.5, "max_concurrency": 64, "timeout_s": 120.0,
                   "max_tokens": 0, "on_failure": "rule"},
    }}
    assert s.cfg.recipe.rubric_model.model == "/rrm"
    # policy 0.6 + verifier 0.2 + rubric model 0.1 on each GPU
    assert s.cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.6
    # ... and the hybrid reward accepts them as they come from hydra
    from verl.utils.reward_score.hybrid import HybridOptions
    from verl.utils.reward_score.options import parse_options

    opts = parse_options(HybridOptions, kwargs["tinyv"])
    assert (opts.verifier.url, opts.verifier.template, opts.rubric.url, opts.rubric.model) == (
        "http://127.0.0.1:8000/v1", "tinyv", "http://127.0.0.1:8001/v1", "rubric")
    assert (opts.rubric.weight, opts.rubric.share, opts.verifier.weight) == (0.5, 0.5, 1.0)
    rubric.check_verifier_options(s.cfg)


def test_hybrid_knobs_reach_the_rubric_side(monkeypatch):
    s, hybrid = hybrid_settings(["/m", "", "", "True", "/v", "hybrid", "0.8", "--", "recipe.rubric_model.flaw_threshold=0.6"],
                                {"RUBRIC_MODEL": "/rrm", "RUBRIC_WEIGHT": "0.3", "RUBRIC_MODE": "penalty",
                                 "RUBRIC_SHARE": "1", "TEMPLATE": "rubric", "ON_FAILURE": "zero"}, monkeypatch)  # fmt: skip
    tinyv = s.cfg.reward.custom_reward_function.reward_kwargs.tinyv
    assert (tinyv.rubric.weight, tinyv.rubric.mode, tinyv.rubric.share, tinyv.rubric.flaw_threshold) == (
        0.3, "penalty", 1.0, 0.6)
    assert (tinyv.verifier.weight, tinyv.verifier.template) == (0.8, "rubric")  # the knob wins over hybrid's tinyv
    assert tinyv.rubric.on_failure == "zero" and tinyv.verifier.on_failure == "zero"  # shared unless set per side


def test_other_setups_keep_one_model(monkeypatch):
    s, hybrid = hybrid_settings(["/m", "", "", "True", "/v", "addon"], {"RUBRIC_MODEL": "/rrm"}, monkeypatch)
    assert not hybrid and not any(o.startswith("verification=") for o in s.overrides())
    assert "rubric" not in s.cfg.reward.custom_reward_function.reward_kwargs.tinyv
    # the verification group chosen directly does not add it twice
    s, hybrid = hybrid_settings(["/m", "", "", "True", "/v", "", "", "--", "verification=hybrid"],
                                {"RUBRIC_MODEL": "/rrm"}, monkeypatch)  # fmt: skip
    assert hybrid and s.overrides().count("verification=hybrid") == 1


def test_rubric_model_layouts_and_hybrid_checks(monkeypatch):
    s, _ = hybrid_settings(ORIGINAL_8GPU + ["hybrid"], {"RUBRIC_MODEL": "/rrm"}, monkeypatch)
    colocated = rubric.rubric_model_spec(s.cfg, Path("/runs/r1"))
    assert (colocated.name, colocated.model, colocated.devices) == ("rubric", "/rrm", None)
    assert (colocated.tensor_parallel_size, colocated.gpu_memory_utilization, colocated.max_model_len) == (8, 0.1, 15000)
    s, _ = hybrid_settings(ORIGINAL_8GPU + ["hybrid"], {"RUBRIC_MODEL": "/rrm", "RUBRIC_DEVICES": "7",
                                                        "VERIFIER_DEVICES": "6"}, monkeypatch)  # fmt: skip
    dedicated = rubric.rubric_model_spec(s.cfg, Path("/runs/r1"))
    assert (dedicated.devices, dedicated.tensor_parallel_size, dedicated.gpu_memory_utilization) == ("7", 1, 0.9)
    rubric.check_verifier_options(s.cfg)
    s, _ = hybrid_settings(ORIGINAL_8GPU + ["hybrid"], {"RUBRIC_URL": "http://10.0.0.3:9000/v1"}, monkeypatch)
    assert rubric.rubric_model_spec(s.cfg, Path("/r")).external_url == "http://10.0.0.3:9000/v1"
    rubric.check_verifier_options(s.cfg)
    s, _ = hybrid_settings(ORIGINAL_8GPU + ["hybrid"], {}, monkeypatch)
    with pytest.raises(RecipeError, match="setup=hybrid needs a rubric model") as e:
        rubric.check_verifier_options(s.cfg)
    assert e.value.code == 2
    s, _ = hybrid_settings(ORIGINAL_8GPU + ["hybrid"], {"RUBRIC_MODEL": "/rrm", "RUBRIC_DEVICES": "6,7",
                                                        "VERIFIER_DEVICES": "6"}, monkeypatch)  # fmt: skip
    with pytest.raises(RecipeError, match="share device\\(s\\) 6"):
        rubric.check_verifier_options(s.cfg)
    s, _ = hybrid_settings(ORIGINAL_8GPU + ["hybrid"], {"RUBRIC_MODEL": "/rrm", "RUBRIC_SHARE": "1.5"}, monkeypatch)
    with pytest.raises(RecipeError, match="share"):
        rubric.check_verifier_options(s.cfg)


def test_cpu_hybrid_serves_smollm2_twice(monkeypatch):
    s, hybrid = hybrid_settings(["", "", "", "", "", "hybrid"], {}, monkeypatch, profile="cpu")
    assert hybrid and s.name == "rubric_cpu"
    assert s.cfg.recipe.rubric_model.model == "local:smollm2" and s.cfg.recipe.rubric_model.max_model_len == 2048
    assert s.cfg.recipe.rubric_model.max_tokens == 256  # the CPU verifier's budget, for both sides
    sides = s.cfg.reward.custom_reward_function.reward_kwargs.tinyv
    assert (sides.verifier.constrained, sides.rubric.constrained, sides.rubric.reasoning_chars) == (True, True, 200)
    rubric.check_verifier_options(s.cfg)


def test_a_template_file_replaces_the_builtin_template_of_its_own_side_only(tmp_path, monkeypatch):
    prompt = tmp_path / "rrm.yaml"
    prompt.write_text("defaults: {verdict: total_score}\nmessages:\n  - role: user\n    content: |-\n"
                      "      {question} {criteria} {response}\n")
    s, hybrid = hybrid_settings(ORIGINAL_8GPU + ["hybrid", "", "--", f"recipe.rubric_model.template_file={prompt}"],
                                {"RUBRIC_MODEL": "/rrm"}, monkeypatch)  # fmt: skip
    assert rubric.template_overrides(s.cfg, hybrid) == [f"~{rubric.TINYV_OPTIONS}.rubric.template"]
    s.defaults += rubric.template_overrides(s.cfg, hybrid)
    s.add(*HYBRID_RUNTIME)
    tinyv = s.cfg.reward.custom_reward_function.reward_kwargs.tinyv
    assert "template" not in tinyv.rubric and tinyv.rubric.template_file == str(prompt)
    assert tinyv.verifier.template == "tinyv"
    rubric.check_verifier_options(s.cfg)
