"""run_rubric.sh and train_rrm.sh: their configs (recipes/rubric/config) composed through verl's hydra with
the overrides their drivers build from arguments and environment knobs, without launching anything."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support.recipe_configs import compose_recipe

from recipes.compose import SettingError, script_settings
from recipes.driver import RecipeError
from recipes.rubric import run as rubric
from recipes.rubric import train_rrm

ORIGINAL_8GPU = ["/models/policy", "12", "/data", "True", "/models/rubric-rm"]
RUNTIME = ["recipe.run_dir=/runs/r1", "recipe.verifier.url='http://127.0.0.1:8000/v1'",
           "recipe.verifier.served_name=rubric-model"]


def settings(argv, environ):
    return script_settings(rubric.KNOBS, rubric.POSITIONAL, argv, environ, rubric.USAGE)


def compose_rubric(argv, environ=None, profile="gpu", runtime=RUNTIME):
    chosen, extra = settings(argv, environ or {})
    return compose_recipe("rubric/rubric_cpu" if profile == "cpu" else "rubric/rubric", chosen + extra + runtime)


def test_arguments_and_knobs_become_overrides():
    chosen, extra = settings(["/m", "3", "", "False", "/v", "addon", "0.5", "--", "trainer.save_freq=5"],
                             {"STEPS": "7", "LOGGER": "console", "VERIFIER_DEVICES": "6,7", "TEMPLATE": ""})
    assert chosen == [
        "trainer.total_training_steps=7",
        "trainer.logger=['console']",
        "recipe.verifier.devices='6,7'",
        "recipe.policy='/m'",
        "trainer.total_epochs=3",
        "regularization=kl",
        "recipe.verifier.model='/v'",
        "recipe.verifier.setup='addon'",
        "recipe.verifier.weight=0.5",
    ]
    assert extra == ["trainer.save_freq=5"]
    with pytest.raises(SettingError, match="epochs: expected an integer"):
        settings(["/m", "twelve"], {})
    with pytest.raises(SettingError, match="too many arguments"):
        settings(["1", "2", "3", "4", "5", "6", "7", "8"], {})


def test_gpu_config_is_the_original_8gpu_configuration():
    cfg = compose_rubric(ORIGINAL_8GPU)
    assert cfg.algorithm.adv_estimator == "gae" and cfg.critic.model.path == "/models/policy"
    assert cfg.data.train_files == "/data/train.parquet" and cfg.data.val_files == "/data/test.parquet"
    assert cfg.data.train_batch_size == 512 and cfg.actor_rollout_ref.rollout.n == 8
    assert cfg.data.max_prompt_length == 1024 and cfg.data.max_response_length == 4096
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 64
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 15360
    assert cfg.actor_rollout_ref.rollout.max_num_batched_tokens == 5120
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.7
    assert cfg.actor_rollout_ref.actor.optim.lr == 5e-7 and cfg.critic.optim.lr == 9e-6
    assert cfg.critic.ppo_max_token_len_per_gpu == 24000 and cfg.critic.forward_max_token_len_per_gpu == 36000
    assert cfg.actor_rollout_ref.actor.use_kl_loss is False and cfg.algorithm.use_kl_in_reward is False
    assert cfg.actor_rollout_ref.actor.entropy_coeff == 0
    assert cfg.trainer.n_gpus_per_node == 8 and cfg.trainer.total_epochs == 12
    assert (cfg.trainer.save_freq, cfg.trainer.test_freq) == (10, 2)
    assert cfg.trainer.default_local_dir == "/runs/r1/checkpoints"
    kwargs = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs, resolve=True)
    assert kwargs == {"tinyv": {
        "url": "http://127.0.0.1:8000/v1", "model": "rubric-model", "setup": "tinyv_only", "weight": 1.0,
        "template": "rubric", "max_concurrency": 64, "timeout_s": 120.0, "max_tokens": 0, "on_failure": "rule",
        "template_file": None, "verdict": None, "verdict_mode": "label", "constrained": False, "reasoning_chars": None,
    }, "routing": {"match": "strict", "fallback": "rule"}}
    assert cfg.reward.custom_reward_function.name == "compute_score_async"
    assert cfg.recipe.verifier.max_model_len == 15000
    # ... and the tinyv reward accepts them as they come from hydra
    from verl.utils.reward_score.options import parse_options
    from verl.utils.reward_score.tinyv import TinyVOptions

    opts = parse_options(TinyVOptions, kwargs["tinyv"])
    assert (opts.template, opts.setup, opts.timeout_s, opts.model) == ("rubric", "tinyv_only", 120.0, "rubric-model")
    assert opts.constraint is None  # GPU runs: a published checkpoint writes its own format


def test_every_verifier_setting_reaches_the_reward_from_the_command_line():
    cfg = compose_rubric(ORIGINAL_8GPU + ["--", "recipe.verifier.timeout_s=60", "recipe.verifier.max_concurrency=8",
                                          "recipe.verifier.max_tokens=512"], {"ON_FAILURE": "zero", "TEMPLATE": "tinyv"})
    tinyv = cfg.reward.custom_reward_function.reward_kwargs.tinyv
    assert (tinyv.timeout_s, tinyv.max_concurrency, tinyv.max_tokens) == (60, 8, 512)
    assert (tinyv.on_failure, tinyv.template) == ("zero", "tinyv")


def test_kl_variant_and_grpo():
    cfg = compose_rubric(["/m", "", "", "False", "/v"], {"ALGORITHM": "grpo"})
    actor = cfg.actor_rollout_ref.actor
    assert cfg.algorithm.adv_estimator == "grpo"
    assert actor.use_kl_loss is True and actor.kl_loss_coef == 0.001 and actor.kl_loss_type == "low_var_kl"
    assert cfg.algorithm.use_kl_in_reward is True and cfg.algorithm.kl_ctrl.kl_coef == 0.001


def test_cpu_config_is_a_few_grpo_steps_with_local_models():
    cfg = compose_rubric([], profile="cpu")
    assert cfg.recipe.policy == "local:tiny" and cfg.recipe.verifier.model == "local:smollm2"
    assert cfg.recipe.dataset is None  # the bundled sample
    assert cfg.algorithm.adv_estimator == "grpo" and cfg.trainer.total_training_steps == 2
    assert cfg.actor_rollout_ref.rollout.name == "hf" and cfg.trainer.device == "cpu"
    assert cfg.data.train_batch_size == 4 and cfg.data.truncation == "left"
    assert cfg.data.filter_overlong_prompts is False and cfg.actor_rollout_ref.actor.use_dynamic_bsz is False
    assert cfg.reward.custom_reward_function.reward_kwargs.tinyv.max_tokens == 256
    assert cfg.recipe.verifier.max_model_len == 2048 and cfg.trainer.total_epochs == 1


def test_cpu_verifier_is_constrained_to_reasoning_and_a_total_score_line():
    from verl.utils.reward_score.options import parse_options
    from verl.utils.reward_score.tinyv import TinyVOptions

    tinyv = OmegaConf.to_container(compose_rubric([], profile="cpu").reward.custom_reward_function.reward_kwargs.tinyv,
                                   resolve=True)
    assert (tinyv["constrained"], tinyv["reasoning_chars"]) == (True, 200)
    constraint = parse_options(TinyVOptions, tinyv).constraint
    assert constraint.admits("The answer 4 matches.\nTotal Score: 8/10")
    assert not constraint.admits("The answer 4 matches.")  # no score line
    assert not constraint.admits("x" * 201 + "\nTotal Score: 8/10")  # reasoning past its budget
    # the knob turns it off again, as on GPU
    tinyv = compose_rubric([], {"CONSTRAINED": "0"}, profile="cpu").reward.custom_reward_function.reward_kwargs.tinyv
    assert tinyv.constrained is False


def test_template_file_preset_and_constraint_are_chosen_from_the_recipe(tmp_path):
    template = tmp_path / "verifier.yaml"
    template.write_text(
        "messages:\n"
        "  - role: user\n"
        "    content: |\n"
        "      Question: {question}\n"
        "      Reference: {reference_answer}\n"
        "      Candidate: {extracted_answer}\n"
        "      Is the candidate right? Reply Yes or No.\n"
    )
    environ = {"TEMPLATE_FILE": str(template), "VERDICT": "binary", "CONSTRAINED": "true", "VERDICT_MODE": "prob"}
    cfg = compose_rubric(ORIGINAL_8GPU, environ, runtime=[])
    assert rubric.template_overrides(cfg) == ["~reward.custom_reward_function.reward_kwargs.tinyv.template"]
    cfg = compose_rubric(ORIGINAL_8GPU + ["--", *rubric.template_overrides(cfg)], environ, runtime=[])
    tinyv = cfg.reward.custom_reward_function.reward_kwargs.tinyv
    assert "template" not in tinyv and tinyv.template_file == str(template)
    assert (tinyv.verdict, tinyv.constrained, tinyv.verdict_mode) == ("binary", True, "prob")
    rubric.check_verifier_options(cfg)
    from verl.utils.reward_score.options import parse_options
    from verl.utils.reward_score.tinyv import TinyVOptions

    opts = parse_options(TinyVOptions, {**rubric.verifier_options(cfg), "url": "http://127.0.0.1:1/v1", "model": "v"})
    assert "Is the candidate right?" in opts.chat_template.render(question="q", reference_answer="r",
                                                                  extracted_answer="a")[0]["content"]
    assert opts.constraint.choice == ("True", "False")
    # no template file: the built-in template stays, nothing is dropped
    assert rubric.template_overrides(compose_rubric(ORIGINAL_8GPU, runtime=[])) == []


def test_a_bad_template_file_or_preset_stops_before_anything_starts(tmp_path):
    template = tmp_path / "bad.yaml"
    template.write_text("messages:\n  - role: user\n    content: 'Grade {answer_text} against {reference_answer}'\n")
    cfg = compose_rubric(ORIGINAL_8GPU, {"TEMPLATE_FILE": str(template)}, runtime=[])
    cfg = compose_rubric(ORIGINAL_8GPU + ["--", *rubric.template_overrides(cfg)], {"TEMPLATE_FILE": str(template)},
                         runtime=[])
    with pytest.raises(RecipeError, match="answer_text") as e:
        rubric.check_verifier_options(cfg)
    assert e.value.code == 2
    with pytest.raises(RecipeError, match="verdict"):
        rubric.check_verifier_options(compose_rubric(ORIGINAL_8GPU, {"VERDICT": "stars"}, runtime=[]))


def test_a_server_that_refuses_the_constraint_stops_the_run(monkeypatch):
    """probe_verifier turns the reward's probe failure into a start-up error (the probe itself runs
    against the real session server in tests/integration/test_verdict_server.py)."""
    from verl.utils.reward_score import tinyv
    from verl.utils.reward_score.templated import ServerFeatureError

    def refusing(opts):
        raise ServerFeatureError("tinyv: the server refuses regex")

    monkeypatch.setattr(tinyv, "probe_verifier", refusing)  # a fault no real server produces on demand
    with pytest.raises(RecipeError, match="refuses regex") as e:
        rubric.probe_verifier(compose_rubric([], profile="cpu"))
    assert e.value.code == 2


def test_the_originals_removed_keys_fail():
    # The original passed its verifier setup as reward_model.tinyv_setup; verl 0.9.1 has no such key.
    with pytest.raises(Exception, match="tinyv_setup"):
        compose_rubric(ORIGINAL_8GPU + ["--", "reward_model.tinyv_setup=addon"])


def spec(argv, environ=None):
    return rubric.verifier_spec(compose_rubric(argv, environ), Path("/runs/r1"))


def test_verifier_layouts():
    colocated = spec(ORIGINAL_8GPU)
    assert (colocated.devices, colocated.tensor_parallel_size, colocated.gpu_memory_utilization) == (None, 8, 0.2)
    assert colocated.max_model_len == 15000 and colocated.host == "127.0.0.1" and colocated.name == "verifier"
    dedicated = spec(ORIGINAL_8GPU, {"VERIFIER_DEVICES": "6, 7"})
    assert (dedicated.devices, dedicated.tensor_parallel_size, dedicated.gpu_memory_utilization) == ("6,7", 1, 0.9)
    chosen = spec(ORIGINAL_8GPU, {"VERIFIER_DEVICES": "6,7", "VERIFIER_TP": "2", "VERIFIER_GPU_MEM": "0.5"})
    assert (chosen.tensor_parallel_size, chosen.gpu_memory_utilization) == (2, 0.5)
    external = rubric.verifier_spec(
        compose_rubric(ORIGINAL_8GPU, {"VERLKIT_VERIFIER_URL": "http://10.0.0.2:9000/v1"}, runtime=[]), Path("/r"))
    assert external.external_url == "http://10.0.0.2:9000/v1" and external.served_model_name is None
    assert rubric.verifier_spec(compose_rubric([], profile="cpu", runtime=[]), Path("/r")).max_model_len == 2048


def test_bad_verifier_options_are_refused_before_anything_starts():
    rubric.check_verifier_options(compose_rubric(ORIGINAL_8GPU, runtime=[]))
    with pytest.raises(RecipeError, match="option 'setup'='tinyv_plus'") as e:
        rubric.check_verifier_options(compose_rubric(ORIGINAL_8GPU + ["tinyv_plus"], runtime=[]))
    assert e.value.code == 2


def compose_rrm(argv, profile="gpu"):
    from recipes.compose import script_settings

    chosen, extra = script_settings(train_rrm.KNOBS, train_rrm.POSITIONAL, argv, {}, train_rrm.USAGE)
    return compose_recipe("rubric/rrm_cpu" if profile == "cpu" else "rubric/rrm", chosen + extra + ["recipe.run_dir=/runs/rrm"])


def test_rrm_training_configs():
    cfg = compose_rrm(["/models/rrm-sft", "12", "/data/rrm"])
    assert cfg.data.train_batch_size == 128 and cfg.data.max_prompt_length == 10000
    assert cfg.data.max_response_length == 2048 and cfg.actor_rollout_ref.actor.ppo_mini_batch_size == 128
    assert cfg.actor_rollout_ref.actor.ppo_max_token_len_per_gpu == 36144
    assert cfg.actor_rollout_ref.rollout.gpu_memory_utilization == 0.6
    assert (cfg.trainer.save_freq, cfg.trainer.test_freq) == (40, 5)
    assert cfg.reward.custom_reward_function.name == "compute_score_async"
    assert "reward_kwargs" not in cfg.reward.custom_reward_function  # `grade` takes no options
    cfg = compose_rrm([], profile="cpu")
    assert cfg.data.max_prompt_length == 512 and cfg.actor_rollout_ref.rollout.name == "hf"
    assert cfg.recipe.policy == "local:tiny" and cfg.algorithm.adv_estimator == "grpo"


def test_the_drivers_settings_in_order_and_the_run_they_open(tmp_path, monkeypatch):
    """RecipeSettings: the profile, the config, knobs < arguments < the run's defaults < the user's
    overrides < what only the run knows."""
    import contextlib

    from recipes.settings import RecipeSettings

    from verlkit.cpu_profile.overrides import env as cpu_profile_env

    # RecipeSettings exports the CPU profile's variables (VERL_PLATFORM=cpu, ...) for the run's children;
    # registered with monkeypatch so they are undone after this test instead of leaking into later ones
    for name in cpu_profile_env():
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in {"VK_PROFILE": "gpu", "RUN_DIR": str(tmp_path / "r1"), "STEPS": "9"}.items():
        monkeypatch.setenv(name, value)
    s = RecipeSettings("rubric", rubric.CONFIG_DIR, rubric.KNOBS, rubric.POSITIONAL,
                       ["/m", "3", "", "True", "/v", "--", "trainer.total_epochs=4"], rubric.USAGE)
    assert (s.profile, s.name) == ("gpu", "rubric")
    assert s.cfg.trainer.total_training_steps == 9 and s.cfg.trainer.total_epochs == 4  # `--` wins
    with contextlib.ExitStack() as stack:
        run = s.open_run(stack)
    assert run.run_dir == tmp_path / "r1" and (run.run_dir / "processes.json").is_file()
    assert s.cfg.trainer.experiment_name == "r1" and s.cfg.trainer.default_local_dir == f"{tmp_path}/r1/checkpoints"
    assert s.overrides()[-1] == f"recipe.run_dir='{tmp_path}/r1'"
    monkeypatch.setenv("VK_PROFILE", "cpu")
    s = RecipeSettings("rubric", rubric.CONFIG_DIR, rubric.KNOBS, rubric.POSITIONAL, [], rubric.USAGE)
    assert s.name == "rubric_cpu" and s.cfg.trainer.device == "cpu"
    with pytest.raises(RecipeError, match="too many arguments") as e:
        RecipeSettings("rubric", rubric.CONFIG_DIR, rubric.KNOBS, rubric.POSITIONAL, ["1"] * 8, rubric.USAGE)
    assert e.value.code == 2


# ---- rule-graded math validation sets (issue 12, point 4) -------------------------------------------


def test_rule_graded_math_validation_by_default(tmp_path):
    """Sources no reward routes go to the rule-based math grader (as the original); the dataset's
    test_math.parquet joins the validation files when it exists; the CPU default validates on it once,
    after the last step, without the rubric rows (no verifier calls)."""
    cfg = compose_rubric(ORIGINAL_8GPU)
    assert cfg.reward.custom_reward_function.reward_kwargs.routing.fallback == "rule"
    assert (cfg.recipe.rubric_val, cfg.recipe.math_val_files) == (True, "auto")
    dataset = tmp_path / "polaris"
    dataset.mkdir()
    assert rubric.validation_files(cfg, dataset) == ([dataset / "test.parquet"], [])
    (dataset / "test_math.parquet").write_bytes(b"")
    assert rubric.validation_files(cfg, dataset) == ([dataset / "test.parquet"], [dataset / "test_math.parquet"])
    named = compose_rubric(ORIGINAL_8GPU + ["--", "recipe.math_val_files=[/sets/MATH.parquet,/sets/aime.parquet]"])
    assert rubric.validation_files(named, dataset)[1] == [Path("/sets/MATH.parquet"), Path("/sets/aime.parquet")]
    cpu = compose_rubric([], profile="cpu")
    assert cpu.recipe.rubric_val is False and cpu.trainer.test_freq == 2 == cpu.trainer.total_training_steps
    assert rubric.validation_files(cpu, dataset) == ([], [dataset / "test_math.parquet"])
    with pytest.raises(RecipeError, match="no validation set") as e:
        rubric.validation_files(compose_rubric(["--", "recipe.math_val_files=[]"], profile="cpu"), dataset)
    assert e.value.code == 2


def test_the_bundled_sample_math_rows_validate_under_the_runs_routing_only(tmp_path, capsys):
    from data_prep.rubric import main as prep

    from recipes.driver import validate_data

    assert prep(["tinyv", "--out", str(tmp_path)]) == 0
    files = [tmp_path / "train.parquet", tmp_path / "test.parquet", tmp_path / "test_math.parquet"]
    assert rubric.data_sources(files[2:]) == ["polaris_math"]
    cfg = compose_rubric(ORIGINAL_8GPU)
    validate_data(*files, reward_options=rubric.reward_options(cfg))  # fallback=rule: every row is scored
    upstream = compose_rubric(ORIGINAL_8GPU + ["--", "reward.custom_reward_function.reward_kwargs.routing.fallback=upstream"])
    capsys.readouterr()
    with pytest.raises(RecipeError, match="does not validate"):
        validate_data(*files, reward_options=rubric.reward_options(upstream))
    out = capsys.readouterr()
    assert "test_math.parquet" in out.out + out.err and "polaris_math" in out.out + out.err
    # ... and rubric rows without criteria stop the run under the recipe's template (issue 12, point 9)
    import pandas as pd

    train = pd.read_parquet(files[0])
    train["extra_info"] = [{**info, "criteria": ""} for info in train["extra_info"]]
    train.to_parquet(files[0])
    with pytest.raises(RecipeError, match="does not validate"):
        validate_data(*files, reward_options=rubric.reward_options(cfg))
    out = capsys.readouterr()
    assert "extra_info.criteria" in out.out + out.err and "train.parquet" in out.out + out.err


def test_pass_at_1_of_the_math_sources_from_the_log(tmp_path, capsys):
    log = tmp_path / "train.log"
    log.write_text("step:1 - critic/score/mean:0.5\n"
                   "step:2 - critic/score/mean:0.5 - val-core/polaris_math/acc/mean@1:np.float64(0.25)"
                   " - val-core/polaris_tinyv/reward/mean@1:0.75 - val-aux/polaris_math/score/mean@1:0.25\n")
    rubric.report_pass_at_1(log, ["polaris_math", "aime24"], tmp_path / "p.json")
    out = capsys.readouterr()
    assert "pass@1 on polaris_math: 0.25 (validation at step 2)" in out.out
    assert "no validation of aime24" in out.err
    import json

    assert json.loads((tmp_path / "p.json").read_text()) == {"polaris_math": {"pass@1": 0.25, "step": 2}}


# ---- model arguments as Hub ids (issue 12, point 2) --------------------------------------------------

HUB_ARGV = ["Qwen/Qwen2.5-7B", "12", "data/polaris", "True", "my-org/my-verifier"]


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline; a GPU-profile run directory; any server or trainer start fails
    the test (the run must stop before them)."""
    from recipes.driver import Run

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VK_PROFILE", "gpu")
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))

    def started(*args, **kwargs):
        raise AssertionError("a server or trainer was started")

    monkeypatch.setattr(Run, "serve", started)
    monkeypatch.setattr(Run, "serve_together", started)
    monkeypatch.setattr(Run, "train", started)
    return tmp_path / "hf" / "hub"


def test_hub_ids_compose_and_the_run_stops_only_at_resolution_naming_the_model(offline_hub):
    import contextlib

    from verlkit.serving import build_command

    # the config and the verifier's server spec compose from Hub ids without network
    cfg = compose_rubric(HUB_ARGV, runtime=["recipe.run_dir=/runs/r1"])
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-7B" == cfg.critic.model.path
    spec = rubric.verifier_spec(cfg, Path("/runs/r1"))
    assert spec.model == "my-org/my-verifier"
    cmd, _ = build_command(spec, 8000, on_gpu=True)
    assert cmd[cmd.index("--model") + 1] == "my-org/my-verifier" and cmd[cmd.index("--tensor-parallel-size") + 1] == "8"
    # the run: the policy is resolved first, and named
    with contextlib.ExitStack() as stack, pytest.raises(RecipeError) as e:
        rubric.body(stack, HUB_ARGV)
    assert e.value.code == 2
    assert "recipe.policy: model 'Qwen/Qwen2.5-7B' (policy) could not be resolved" in str(e.value)
    assert "HF_HUB_OFFLINE is set" in str(e.value)
    # with the policy in the cache, the verifier is the one named
    from support.hub_cache import fake_hub_cache

    fake_hub_cache(offline_hub, "Qwen/Qwen2.5-7B")
    with contextlib.ExitStack() as stack, pytest.raises(RecipeError) as e:
        rubric.body(stack, HUB_ARGV)
    assert "recipe.verifier.model: model 'my-org/my-verifier' (verifier) could not be resolved" in str(e.value)


def test_resolved_hub_ids_become_the_snapshots_the_trainer_and_server_load(offline_hub):
    import contextlib

    from support.hub_cache import fake_hub_cache

    from recipes.settings import RecipeSettings

    policy = fake_hub_cache(offline_hub, "Qwen/Qwen2.5-7B")
    verifier = fake_hub_cache(offline_hub, "my-org/my-verifier")
    s = RecipeSettings("rubric", rubric.CONFIG_DIR, rubric.KNOBS, rubric.POSITIONAL, HUB_ARGV, rubric.USAGE)
    with contextlib.ExitStack() as stack:
        run = s.open_run(stack)
    s.resolve_models(rubric.model_arguments(s.cfg))
    assert s.cfg.actor_rollout_ref.model.path == str(policy) == s.cfg.critic.model.path
    assert rubric.verifier_spec(s.cfg, run.run_dir).model == str(verifier)
    # an external verifier's model is a name at its server: not resolved
    external = compose_rubric(HUB_ARGV, {"VERLKIT_VERIFIER_URL": "http://10.0.0.2:9000/v1"}, runtime=[])
    assert rubric.model_arguments(external) == {"recipe.policy": "policy"}


def test_math_rows_under_the_recipes_options_give_verls_pass_at_1_metric():
    """The recipe's reward options score a rule-graded math row with the rule grader, and verl 0.9.1's own
    validation metric code turns the results (our fixed schema, NaN where a key does not apply) into a
    per-source ``acc`` mean@1, which its trainer logs as ``val-core/<source>/acc/mean@1`` (``acc`` is the
    core variable whenever a source has it): the key the summary's pass@1 reads. (The trainer module
    itself is not imported here: it needs a registered accelerator platform.)"""
    from verl.trainer.ppo.metric_utils import process_validation_metrics
    from verl.utils.reward_score import registry

    options = rubric.reward_options(compose_rubric(ORIGINAL_8GPU))
    rows = [("polaris_math", "so \\boxed{12}", "12"), ("polaris_math", "so \\boxed{13}", "12"),
            ("polaris_math", "no answer", "7"), ("aime24", "\\boxed{\\frac{1}{2}}", "0.5")]
    results = [registry.compute_score(source, text, truth, {"question": "q"}, **options) for source, text, truth in rows]
    assert [r["score"] for r in results] == [1.0, 0.0, 0.0, 1.0] and all(r["rule_failed"] == 0.0 for r in results)
    infos = {"reward": [r["score"] for r in results]}
    for key in results[0]:
        infos[key] = [r[key] for r in results]
    metrics = process_validation_metrics([s for s, _, _ in rows], [str(i) for i in range(4)], infos)
    assert metrics["polaris_math"]["acc"]["mean@1"] == pytest.approx(1 / 3)
    assert metrics["aime24"]["acc"]["mean@1"] == 1.0
