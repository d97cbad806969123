"""``bash train_rrm.sh``: train the rubric reward model (RRM) itself with RL on ``grade`` rows.

The policy is the grader, rewarded by ``(1 - |its Total Score/10 - reference score|)^2``; no verifier
server. Settings: ``recipes/rubric/config/rrm.yaml`` (the original's run_train_rrm.sh) and
``rrm_cpu.yaml`` (the CPU default).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from recipes.compose import Setting, integer, items, quoted
from recipes.driver import RecipeError, log, validate_data
from recipes.driver import main as run_recipe
from recipes.rubric.run import CONFIG_DIR, prepare_data
from recipes.settings import RecipeSettings

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


def body(stack: contextlib.ExitStack, argv) -> int:
    s = RecipeSettings("rrm", CONFIG_DIR, KNOBS, POSITIONAL, argv, USAGE)
    s.require({"recipe.policy": "the RRM's SFT model (1st argument)"})
    run = s.open_run(stack)
    s.resolve_models({"recipe.policy": "the RRM's SFT model"})
    dataset = Path(s.cfg.recipe.dataset) if s.cfg.recipe.dataset else prepare_data(run, "grade")
    s.add(f"recipe.dataset={quoted(dataset)}")
    validate_data(dataset / "train.parquet", dataset / "test.parquet")
    rc = run.train("training", "verl.trainer.main_ppo", CONFIG_DIR, s.name, s.overrides(), run.run_dir)
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
