"""run_c3po.sh: its configs (recipes/c3po/config, on the preference trainer's config) composed through
hydra with the overrides its driver builds, its GPU placement, the judge's key, the batch size and the
report, without launching anything."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf
from support.recipe_configs import compose_recipe

from recipes.c3po import run as c3po
from recipes.compose import script_settings
from recipes.driver import RecipeError

RUNTIME = ["recipe.run_dir=/runs/c", "data.train_files=/runs/c/train/x/train.parquet",
           "trainer.default_local_dir=/runs/c/train/x/checkpoints"]


def compose_c3po(argv, environ=None, profile="gpu"):
    chosen, extra = script_settings(c3po.KNOBS, c3po.POSITIONAL, argv, environ or {}, c3po.USAGE)
    return compose_recipe("c3po/c3po_cpu" if profile == "cpu" else "c3po/c3po", chosen + extra + RUNTIME)


def test_gpu_config_is_the_reference_configuration():
    cfg = compose_c3po(["/models/student"], {"TEACHER": "/models/teacher"})
    assert cfg.model.path == "/models/student" and (cfg.model.lora_rank, cfg.model.lora_alpha) == (64, 128)
    assert cfg.model.target_modules == "all-linear" and cfg.data.train_batch_size == 48
    assert cfg.optim.lr == 5e-5 and cfg.optim.lr_scheduler_type == "cosine" and cfg.optim.lr_warmup_steps_ratio == 0.05
    assert cfg.trainer.total_epochs == 1 and cfg.data.max_length == 2048
    pref = cfg.preference
    assert (pref.loss, pref.beta, pref.sigma_soft, pref.sigma_hard, pref.kd_lambda) == ("lcdpo", 0.1, 0.2, 0.1, 0.0)
    assert cfg.recipe.teacher.model == "/models/teacher" and cfg.recipe.teacher.max_model_len == 8192
    sample = OmegaConf.to_container(cfg.recipe.sample, resolve=True)
    assert sample == {"num_in_scope": 960, "num_near_scope": 960, "num_out_of_scope": 960, "prompts_per_category": 32,
                      "test_fraction": 0.1, "request_seeds": True, "general_prompts": None}
    assert OmegaConf.to_container(cfg.recipe.eval) == {"limit": 75, "max_tokens": 512}


@pytest.mark.parametrize("method,loss,soft,hard", [("dpo", "dpo", 0.2, 0.1), ("sft", "sft", 0.2, 0.1),
                                                    ("sft_neg", "sft_neg", 0.5, 0.5)])
def test_methods(method, loss, soft, hard):
    cfg = compose_c3po(["/s", "", method])
    assert (cfg.preference.loss, cfg.preference.sigma_soft, cfg.preference.sigma_hard) == (loss, soft, hard)
    assert cfg.recipe.method == method
    with pytest.raises(Exception, match="unknown method"):
        compose_c3po(["/s", "", "ipo"])


def test_cpu_config_and_knobs():
    cfg = compose_c3po([], {"NUM_PROMPTS": "6", "EVAL_BASELINES": "in_context,cot", "MAX_FEEDBACKS": "1"}, "cpu")
    assert cfg.recipe.student == "local:tiny" and cfg.recipe.teacher.model == "local:smollm2"
    assert cfg.trainer.device == "cpu" and cfg.data.train_batch_size == 12 and cfg.optim.lr == 5e-4
    assert (cfg.recipe.sample.num_near_scope, cfg.recipe.sample.num_out_of_scope) == (6, 6)
    assert cfg.recipe.sample.request_seeds is False and cfg.recipe.max_feedbacks == 1
    assert list(cfg.recipe.baselines) == ["in_context", "cot"]
    assert OmegaConf.to_container(cfg.recipe.eval) == {"limit": 4, "max_tokens": 48, "judge_max_tokens": 160}


def test_a_separate_judge_brings_its_own_key_and_the_default_judge_uses_the_teachers():
    teacher = ("http://127.0.0.1:5/v1", "teacher", "TEACHER_KEY")
    none = SimpleNamespace(url=None, model=None, api_key_env=None)
    assert c3po.judge_endpoint(none, *teacher) == ("http://127.0.0.1:5/v1", "teacher", "TEACHER_KEY")
    named = SimpleNamespace(url=None, model="teacher-big", api_key_env="IGNORED")
    assert c3po.judge_endpoint(named, *teacher) == ("http://127.0.0.1:5/v1", "teacher-big", "TEACHER_KEY")
    separate = SimpleNamespace(url="https://judge.example/v1", model="judge-70b", api_key_env="JUDGE_KEY")
    assert c3po.judge_endpoint(separate, *teacher) == ("https://judge.example/v1", "judge-70b", "JUDGE_KEY")
    keyless = SimpleNamespace(url="https://judge.example/v1", model=None, api_key_env=None)
    assert c3po.judge_endpoint(keyless, *teacher) == ("https://judge.example/v1", "teacher", None)


def test_judge_constraint_from_the_recipe():
    from verlkit.c3po.endpoints import use_constraints

    assert compose_c3po(["/m"]).recipe.judge.constrained == "auto"  # GPU: ours constrained, hosted not
    assert compose_c3po([], profile="cpu").recipe.judge.constrained == "on"
    assert compose_c3po([], {"JUDGE_CONSTRAINED": "false"}, profile="cpu").recipe.judge.constrained == "off"
    assert compose_c3po(["/m"], {"JUDGE_CONSTRAINED": "ON"}).recipe.judge.constrained == "on"
    assert not use_constraints("auto", "https://api.example.com/v1") and use_constraints("on", "https://x/v1")
    assert [c3po.constrain_flag(v) for v in (True, False, "Auto", "1")] == ["on", "off", "auto", "on"]
    with pytest.raises(Exception, match="JUDGE_CONSTRAINED"):
        compose_c3po(["/m"], {"JUDGE_CONSTRAINED": "sometimes"})
    # a hosted judge left on auto is not probed (nothing to send)
    c3po.probe_judge("https://api.example.com/v1", "judge", None, "auto")


def test_a_judge_server_that_refuses_the_constraint_stops_the_run(monkeypatch):
    from verl.utils.reward_score import templated

    def refusing(client, messages, *, constraint, top_logprobs, reward):
        assert constraint.admits("EXPLANATION: shorter.\nBETTER_RESPONSE: 4") and reward == "c3po judge"
        raise templated.ServerFeatureError("c3po judge: the server refuses regex")

    monkeypatch.setattr(templated, "probe_server", refusing)  # a fault no real server produces on demand
    with pytest.raises(RecipeError, match="refuses regex") as e:
        c3po.probe_judge("http://127.0.0.1:1/v1", "teacher", None, "on")
    assert e.value.code == 2


def test_report_says_what_all_tie_scopes_are_made_of(tmp_path):
    summary = {"tie_rate": 1.0, "n_judged": 4, "tie_reasons": {"identical_responses": 3, "judge_position_bias": 1}}
    result = {"feedback": "fb", "method": "trained", "type": "qualitative", "adherence": 0.0,
              "overgeneralization_near": 0.0, "overgeneralization_out": 0.0,
              "sets": {"in_scope": {"summary": summary}, "near_scope": {"summary": {"tie_rate": 0.5}},
                       "out_of_scope": {"summary": {"tie_rate": None}}}}
    (tmp_path / "eval" / "fb").mkdir(parents=True)
    (tmp_path / "eval" / "fb" / "trained.json").write_text(json.dumps(result))
    from recipes.c3po.plan import Point, comparison_rows, comparison_table

    lines = comparison_table(comparison_rows(tmp_path, [Point("")])).splitlines()
    assert lines[-1] == "fb [trained] in_scope: all 4 judged prompts are ties (identical responses 3, judge position bias 1)"
    assert not any("near_scope" in line or "out_of_scope" in line for line in lines)


def test_batch_rows():
    assert c3po.batch_rows(rows=30, configured=12, nproc=1) == 12
    assert c3po.batch_rows(rows=5, configured=12, nproc=1) == 5  # a batch larger than the data gives no step
    assert c3po.batch_rows(rows=100, configured=48, nproc=5) == 50  # whole rows per process
    assert c3po.batch_rows(rows=7, configured=48, nproc=2) == 8


def test_gpu_placement():
    gpus = ["0", "1", "2", "3"]
    assert c3po.place_devices(gpus, [], [], [], False) == (["2"], ["3"], ["0", "1"])
    assert c3po.place_devices(gpus, [], [], [], True) == (["2"], [], ["0", "1", "3"])  # a hosted teacher
    assert c3po.place_devices(gpus, ["0"], ["1"], [], False) == (["0"], ["1"], ["2", "3"])
    with pytest.raises(RecipeError, match="no GPU left for training"):
        c3po.place_devices(["0", "1"], [], [], [], False)
