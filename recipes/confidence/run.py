"""``bash run_confidence.sh``: GRPO for calibrated verbalized confidence, then export, serve, evaluate.

Settings: ``recipes/confidence/config/confidence.yaml`` (the seed's MedMCQA runs; the ``design`` group
picks cgp or rlcr) and ``confidence_cpu.yaml`` (the CPU default). The run: MedMCQA-format data
(``data_prep.medmcqa``) and its validation, the downstream model for cgp (served by us or a hosted
API; or, with ``DOWNSTREAM_BACKEND=managed``, verl's own replicas behind its router during training:
``recipes/managed.py``), ``verl.trainer.main_ppo``, the trained actor exported to a Hugging Face directory, served, and
evaluated on dev (``verlkit.evaluation.calibration``) with a metrics table and reliability diagrams.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from recipes import format_table
from recipes.checkpoints import export_hf
from recipes.compose import Setting, SettingError, boolean_text, integer, items, number, quoted, tool_arguments
from recipes.confidence.hosted import HOSTED_DOWNSTREAMS, missing_key, preset_overrides
from recipes.driver import (
    RecipeError,
    call_tool,
    devices_except,
    gpu_indices,
    log,
    overlap_error,
    parse_devices,
    validate_data,
)
from recipes.driver import main as run_recipe
from recipes.managed import (
    backend_choice,
    check_backend,
    cpu_ray_overrides,
    pool_gpus,
    refuse_launcher_placement,
    replica_logs_in,
)
from recipes.settings import RecipeSettings

CONFIG_DIR = Path(__file__).resolve().parent / "config"
DESIGNS = ("cgp", "rlcr")
USAGE = "usage: bash run_confidence.sh [policy_model] [cgp|rlcr] [downstream_model] [epochs] [-- hydra overrides]"


def _design(raw: str) -> str:
    if raw not in DESIGNS:
        raise SettingError(f"must be cgp or rlcr, got {raw!r}")
    return raw


POSITIONAL = (
    ("policy_model", Setting("recipe.policy")),
    ("design", Setting("design", _design)),
    ("downstream_model", Setting("recipe.downstream.model")),
    ("epochs", Setting("trainer.total_epochs", integer)),
)

# The documented environment knobs (header of run_confidence.sh, docs/calibration.md).
KNOBS = {
    "RUN_DIR": Setting("recipe.run_dir"),
    "STEPS": Setting("trainer.total_training_steps", integer),
    "LOGGER": Setting("trainer.logger", items),
    "N_GPUS_PER_NODE": Setting("trainer.n_gpus_per_node", integer),
    "NNODES": Setting("trainer.nnodes", integer),
    "MEDMCQA_DIR": Setting("recipe.data.input"),
    "TRAIN_SIZE": Setting("recipe.data.train_size", integer),
    "DEV_SIZE": Setting("recipe.data.dev_size"),
    "VARIANT": Setting("recipe.downstream.variant"),
    "TRAIN_DEVICES": Setting("recipe.train_devices"),
    "DOWNSTREAM_DEVICES": Setting("recipe.downstream.devices"),
    "DOWNSTREAM_TP": Setting("recipe.downstream.tensor_parallel_size", integer),
    "DOWNSTREAM_GPU_MEM": Setting("recipe.downstream.gpu_memory_utilization", number),
    "DOWNSTREAM_MAX_MODEL_LEN": Setting("recipe.downstream.max_model_len", integer),
    "DOWNSTREAM_URL": Setting("recipe.downstream.url"),
    "DOWNSTREAM_API_KEY_ENV": Setting("recipe.downstream.api_key_env"),
    "DOWNSTREAM_RATE_LIMIT_RPS": Setting("recipe.downstream.rate_limit_rps", number),
    "DOWNSTREAM_TEMPLATE_FILE": Setting("recipe.downstream.template_file"),
    "DOWNSTREAM_CONSTRAINED": Setting("recipe.downstream.constrained", boolean_text),
    "POLICY_DEVICES": Setting("recipe.policy_server.devices"),
    "EVAL_LIMIT": Setting("recipe.eval.limit", integer),
    "ALGORITHM": Setting("algorithm.adv_estimator"),
    "CALIBRATION_MONITOR": Setting("recipe.calibration_monitor.enabled", boolean_text),
    "VERLKIT_CONFIDENCE_STD_MIN": Setting("recipe.calibration_monitor.std_min", number),
    "VERLKIT_CONFIDENCE_COLLAPSE_STEPS": Setting("recipe.calibration_monitor.collapse_steps", integer),
    "DOWNSTREAM_BACKEND": Setting("downstream_backend", backend_choice),
}

ESTIMATORS = ("grpo", "gdpo")


def check_estimator(cfg) -> None:
    """grpo, or gdpo over score components the design's reward returns (one weight each)."""
    algorithm = cfg.algorithm
    if algorithm.adv_estimator not in ESTIMATORS:
        raise RecipeError(f"algorithm.adv_estimator (ALGORITHM) must be one of {', '.join(ESTIMATORS)}, got "
                          f"{algorithm.adv_estimator!r}", code=2)  # fmt: skip
    if algorithm.adv_estimator == "gdpo":
        keys, weights = list(algorithm.gdpo_reward_keys or []), list(algorithm.gdpo_reward_weights or [])
        if not keys or (weights and len(weights) != len(keys)):
            raise RecipeError(f"gdpo needs algorithm.gdpo_reward_keys and one weight per key, got keys {keys} and "
                              f"weights {weights}", code=2)  # fmt: skip


def monitor_environment(cfg) -> dict[str, str]:
    """``recipe.calibration_monitor`` as the environment the trainer's monitor reads
    (verlkit.plugin.calibration_monitor)."""
    from verlkit.plugin.calibration_monitor import ENABLED_ENV, PATIENCE_ENV, STD_MIN_ENV

    monitor = cfg.recipe.calibration_monitor
    return {ENABLED_ENV: "1" if monitor.enabled else "0", STD_MIN_ENV: str(float(monitor.std_min)),
            PATIENCE_ENV: str(int(monitor.collapse_steps))}


def place_devices(all_gpus: list[str], design: str, hosted: bool, train: list[str], downstream: list[str]):
    """(training devices, downstream devices) on a GPU machine: a served cgp downstream model gets its
    own GPUs (default: the last one), training the others. Raises RecipeError (code 2) when that is
    impossible."""
    if design == "cgp" and not hosted:
        if not downstream:
            if len(all_gpus) < 2:
                raise RecipeError("cgp needs 2+ GPUs (one for the downstream model), or DOWNSTREAM_URL", code=2)
            downstream = all_gpus[-1:]
        train = train or devices_except(all_gpus, downstream)
        if not train:
            raise RecipeError(f"no GPU left for training (DOWNSTREAM_DEVICES={','.join(downstream)})", code=2)
        problem = overlap_error("TRAIN_DEVICES", train, "DOWNSTREAM_DEVICES", downstream)
        if problem:
            raise RecipeError(problem, code=2)
    train = train or all_gpus
    if not train:
        raise RecipeError("no GPU found for training", code=2)
    return train, downstream


def place_managed(all_gpus: list[str], pool: int) -> tuple[list[str], list[str], int]:
    """(devices the trainer sees, the downstream server's devices for the evaluation, the trainer's GPU
    count) when verl serves the downstream model in a pool of ``pool`` GPUs: the trainer sees every GPU
    (verl places both pools), trains on the first ``len - pool``; the evaluation's server takes the last."""
    count = len(all_gpus) - pool
    if count < 1:
        raise RecipeError(f"DOWNSTREAM_BACKEND=managed: {len(all_gpus)} GPU(s), the downstream pool takes {pool}, "
                          "none is left for training", code=2)  # fmt: skip
    return all_gpus, all_gpus[-1:], count


def check_chat(url: str, model: str, api_key_env: str | None = None, timeout_s: float = 60.0) -> str | None:
    """One short chat request to a hosted OpenAI-compatible API (the downstream model when it is not
    served by us). None if it answered, else a message. The key is read from the env var named
    ``api_key_env`` by the shared client; it never appears on a command line."""
    from verlkit.clients.llm import close_session, get_client
    from verlkit.clients.loop import run_sync
    from verlkit.clients.settings import ClientSettings

    if api_key_env and not os.environ.get(api_key_env):
        return f"DOWNSTREAM_API_KEY_ENV={api_key_env}, but the environment variable {api_key_env} is empty or unset"
    settings = ClientSettings(url=url, model=model, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=2,
                              cache_size=0)
    client = get_client(settings.client_config())
    try:
        reply = run_sync(client.chat([{"role": "user", "content": "Say OK."}], max_tokens=4, temperature=0.0),
                         timeout=timeout_s * 4)  # fmt: skip
    finally:
        close_session()
    return None if reply.ok else f"downstream model {model!r} at {url} did not answer a chat request: {reply.error}"


REPORT_FIELDS = ("accuracy", "ece", "brier", "auroc", "mean_confidence")


def eval_report(metrics: dict) -> tuple[str, list[str]]:
    """The evaluation's ``metrics.json`` as a table (one row per condition, the ``all`` view) and the
    problems that make the run a failure: a condition with no answered row at all."""
    header = ["condition", "n", *REPORT_FIELDS, "parse_failure_rate", "request_failures"]
    rows, problems = [header], []
    for name, report in metrics.get("conditions", {}).items():
        if not report.get("n"):
            problems.append(f"{name}: no answered rows ({report.get('request_failures', '?')} request failures)")
            continue
        view = report["all"]
        values = [view.get(k) for k in REPORT_FIELDS] + [report.get("parse_failure_rate")]
        rows.append([name, str(report["n"])] + ["n/a" if v is None else f"{v:.3f}" for v in values]
                    + [str(report.get("request_failures", 0))])  # fmt: skip
    return format_table(rows), problems


def probe_downstream(cfg) -> None:
    """Once the downstream model answers: its reward options (template) and, with a constraint, one
    probe request, so a server that refuses the constraint stops the run before training."""
    from omegaconf import OmegaConf

    from verl.utils.reward_score.calibration import check_options
    from verl.utils.reward_score.options import RewardOptionsError
    from verlkit.clients.llm import close_session

    options = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs.cgp, resolve=True)
    try:
        check_options(options, probe=True)
    except RewardOptionsError as e:
        raise RecipeError(f"recipe.downstream: {e}", code=2) from None
    finally:
        close_session()


def downstream_eval_arguments(ds) -> list[str]:
    """The evaluation asks the downstream model as the reward does: same template, same constraint."""
    args = ["--downstream-constrained", "true" if ds.constrained else "false"]
    args += ["--downstream-template-file", str(ds.template_file)] if ds.template_file else []
    args += ["--downstream-reasoning-chars", str(ds.reasoning_chars)] if ds.reasoning_chars is not None else []
    return args


def server_spec(section, name: str, model, run_dir: Path, devices: list[str], **extra):
    from verlkit.serving import ServerSpec

    return ServerSpec(model=model, name=name, served_model_name=name, max_model_len=section.max_model_len,
                      run_dir=run_dir, ready_timeout_s=section.ready_timeout_s, devices=",".join(devices) or None,
                      **extra)  # fmt: skip


def serve_downstream(run, s: RecipeSettings, devices: list[str]) -> None:
    """Start the downstream model with the launcher; its URL and name become the run's settings."""
    ds = s.cfg.recipe.downstream
    extra_gpu = {}
    if s.profile == "gpu":
        extra_gpu = dict(tensor_parallel_size=ds.tensor_parallel_size, gpu_memory_utilization=ds.gpu_memory_utilization)
    server = run.serve(server_spec(ds, "downstream", ds.model, run.run_dir, devices, **extra_gpu))
    s.add(f"recipe.downstream.url={quoted(server.base_url)}", f"recipe.downstream.served_name={quoted(server.model_name)}")


def body(stack: contextlib.ExitStack, argv) -> int:
    s = RecipeSettings("confidence", CONFIG_DIR, KNOBS, POSITIONAL, argv, USAGE)
    s.require({"recipe.policy": "a policy model (1st argument)"})
    check_estimator(s.cfg)
    design, ds = s.cfg.recipe.design, s.cfg.recipe.downstream
    if design == "cgp" and not ds.model:
        raise RecipeError("design cgp needs a downstream model (a model directory, a hosted preset such as "
                          f"{' or '.join(HOSTED_DOWNSTREAMS)}, or with DOWNSTREAM_URL the API's model name). {USAGE}",
                          code=2)  # fmt: skip
    if design == "cgp":
        # a hosted preset by name fills in its endpoint; its key must be there before anything starts
        s.add(*preset_overrides(ds))
        ds = s.cfg.recipe.downstream
        problem = missing_key(ds)
        if problem:
            raise RecipeError(problem, code=2)
    backend = check_backend(ds, "the downstream model", "DOWNSTREAM_URL")
    if backend == "managed" and design != "cgp":
        raise RecipeError(f"DOWNSTREAM_BACKEND=managed serves cgp's downstream model; design {design} has none",
                          code=2)  # fmt: skip
    refuse_launcher_placement(backend, {"DOWNSTREAM_DEVICES": ds.devices, "TRAIN_DEVICES": s.cfg.recipe.train_devices})
    train, ds_devices = [], []
    if s.profile == "gpu" and backend == "managed":
        train, ds_devices, count = place_managed(gpu_indices(), pool_gpus(s.cfg))
        s.add(f"recipe.train_gpu_count={count}")
    elif s.profile == "gpu":
        train, ds_devices = place_devices(gpu_indices(), design, bool(ds.url), parse_devices(s.cfg.recipe.train_devices),
                                          parse_devices(ds.devices))  # fmt: skip
        s.add(f"recipe.train_gpu_count={len(train)}")
    run = s.open_run(stack)
    # the models to load (a hosted downstream model is a name at its API)
    s.resolve_models({"recipe.policy": "policy", **({"recipe.downstream.model": "downstream"}
                                                    if design == "cgp" and not ds.url else {})})
    profile, name = s.profile, s.name

    # --- data
    from data_prep.medmcqa import main as medmcqa

    data = run.run_dir / "data"
    prep_cfg = s.cfg.recipe.data
    prep = ["--out", data, "--design", design, "--train-size", prep_cfg.train_size, "--dev-size", prep_cfg.dev_size]
    prep += ["--input", prep_cfg.input] if prep_cfg.input else []
    call_tool(medmcqa, prep, "preparing the MedMCQA data")
    train_file, dev_file = data / design / "train.parquet", data / design / "dev.parquet"
    validate_data(train_file, dev_file)

    # --- the downstream model (cgp): a hosted API (nothing to start; one real chat request checks URL,
    # model name and key), or a server of our own
    ds = s.cfg.recipe.downstream
    if design == "cgp" and backend == "managed":
        log("downstream: verl's replicas behind its router during training (DOWNSTREAM_BACKEND=managed)")
        replica_logs_in(run.run_dir)
        if profile == "cpu":
            s.add(*cpu_ray_overrides(s.cfg))
    elif design == "cgp":
        if ds.url:
            problem = check_chat(ds.url, ds.model, ds.api_key_env)
            if problem:
                raise RecipeError(problem)
            s.add(f"recipe.downstream.served_name={quoted(ds.model)}")
            log(f"downstream: hosted API {ds.url}, model {ds.model}")
        else:
            serve_downstream(run, s, ds_devices)
        ds = s.cfg.recipe.downstream
        probe_downstream(s.cfg)

    # --- training
    env = {**os.environ, **monitor_environment(s.cfg)}
    if profile == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(train)
    rc = run.train("training", "verl.trainer.main_ppo", CONFIG_DIR, name, s.overrides(), run.run_dir, env=env)
    if rc:
        return rc
    if run.summary(run.run_dir / "train.log", run.run_dir / "train_metrics.json"):
        raise RecipeError(f"no training steps found in {run.run_dir / 'train.log'}")

    # --- export, serve the trained policy, evaluate on dev
    policy_hf = export_hf(run, run.run_dir / "checkpoints", run.run_dir / "policy_hf", run.run_dir / "export.log",
                          actor=True)  # fmt: skip
    ps = s.cfg.recipe.policy_server
    extra_gpu = {"gpu_memory_utilization": ps.gpu_memory_utilization} if profile == "gpu" else {}
    policy_devices = parse_devices(ps.devices) or train[:1]
    policy = run.serve(server_spec(ps, "policy", policy_hf, run.run_dir, policy_devices, **extra_gpu))
    if design == "cgp" and backend == "managed":  # verl's replicas ended with the trainer: a server to evaluate
        serve_downstream(run, s, ds_devices)
        ds = s.cfg.recipe.downstream
    eval_dir = run.run_dir / "eval"
    args = ["--design", design, "--data", dev_file, "--policy-url", policy.base_url, "--policy-model",
            policy.model_name, "--out", eval_dir]  # fmt: skip
    if design == "cgp":
        args += ["--downstream-url", ds.url, "--downstream-model", ds.served_name]
        args += ["--downstream-api-key-env", ds.api_key_env] if ds.api_key_env else []
        args += downstream_eval_arguments(ds)
    args += tool_arguments(s.cfg.recipe.eval)
    # the evaluation joins the training run in the tracker: same project, same run group
    args += run.evaluation_tracker(s.cfg.trainer.logger, s.cfg.trainer.project_name, f"{run.experiment}-eval-calibration")
    log(f"evaluating: python -m verlkit.evaluation.calibration {' '.join(map(str, args))}")
    from verlkit.evaluation.calibration import main as evaluate

    if evaluate([str(a) for a in args]):
        raise RecipeError("the evaluation failed (see above)")

    import json

    table, problems = eval_report(json.loads((eval_dir / "metrics.json").read_text()))
    print(table, flush=True)
    for problem in problems:
        log(f"error: {eval_dir / 'metrics.json'}: {problem}")
    if problems:
        return 1  # an outage is not a result
    log(f"metrics: {eval_dir / 'metrics.json'}")
    for png in sorted(eval_dir.glob("reliability*.png")):
        log(f"reliability diagram: {png}")
    log(f"trained policy (HF): {policy_hf}; run directory: {run.run_dir}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_recipe(lambda stack: body(stack, argv))


if __name__ == "__main__":
    sys.exit(main())
