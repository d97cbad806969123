"""The one backend option of each served model (recipes/managed.py and the ``verifier_backend`` /
``downstream_backend`` groups): ``launcher`` and ``external`` leave verl's reward model off; ``managed``
composes ``reward.reward_model.*`` from the recipe's settings, and verl's own config class accepts it.
Composed through verl's hydra with the overrides the drivers build; nothing is launched."""


from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support.recipe_configs import compose_recipe

from recipes.compose import SettingError, script_settings
from recipes.confidence import run as confidence
from recipes.driver import RecipeError
from recipes.managed import check_backend, cpu_ray_overrides, pool_gpus
from recipes.rubric import run as rubric

RUBRIC_8GPU = ["/models/policy", "12", "/data", "True", "/models/rubric-rm"]


def compose(module, config, argv, environ, runtime=("recipe.run_dir=/runs/r1",)):
    chosen, extra = script_settings(module.KNOBS, module.POSITIONAL, argv, environ, module.USAGE)
    return compose_recipe(config, chosen + extra + list(runtime))


def rubric_cfg(environ, profile="gpu", argv=RUBRIC_8GPU, extra=()):
    name = "rubric/rubric_cpu" if profile == "cpu" else "rubric/rubric"
    return compose(rubric, name, list(argv) + (["--", *extra] if extra else []), environ)


def confidence_cfg(environ, profile="gpu", argv=("/models/policy", "cgp", "/models/downstream"), extra=()):
    name = "confidence/confidence_cpu" if profile == "cpu" else "confidence/confidence"
    return compose(confidence, name, list(argv) + (["--", *extra] if extra else []), environ,
                   runtime=("recipe.run_dir=/runs/r1", "recipe.train_gpu_count=7"))  # fmt: skip


def verl_reward_model_config(cfg):
    """verl's own typed config of the reward model (what its trainer builds from the same keys)."""
    from verl.utils.config import omega_conf_to_dataclass

    return omega_conf_to_dataclass(cfg.reward.reward_model)


def resolved(node):
    return OmegaConf.to_container(node, resolve=True)


def test_the_knobs_choose_the_group():
    chosen, _ = script_settings(rubric.KNOBS, rubric.POSITIONAL, [], {"VERIFIER_BACKEND": "managed"}, "")
    assert chosen == ["verifier_backend=managed"]
    chosen, _ = script_settings(confidence.KNOBS, confidence.POSITIONAL, [], {"DOWNSTREAM_BACKEND": "managed"}, "")
    assert chosen == ["downstream_backend=managed"]
    with pytest.raises(SettingError, match="VERIFIER_BACKEND: must be one of launcher, managed, external, got 'ray'"):
        script_settings(rubric.KNOBS, rubric.POSITIONAL, [], {"VERIFIER_BACKEND": "ray"}, "")


def test_rubric_launcher_is_the_default_and_leaves_verls_reward_model_off():
    for profile in ("gpu", "cpu"):
        cfg = rubric_cfg({}, profile, argv=RUBRIC_8GPU if profile == "gpu" else [])
        assert cfg.recipe.verifier.backend == "launcher"
        assert cfg.reward.reward_model.enable is False
        assert pool_gpus(cfg) == 0 and cpu_ray_overrides(cfg) == []


def test_rubric_managed_on_gpu_composes_verls_reward_model_from_the_recipe():
    cfg = rubric_cfg({"VERIFIER_BACKEND": "managed", "VERIFIER_MAX_MODEL_LEN": "8000"})
    assert check_backend(cfg.recipe.verifier, "the verifier", "VERLKIT_VERIFIER_URL") == "managed"
    rm = resolved(cfg.reward.reward_model)
    # the original's layout: colocated on the 8 training GPUs, TP 8, 20 % of each GPU's memory
    assert rm["enable"] is True and rm["model_path"] == "/models/rubric-rm"
    assert rm["enable_resource_pool"] is False and rm["nnodes"] == 1 and rm["n_gpus_per_node"] == 8
    assert rm["rollout"]["name"] == "vllm" and rm["rollout"]["tensor_model_parallel_size"] == 8
    assert rm["rollout"]["gpu_memory_utilization"] == 0.2 and rm["rollout"]["max_model_len"] == 8000
    # the reward follows verl's router: no URL, and the replicas' served name (None -> the model path)
    tinyv = resolved(cfg.reward.custom_reward_function.reward_kwargs)["tinyv"]
    assert tinyv["url"] is None and tinyv["model"] is None
    assert pool_gpus(cfg) == 0  # colocated: no pool of its own
    typed = verl_reward_model_config(cfg)
    assert typed.enable and typed.rollout.name == "vllm" and typed.rollout.tensor_model_parallel_size == 8


def test_rubric_managed_on_cpu_is_one_vllm_cpu_replica_in_a_pool_of_its_own():
    cfg = rubric_cfg({"VERIFIER_BACKEND": "managed"}, "cpu", argv=[])
    rm = resolved(cfg.reward.reward_model)
    assert rm["enable"] is True and rm["model_path"] == "local:smollm2"  # the driver resolves local: names
    assert rm["rollout"]["name"] == "vllm_cpu" and rm["rollout"]["tensor_model_parallel_size"] == 1
    assert rm["enable_resource_pool"] is True and rm["nnodes"] == 1 and rm["n_gpus_per_node"] == 1
    assert rm["rollout"]["max_model_len"] == 2048 and rm["rollout"]["free_cache_engine"] is False
    # Ray's logical GPUs: the trainer's one and the pool's one
    assert cpu_ray_overrides(cfg) == ["ray_kwargs.ray_init.num_gpus=2"]
    assert verl_reward_model_config(cfg).rollout.name == "vllm_cpu"


@pytest.mark.parametrize("nodes, tp, replicas", [(1, 2, 4), (2, 2, 8), (4, 2, 16)])
def test_multi_node_standalone_verifier_pool(nodes, tp, replicas):
    # docs/gpu.md's layout: the trainer on 3 nodes, the verifier's replicas on a standalone pool of
    # `nodes` x 8 GPUs, TP `tp` per replica (verl starts pool GPUs / TP replicas behind its router)
    extra = ["recipe.verifier.managed.standalone=true", f"recipe.verifier.managed.nnodes={nodes}",
             "recipe.verifier.managed.n_gpus_per_node=8", f"recipe.verifier.managed.tensor_parallel_size={tp}",
             "recipe.verifier.managed.gpu_memory_utilization=0.85"]  # fmt: skip
    cfg = rubric_cfg({"VERIFIER_BACKEND": "managed", "NNODES": "3"}, extra=extra)
    typed = verl_reward_model_config(cfg)
    assert typed.enable_resource_pool and typed.nnodes == nodes and typed.n_gpus_per_node == 8
    assert typed.rollout.tensor_model_parallel_size == tp and typed.rollout.gpu_memory_utilization == 0.85
    assert pool_gpus(cfg) == nodes * 8 and pool_gpus(cfg) // tp == replicas
    assert cfg.trainer.nnodes == 3 and cfg.trainer.n_gpus_per_node == 8  # the trainer's own nodes
    # on the CPU profile the same composition would give Ray the trainer's and the pool's logical GPUs
    assert cpu_ray_overrides(cfg) == [f"ray_kwargs.ray_init.num_gpus={3 * 8 + nodes * 8}"]


def test_backends_and_urls_that_contradict_each_other_are_refused():
    external_without_url = rubric_cfg({"VERIFIER_BACKEND": "external"})
    with pytest.raises(RecipeError, match="external needs the running server's URL .VERLKIT_VERIFIER_URL") as e:
        check_backend(external_without_url.recipe.verifier, "the verifier", "VERLKIT_VERIFIER_URL")
    assert e.value.code == 2
    external = rubric_cfg({"VERIFIER_BACKEND": "external", "VERLKIT_VERIFIER_URL": "http://10.0.0.2:9000/v1"})
    assert check_backend(external.recipe.verifier, "the verifier", "VERLKIT_VERIFIER_URL") == "external"
    assert external.reward.reward_model.enable is False
    managed_with_url = rubric_cfg({"VERIFIER_BACKEND": "managed", "VERLKIT_VERIFIER_URL": "http://10.0.0.2:9000/v1"})
    with pytest.raises(RecipeError, match="managed: verl serves it behind its router"):
        check_backend(managed_with_url.recipe.verifier, "the verifier", "VERLKIT_VERIFIER_URL")
    with pytest.raises(RecipeError, match="must be one of launcher, managed, external"):
        check_backend(OmegaConf.create({"backend": "ray", "url": None}), "the verifier", "VERLKIT_VERIFIER_URL")


def test_confidence_launcher_is_the_default():
    cfg = confidence_cfg({})
    assert cfg.recipe.downstream.backend == "launcher" and cfg.reward.reward_model.enable is False
    assert resolved(cfg.reward.custom_reward_function.reward_kwargs)["cgp"]["model"] == "downstream"


def test_confidence_managed_on_gpu_composes_the_downstream_pool():
    cfg = confidence_cfg({"DOWNSTREAM_BACKEND": "managed", "DOWNSTREAM_TP": "2", "DOWNSTREAM_GPU_MEM": "0.8"},
                         extra=["recipe.downstream.managed.n_gpus_per_node=2"])  # fmt: skip
    rm = resolved(cfg.reward.reward_model)
    assert rm["enable"] is True and rm["model_path"] == "/models/downstream"
    assert rm["enable_resource_pool"] is True and rm["nnodes"] == 1 and rm["n_gpus_per_node"] == 2
    assert rm["rollout"]["name"] == "vllm" and rm["rollout"]["tensor_model_parallel_size"] == 2
    assert rm["rollout"]["gpu_memory_utilization"] == 0.8 and rm["rollout"]["max_model_len"] == 4096
    cgp = resolved(cfg.reward.custom_reward_function.reward_kwargs)["cgp"]
    assert cgp["url"] is None and cgp["model"] is None  # verl's router, the replicas' served name
    assert pool_gpus(cfg) == 2 and verl_reward_model_config(cfg).enable_resource_pool
    # the trainer sees every GPU and trains on the ones the pool leaves; the evaluation's server: the last
    assert confidence.place_managed([str(i) for i in range(8)], 2) == ([str(i) for i in range(8)], ["7"], 6)
    with pytest.raises(RecipeError, match="none is left for training") as e:
        confidence.place_managed(["0"], 1)
    assert e.value.code == 2


def test_confidence_managed_on_cpu():
    cfg = confidence_cfg({"DOWNSTREAM_BACKEND": "managed"}, "cpu", argv=())
    rm = resolved(cfg.reward.reward_model)
    assert rm["model_path"] == "local:smollm2" and rm["rollout"]["name"] == "vllm_cpu"
    assert rm["rollout"]["max_model_len"] == 2048 and rm["n_gpus_per_node"] == 1
    assert cpu_ray_overrides(cfg) == ["ray_kwargs.ray_init.num_gpus=2"]


def test_confidence_managed_needs_the_cgp_design(monkeypatch, tmp_path):
    monkeypatch.setenv("VK_PROFILE", "cpu")
    monkeypatch.setenv("DOWNSTREAM_BACKEND", "managed")
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    assert confidence.main(["/models/policy", "rlcr"]) == 2
    assert not (tmp_path / "run").exists()  # refused before the run opened




@pytest.mark.parametrize("environ", [{"VERIFIER_DEVICES": "6,7"}, {"TRAIN_DEVICES": "0,1"}])
def test_the_launchers_device_knobs_are_refused_with_the_managed_backend(monkeypatch, tmp_path, environ, capsys):
    for name, value in {"VK_PROFILE": "cpu", "VERIFIER_BACKEND": "managed", "RUN_DIR": str(tmp_path / "run"),
                        **environ}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    assert rubric.main([]) == 2
    assert f"{next(iter(environ))} place the launcher's server" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run opened


# ---- the pipeline's scalar reward model during RLOO (RM_BACKEND) -------------------------------------


def pipeline_managed_runtime(profile, environ, rm_devices=()):
    """The RLOO overrides the pipeline's driver builds for RM_BACKEND=managed (its own method, on the
    pipeline config composed as the driver composes it)."""
    from recipes.pipeline import run as pipeline

    chosen, _ = script_settings(pipeline.KNOBS, pipeline.POSITIONAL, [], environ, "")
    name = "pipeline/pipeline_cpu" if profile == "cpu" else "pipeline/pipeline"
    driver = pipeline.Pipeline.__new__(pipeline.Pipeline)  # its settings only: no run directory, nothing started
    driver.cfg = compose_recipe(name, [*chosen, "recipe.base=/models/base", "recipe.reference=/models/ref"])
    driver.profile, driver.rm_devices = profile, list(rm_devices)
    return driver.cfg, driver.managed_reward_model(Path("/runs/p/rm/hf"), 1 if profile == "cpu" else 7)


@pytest.mark.parametrize("profile", ["gpu", "cpu"])
def test_pipeline_rloo_with_the_reward_model_managed_by_verl(profile):
    pipeline_cfg, (runtime, visible) = pipeline_managed_runtime(profile, {"RM_BACKEND": "managed"}, ["7"])
    assert pipeline_cfg.recipe.reward_model.backend == "managed"
    stage = "pipeline/rloo_cpu" if profile == "cpu" else "pipeline/rloo"
    cfg = compose_recipe(stage, ["recipe.init=/m", "recipe.data_dir=/d", "recipe.stage_dir=/runs/p/rloo", *runtime])
    rm = resolved(cfg.reward.reward_model)
    assert rm["enable"] is True and rm["model_path"] == "/runs/p/rm/hf"
    assert rm["enable_resource_pool"] is True and rm["nnodes"] == 1 and rm["n_gpus_per_node"] == 1
    assert rm["rollout"]["name"] == ("vllm_cpu" if profile == "cpu" else "vllm")
    assert rm["rollout"]["tensor_model_parallel_size"] == 1
    assert rm["rollout"]["max_model_len"] == (2048 if profile == "cpu" else 4096)
    assert rm["rollout"]["gpu_memory_utilization"] == 0.5
    # the scalar_rm reward follows verl's router; its tokenizer is the reward model's directory
    assert resolved(cfg.reward.custom_reward_function.reward_kwargs)["scalar_rm"] == {
        "url": None, "model": None, "tokenizer": "/runs/p/rm/hf"}
    assert verl_reward_model_config(cfg).enable
    if profile == "cpu":  # Ray's logical GPUs: the trainer's one and the pool's one
        assert cfg.ray_kwargs.ray_init.num_gpus == 2 and visible == []
    else:  # the trainer also sees the pool's GPU (the launcher's RM_DEVICES)
        assert visible == ["7"] and "num_gpus" not in " ".join(runtime)


def test_pipeline_rloo_keeps_the_launcher_by_default():
    cfg = compose_recipe("pipeline/rloo", ["recipe.init=/m", "recipe.data_dir=/d", "recipe.stage_dir=/s",
                                           "recipe.reward_model.url='http://127.0.0.1:9/v1'", "recipe.reward_model.dir=/rm"])  # fmt: skip
    assert cfg.recipe.reward_model.backend == "launcher" and cfg.reward.reward_model.enable is False
