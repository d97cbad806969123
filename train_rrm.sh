#!/usr/bin/env bash
# Train the rubric reward model (RRM) itself with RL on `grade` rows: the policy is the grader, rewarded
# by (1 - |its Total Score/10 - reference score|)^2. No verifier server.
#
#   bash train_rrm.sh <rrm_sft_model> <epochs> [dataset dir with train.parquet/test.parquet] [-- hydra overrides...]
#
# No arguments on a machine without a GPU: the tiny local model on the bundled grade sample, 2 GRPO steps.
# Settings: recipes/rubric/config/rrm.yaml (GPU) and rrm_cpu.yaml; any of them after `--` (docs/recipes.md).
# Environment knobs (aliases of settings, see recipes/rubric/train_rrm.py): ALGORITHM=gae|grpo,
# N_GPUS_PER_NODE, NNODES, RUN_DIR, STEPS, LOGGER.
cd "$(dirname "${BASH_SOURCE[0]}")" && exec "${VK_PYTHON:-python}" -m recipes.rubric.train_rrm "$@"
