"""``bash run_rubric.sh``: RL with a rubric reward model (RRM) or a TinyV-style verifier served by vLLM.

Settings: ``recipes/rubric/config/rubric.yaml`` (the original's 8-GPU configuration) and
``rubric_cpu.yaml`` (the CPU default). The run: data (the bundled sample when no dataset is given) and
its validation, the verifier server (or an external one), ``verl.trainer.main_ppo`` on the recipe
config, the end-of-run summary of reward and verifier metrics.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from recipes.compose import Setting, boolean, integer, items, number, quoted
from recipes.driver import RecipeError, Run, call_tool, log, parse_devices, validate_data
from recipes.driver import main as run_recipe
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
}


def verifier_spec(cfg, run_dir: Path):
    """The launcher's spec of the verifier: colocated on the training GPUs (the layout's tensor parallel
    size and memory fraction) unless it has devices of its own."""
    from verlkit.serving import ServerSpec

    v = cfg.recipe.verifier
    devices = ",".join(parse_devices(v.devices)) or None
    layout = v.dedicated if devices else v.colocated
    return ServerSpec(
        model=v.model, name="verifier", served_model_name=v.served_name, host=v.host, external_url=v.url,
        max_model_len=v.max_model_len, run_dir=run_dir, ready_timeout_s=v.ready_timeout_s, devices=devices,
        tensor_parallel_size=v.tensor_parallel_size or layout.tensor_parallel_size,
        gpu_memory_utilization=v.gpu_memory_utilization or layout.gpu_memory_utilization,
    )  # fmt: skip


def check_verifier_options(cfg) -> None:
    """The verifier reward's options, checked by the reward itself before anything starts (the served
    URL and name are filled in later; stand-ins take their place here)."""
    from omegaconf import OmegaConf

    from verl.utils.reward_score.options import RewardOptionsError, parse_options
    from verl.utils.reward_score.tinyv import TinyVOptions

    options = OmegaConf.to_container(cfg.reward.custom_reward_function.reward_kwargs.tinyv, resolve=True)
    options["url"] = options.get("url") or "http://127.0.0.1:1/v1"
    options["model"] = options.get("model") or "verifier"
    try:
        parse_options(TinyVOptions, options)
    except RewardOptionsError as e:
        raise RecipeError(f"recipe.verifier: {e}", code=2) from None


def prepare_data(run: Run, kind: str) -> Path:
    """The bundled sample of ``kind`` (tinyv | grade) as train/test parquet in RUN_DIR/data."""
    from data_prep.rubric import main as prep

    call_tool(prep, [kind, "--out", run.run_dir / "data"], f"preparing the bundled {kind} sample")
    return run.run_dir / "data"


def body(stack: contextlib.ExitStack, argv) -> int:
    s = RecipeSettings("rubric", CONFIG_DIR, KNOBS, POSITIONAL, argv, USAGE)
    s.require({"recipe.policy": "a policy model (1st argument)",
               "recipe.verifier.model": "a verifier (rubric) model (5th argument)"})  # fmt: skip
    check_verifier_options(s.cfg)
    run = s.open_run(stack)

    dataset = Path(s.cfg.recipe.dataset) if s.cfg.recipe.dataset else prepare_data(run, "tinyv")
    s.add(f"recipe.dataset={quoted(dataset)}")
    validate_data(dataset / "train.parquet", dataset / "test.parquet")

    verifier = run.serve(verifier_spec(s.cfg, run.run_dir))
    s.add(f"recipe.verifier.url={quoted(verifier.base_url)}", f"recipe.verifier.served_name={quoted(verifier.model_name)}")

    env = None
    train_devices = parse_devices(s.cfg.recipe.train_devices)
    if s.profile == "gpu" and train_devices:  # the verifier has GPUs of its own: train on the others
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(train_devices)}
    rc = run.train("training", "verl.trainer.main_ppo", CONFIG_DIR, s.name, s.overrides(), run.run_dir, env=env)
    if rc:
        return rc
    if run.summary(run.run_dir / "train.log", run.run_dir / "metrics.json"):
        raise RecipeError(f"no training steps found in {run.run_dir / 'train.log'}")
    log(f"run directory: {run.run_dir}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_recipe(lambda stack: body(stack, argv))


if __name__ == "__main__":
    sys.exit(main())
