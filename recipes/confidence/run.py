"""``bash run_confidence.sh``: GRPO for calibrated verbalized confidence, then export, serve, evaluate.

Settings: ``recipes/confidence/config/confidence.yaml`` (the seed's MedMCQA runs; the ``design`` group
picks cgp or rlcr) and ``confidence_cpu.yaml`` (the CPU default). The run: MedMCQA-format data
(``data_prep.medmcqa``) and its validation, the downstream model for cgp (served by us or a hosted
API), ``verl.trainer.main_ppo``, the trained actor exported to a Hugging Face directory, served, and
evaluated on dev (``verlkit.evaluation.calibration``) with a metrics table and reliability diagrams.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from recipes import format_table
from recipes.checkpoints import export_hf
from recipes.compose import Setting, SettingError, boolean, integer, items, number, quoted, tool_arguments
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
    "POLICY_DEVICES": Setting("recipe.policy_server.devices"),
    "EVAL_LIMIT": Setting("recipe.eval.limit", integer),
    "ALGORITHM": Setting("algorithm.adv_estimator"),
    "CALIBRATION_MONITOR": Setting("recipe.calibration_monitor.enabled", lambda raw: str(boolean(raw)).lower()),
    "VERLKIT_CONFIDENCE_STD_MIN": Setting("recipe.calibration_monitor.std_min", number),
    "VERLKIT_CONFIDENCE_COLLAPSE_STEPS": Setting("recipe.calibration_monitor.collapse_steps", integer),
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


def server_spec(section, name: str, model, run_dir: Path, devices: list[str], **extra):
    from verlkit.serving import ServerSpec

    return ServerSpec(model=model, name=name, served_model_name=name, max_model_len=section.max_model_len,
                      run_dir=run_dir, ready_timeout_s=section.ready_timeout_s, devices=",".join(devices) or None,
                      **extra)  # fmt: skip


def body(stack: contextlib.ExitStack, argv) -> int:
    s = RecipeSettings("confidence", CONFIG_DIR, KNOBS, POSITIONAL, argv, USAGE)
    s.require({"recipe.policy": "a policy model (1st argument)"})
    check_estimator(s.cfg)
    design, ds = s.cfg.recipe.design, s.cfg.recipe.downstream
    if design == "cgp" and not ds.model:
        raise RecipeError("design cgp needs a downstream model (a model directory, or with DOWNSTREAM_URL the "
                          f"API's model name). {USAGE}", code=2)  # fmt: skip
    train, ds_devices = [], []
    if s.profile == "gpu":
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
    if design == "cgp":
        if ds.url:
            problem = check_chat(ds.url, ds.model, ds.api_key_env)
            if problem:
                raise RecipeError(problem)
            s.add(f"recipe.downstream.served_name={quoted(ds.model)}")
            log(f"downstream: hosted API {ds.url}, model {ds.model}")
        else:
            extra_gpu = {}
            if profile == "gpu":
                extra_gpu = dict(tensor_parallel_size=ds.tensor_parallel_size, gpu_memory_utilization=ds.gpu_memory_utilization)
            server = run.serve(server_spec(ds, "downstream", ds.model, run.run_dir, ds_devices, **extra_gpu))
            s.add(f"recipe.downstream.url={quoted(server.base_url)}", f"recipe.downstream.served_name={quoted(server.model_name)}")
        ds = s.cfg.recipe.downstream

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
    eval_dir = run.run_dir / "eval"
    args = ["--design", design, "--data", dev_file, "--policy-url", policy.base_url, "--policy-model",
            policy.model_name, "--out", eval_dir]  # fmt: skip
    if design == "cgp":
        args += ["--downstream-url", ds.url, "--downstream-model", ds.served_name]
        args += ["--downstream-api-key-env", ds.api_key_env] if ds.api_key_env else []
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
