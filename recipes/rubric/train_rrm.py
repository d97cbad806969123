"""``bash train_rrm.sh``: train the rubric reward model (RRM) itself with RL on ``grade`` rows.

The policy is the grader, rewarded by ``(1 - |its Total Score/10 - reference score|)^2``; no verifier
server. Settings: ``recipes/rubric/config/rrm.yaml`` (the original's run_train_rrm.sh) and
``rrm_cpu.yaml`` (the CPU default).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from recipes.compose import Setting, SettingError, compose, integer, items, local_model_overrides, missing, quoted, script_settings
from recipes.driver import RecipeError, Run, cpu_profile_environment, detect_profile, log, validate_data
from recipes.driver import main as run_recipe
from recipes.rubric.run import CONFIG_DIR, prepare_data

USAGE = "usage: bash train_rrm.sh <rrm_sft_model> <epochs> [dataset dir with train.parquet/test.parquet] [-- hydra overrides]"

POSITIONAL = (
    ("rrm_sft_model", Setting("recipe.policy")),
    ("epochs", Setting("trainer.total_epochs", integer)),
    ("dataset", Setting("recipe.dataset")),
)

KNOBS = {
    "RUN_DIR": Setting("recipe.run_dir"),
    "STEPS": Setting("trainer.total_training_steps", integer),
    "LOGGER": Setting("trainer.logger", items),
    "ALGORITHM": Setting("algorithm.adv_estimator"),
    "N_GPUS_PER_NODE": Setting("trainer.n_gpus_per_node", integer),
    "NNODES": Setting("trainer.nnodes", integer),
}


def config_name(profile: str) -> str:
    return "rrm_cpu" if profile == "cpu" else "rrm"


def body(stack: contextlib.ExitStack, argv) -> int:
    profile = detect_profile()
    log(f"profile: {profile}")
    if profile == "cpu":
        cpu_profile_environment()
    name = config_name(profile)
    try:
        chosen, extra = script_settings(KNOBS, POSITIONAL, argv, os.environ, USAGE)
    except SettingError as e:
        raise RecipeError(f"{e}. {USAGE}", code=2) from None
    cfg = compose(CONFIG_DIR, name, chosen + extra)
    problem = missing(cfg, {"recipe.policy": "the RRM's SFT model (1st argument)"})
    if problem:
        raise RecipeError(f"{problem}. {USAGE}", code=2)
    run = Run.open("rrm", profile, cfg.recipe.run_dir, stack)
    base = chosen + [f"trainer.experiment_name={quoted(run.experiment)}"] + extra
    runtime = [f"recipe.run_dir={quoted(run.run_dir)}"] + local_model_overrides(cfg.recipe)
    dataset = Path(cfg.recipe.dataset) if cfg.recipe.dataset else prepare_data(run, "grade")
    runtime.append(f"recipe.dataset={quoted(dataset)}")
    validate_data(dataset / "train.parquet", dataset / "test.parquet")
    rc = run.train("training", "verl.trainer.main_ppo", CONFIG_DIR, name, base + runtime, run.run_dir)
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
