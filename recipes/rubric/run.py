"""``bash run_rubric.sh``: RL with a rubric reward model (RRM) or a TinyV-style verifier served by vLLM.

Settings: ``recipes/rubric/config/rubric.yaml`` (the original's 8-GPU configuration) and
``rubric_cpu.yaml`` (the CPU default). The run: data (the bundled sample when no dataset is given) and
its validation, the verifier server (or an external one; or, with ``VERIFIER_BACKEND=managed``,
verl's own replicas behind its router: ``recipes/managed.py``), ``verl.trainer.main_ppo`` on the recipe
config, the end-of-run summary of reward and verifier metrics.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from recipes.compose import Setting, boolean, boolean_text, integer, items, number, quoted
from recipes.driver import RecipeError, Run, call_tool, log, overlap_error, parse_devices, validate_data
from recipes.driver import main as run_recipe
from recipes.managed import backend_choice, check_backend, cpu_ray_overrides, refuse_launcher_placement, replica_logs_in
from recipes.settings import RecipeSettings

CONFIG_DIR = Path(__file__).resolve().parent / "config"
USAGE = ("usage: bash run_rubric.sh <model> <epochs> [dataset] [no_entropy_loss_and_kl] [verifier_model] [setup] "
         "[weight] [-- hydra overrides]")  # fmt: skip


def _regularization(raw: str) -> str:
    """no_entropy_loss_and_kl True -> the ``none`` option of the regularization group, False -> ``kl``."""
    return "none" if boolean(raw) else "kl"


POSITIONAL = (
    ("model", Setting("recipe.policy")),
    ("epochs", Setting("trainer.total_epochs", integer)),
    ("dataset", Setting("recipe.dataset")),
    ("no_entropy_loss_and_kl", Setting("regularization", _regularization)),
    ("verifier_model", Setting("recipe.verifier.model")),
    ("setup", Setting("recipe.verifier.setup")),
    ("weight", Setting("recipe.verifier.weight", number)),
)

# The documented environment knobs (header of run_rubric.sh, docs/gpu.md), each an alias of one setting.
KNOBS = {
    "RUN_DIR": Setting("recipe.run_dir"),
    "STEPS": Setting("trainer.total_training_steps", integer),
    "LOGGER": Setting("trainer.logger", items),
    "ALGORITHM": Setting("algorithm.adv_estimator"),
    "TEMPLATE": Setting("recipe.verifier.template"),
    "TEMPLATE_FILE": Setting("recipe.verifier.template_file"),
    "VERDICT": Setting("recipe.verifier.verdict"),
    "VERDICT_MODE": Setting("recipe.verifier.verdict_mode"),
    "CONSTRAINED": Setting("recipe.verifier.constrained", boolean_text),
    "N_GPUS_PER_NODE": Setting("trainer.n_gpus_per_node", integer),
    "NNODES": Setting("trainer.nnodes", integer),
    "TRAIN_DEVICES": Setting("recipe.train_devices"),
    "VERIFIER_TP": Setting("recipe.verifier.tensor_parallel_size", integer),
    "VERIFIER_GPU_MEM": Setting("recipe.verifier.gpu_memory_utilization", number),
    "VERIFIER_DEVICES": Setting("recipe.verifier.devices"),
    "VERIFIER_MAX_MODEL_LEN": Setting("recipe.verifier.max_model_len", integer),
    "VERIFIER_HOST": Setting("recipe.verifier.host"),
    "VERIFIER_NAME": Setting("recipe.verifier.served_name"),
    "VERLKIT_VERIFIER_URL": Setting("recipe.verifier.url"),
    "ON_FAILURE": Setting("recipe.verifier.on_failure"),
    # setup=hybrid: the rubric model (docs/verifier-rewards.md)
    "RUBRIC_MODEL": Setting("recipe.rubric_model.model"),
    "RUBRIC_URL": Setting("recipe.rubric_model.url"),
    "RUBRIC_NAME": Setting("recipe.rubric_model.served_name"),
    "RUBRIC_DEVICES": Setting("recipe.rubric_model.devices"),
    "RUBRIC_TP": Setting("recipe.rubric_model.tensor_parallel_size", integer),
    "RUBRIC_GPU_MEM": Setting("recipe.rubric_model.gpu_memory_utilization", number),
    "RUBRIC_WEIGHT": Setting("recipe.rubric_model.weight", number),
    "RUBRIC_MODE": Setting("recipe.rubric_model.mode"),
    "RUBRIC_SHARE": Setting("recipe.rubric_model.share", number),
    "VERIFIER_BACKEND": Setting("verifier_backend", backend_choice),
}
HYBRID = "hybrid"
_STAND_IN_URL = "http://127.0.0.1:1/v1"  # the served URLs are known only once the servers run


def choose_verification(s: RecipeSettings) -> bool:
    """setup=hybrid (6th argument or recipe.verifier.setup) selects the two-model reward options
    (verification/hybrid.yaml) unless they are already chosen; True for a hybrid run."""
    if s.cfg.recipe.verifier.setup != HYBRID:
        return False
    if "rubric" not in s.cfg.reward.custom_reward_function.reward_kwargs.tinyv:
        s.add("verification=hybrid")
    return True


def _server_spec(section, name: str, run_dir: Path):
    """The launcher's spec of a served model: colocated on the training GPUs (the layout's tensor
    parallel size and memory fraction) unless it has devices of its own."""
    from verlkit.serving import ServerSpec

    devices = ",".join(parse_devices(section.devices)) or None
    layout = section.dedicated if devices else section.colocated
    return ServerSpec(
        model=section.model, name=name, served_model_name=section.served_name, host=section.host,
        external_url=section.url, max_model_len=section.max_model_len, run_dir=run_dir,
        ready_timeout_s=section.ready_timeout_s, devices=devices,
        tensor_parallel_size=section.tensor_parallel_size or layout.tensor_parallel_size,
        gpu_memory_utilization=section.gpu_memory_utilization or layout.gpu_memory_utilization,
    )  # fmt: skip


def verifier_spec(cfg, run_dir: Path):
    """The verifier (the only served model, or the rescue side of hybrid)."""
    return _server_spec(cfg.recipe.verifier, "verifier", run_dir)


def rubric_model_spec(cfg, run_dir: Path):
    """setup=hybrid: the rubric model of the flaw check, a second served model."""
    return _server_spec(cfg.recipe.rubric_model, "rubric", run_dir)


TINYV_OPTIONS = "reward.custom_reward_function.reward_kwargs.tinyv"


def template_overrides(cfg, hybrid: bool = False) -> list[str]:
    """A template file replaces the built-in template: the reward takes one or the other, so the
    built-in name is dropped from its options (for hybrid on each side that has a file)."""
    if not hybrid:
        return [f"~{TINYV_OPTIONS}.template"] if cfg.recipe.verifier.template_file else []
    sides = (("verifier", cfg.recipe.verifier), ("rubric", cfg.recipe.rubric_model))
    return [f"~{TINYV_OPTIONS}.{name}.template" for name, section in sides if section.template_file]


def verifier_options(cfg) -> dict:
    """The tinyv reward's options as the run passes them (URL and served name may still be unset)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.select(cfg, TINYV_OPTIONS), resolve=True)


def reward_options(cfg) -> dict:
    """The run's reward options as the registry gets them (the served URLs and names are filled in later;
    stand-ins take their place here: for hybrid on each side)."""
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs, resolve=True)
    tinyv = options["tinyv"]
    sides = ((tinyv["verifier"], "verifier"), (tinyv["rubric"], "rubric")) if tinyv.get("setup") == HYBRID else ((tinyv, "verifier"),)
    for part, name in sides:
        part["url"] = part.get("url") or _STAND_IN_URL
        part["model"] = part.get("model") or name
    return options


def check_verifier_options(cfg) -> None:
    """The verifier reward's (template, preset, constraint) and the routing's options, checked by their
    own parsers before anything starts. For hybrid also that the rubric model is named and that the two
    models' own GPUs differ."""
    from verl.utils.reward_score.hybrid import HybridOptions
    from verl.utils.reward_score.options import RewardOptionsError, parse_options
    from verl.utils.reward_score.routing import NAMESPACE, RoutingOptions
    from verl.utils.reward_score.tinyv import TinyVOptions

    options = reward_options(cfg)
    hybrid = options["tinyv"].get("setup") == HYBRID
    try:
        parse_options(HybridOptions if hybrid else TinyVOptions, options["tinyv"])
        parse_options(RoutingOptions, options.get(NAMESPACE) or {})
    except RewardOptionsError as e:
        raise RecipeError(f"recipe.verifier: {e}", code=2) from None
    if not hybrid:
        return
    rubric = cfg.recipe.rubric_model
    if not (rubric.model or rubric.url):
        raise RecipeError("setup=hybrid needs a rubric model: RUBRIC_MODEL (a model to serve) or RUBRIC_URL "
                          "(recipe.rubric_model.model / .url)", code=2)  # fmt: skip
    problem = overlap_error("VERIFIER_DEVICES", parse_devices(cfg.recipe.verifier.devices), "RUBRIC_DEVICES",
                            parse_devices(rubric.devices))  # fmt: skip
    if problem:
        raise RecipeError(problem, code=2)


def probe_verifier(cfg) -> None:
    """Once the verifier is up: with a constraint (or verdict_mode=prob), real requests check that the
    server enforces it, so a refused constraint stops the run here, not as silently unconstrained
    rewards."""
    from verl.utils.reward_score.options import RewardOptionsError
    from verl.utils.reward_score.tinyv import check_options
    from verlkit.clients.llm import close_session

    try:
        check_options(verifier_options(cfg), probe=True)
    except RewardOptionsError as e:
        raise RecipeError(f"recipe.verifier: {e}", code=2) from None
    finally:
        close_session()


def validation_files(cfg, dataset: Path) -> tuple[list[Path], list[Path]]:
    """(the rubric validation files, the rule-graded math ones) of a run on ``dataset``."""
    rubric_files = [dataset / "test.parquet"] if cfg.recipe.rubric_val else []
    chosen = cfg.recipe.math_val_files
    if chosen == "auto":
        math_files = [dataset / "test_math.parquet"] if (dataset / "test_math.parquet").is_file() else []
    else:
        math_files = [Path(f) for f in (chosen or [])]
    if not rubric_files + math_files:
        raise RecipeError("no validation set: recipe.rubric_val is false and there are no recipe.math_val_files",
                          code=2)
    return rubric_files, math_files


def data_sources(files) -> list[str]:
    """The distinct ``data_source`` values of parquet files, sorted."""
    import pyarrow.parquet as pq

    return sorted({s for f in files for s in pq.read_table(f, columns=["data_source"]).column(0).to_pylist()})


def report_pass_at_1(train_log: Path, sources, json_out: Path) -> None:
    """pass@1 of the last validation on each rule-graded math source (console and ``json_out``)."""
    import json

    from verlkit.runs.summary import parse_step_metrics, pass_at_1, pass_at_1_lines

    results = pass_at_1(parse_step_metrics(train_log.read_text(errors="replace")), sources)
    json_out.write_text(json.dumps(results, indent=1) + "\n")
    missing = sorted(set(sources) - set(results))
    print(pass_at_1_lines(results), flush=True)
    if missing:
        log(f"no validation of {', '.join(missing)} in the log (trainer.test_freq <= 0?)")


def model_arguments(cfg) -> dict[str, str]:
    """The model arguments resolved before anything starts (dotted key -> role); an external verifier's
    model is a name at its server, not something to load."""
    models = {"recipe.policy": "policy"}
    if not cfg.recipe.verifier.url:
        models["recipe.verifier.model"] = "verifier"
    if cfg.recipe.verifier.setup == HYBRID and not cfg.recipe.rubric_model.url:
        models["recipe.rubric_model.model"] = "rubric"
    return models


def prepare_data(run: Run, kind: str) -> Path:
    """The bundled sample of ``kind`` (tinyv | grade) as train/test parquet in RUN_DIR/data."""
    from data_prep.rubric import main as prep

    call_tool(prep, [kind, "--out", run.run_dir / "data"], f"preparing the bundled {kind} sample")
    return run.run_dir / "data"


def body(stack: contextlib.ExitStack, argv) -> int:
    s = RecipeSettings("rubric", CONFIG_DIR, KNOBS, POSITIONAL, argv, USAGE)
    s.require({"recipe.policy": "a policy model (1st argument)",
               "recipe.verifier.model": "a verifier (rubric) model (5th argument)"})  # fmt: skip
    hybrid = choose_verification(s)
    s.defaults += template_overrides(s.cfg, hybrid)
    s.cfg = s.compose()
    backend = check_backend(s.cfg.recipe.verifier, "the verifier", "VERLKIT_VERIFIER_URL")
    if hybrid and backend == "managed":
        raise RecipeError("setup=hybrid serves two models: VERIFIER_BACKEND=launcher or external, not managed",
                          code=2)
    refuse_launcher_placement(backend, {"VERIFIER_DEVICES": s.cfg.recipe.verifier.devices,
                                        "TRAIN_DEVICES": s.cfg.recipe.train_devices})  # fmt: skip
    check_verifier_options(s.cfg)
    run = s.open_run(stack)
    s.resolve_models(model_arguments(s.cfg))

    dataset = Path(s.cfg.recipe.dataset) if s.cfg.recipe.dataset else prepare_data(run, "tinyv")
    s.add(f"recipe.dataset={quoted(dataset)}")
    rubric_val, math_val = validation_files(s.cfg, dataset)
    s.add("data.val_files=[" + ",".join(quoted(f) for f in rubric_val + math_val) + "]")
    validate_data(dataset / "train.parquet", *rubric_val, *math_val, reward_options=reward_options(s.cfg))
    math_sources = data_sources(math_val)
    if math_sources:
        log(f"rule-graded math validation: {', '.join(math_sources)} ({', '.join(map(str, math_val))})")

    if backend == "managed":  # verl starts the replicas with the trainer; the reward follows its router
        log("verifier: verl's reward-model replicas behind its router (VERIFIER_BACKEND=managed)")
        replica_logs_in(run.run_dir)
        if s.profile == "cpu":
            s.add(*cpu_ray_overrides(s.cfg))
    else:
        specs = [verifier_spec(s.cfg, run.run_dir)] + ([rubric_model_spec(s.cfg, run.run_dir)] if hybrid else [])
        verifier, *others = run.serve_together(*specs)
        s.add(f"recipe.verifier.url={quoted(verifier.base_url)}",
              f"recipe.verifier.served_name={quoted(verifier.model_name)}")  # fmt: skip
        if hybrid:
            (rubric,) = others
            s.add(f"recipe.rubric_model.url={quoted(rubric.base_url)}",
                  f"recipe.rubric_model.served_name={quoted(rubric.model_name)}")  # fmt: skip
        probe_verifier(s.cfg)  # hybrid: each side's server

    env = None
    train_devices = parse_devices(s.cfg.recipe.train_devices)
    if s.profile == "gpu" and train_devices:  # the verifier has GPUs of its own: train on the others
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(train_devices)}
    rc = run.train("training", "verl.trainer.main_ppo", CONFIG_DIR, s.name, s.overrides(), run.run_dir, env=env)
    if rc:
        return rc
    if run.summary(run.run_dir / "train.log", run.run_dir / "metrics.json"):
        raise RecipeError(f"no training steps found in {run.run_dir / 'train.log'}")
    if math_sources:
        report_pass_at_1(run.run_dir / "train.log", math_sources, run.run_dir / "math_pass_at_1.json")
    log(f"run directory: {run.run_dir}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_recipe(lambda stack: body(stack, argv))


if __name__ == "__main__":
    sys.exit(main())
