#!/usr/bin/env bash
# RL with a rubric reward model (RRM) or a TinyV-style verifier scoring the policy's rollouts.
#
#   bash run_rubric.sh <model> <epochs> [dataset] [no_entropy_loss_and_kl] [verifier_model] [setup] [weight] [-- hydra overrides...]
#
# With no arguments on a machine without a GPU: the CPU default (tiny local policy, SmolLM2-135M-Instruct
# as the verifier on the CPU build of vLLM, the bundled rubric sample, a few GRPO steps, a summary).
# model, verifier_model: local directories or Hugging Face Hub ids (resolved through the HF cache first).
# dataset: a directory with train.parquet and test.parquet (*_tinyv rows; see data_prep/rubric.py), and
# test_math.parquet (rule-graded math validation rows; their pass@1 is in the summary).
# Settings: recipes/rubric/config/rubric.yaml (GPU) and rubric_cpu.yaml; any of them after `--`, e.g.
# `-- recipe.verifier.timeout_s=60 actor_rollout_ref.actor.optim.lr=1e-6` (docs/recipes.md).
# Environment knobs (all optional; aliases of settings, see recipes/rubric/run.py): ALGORITHM=gae|grpo,
# TEMPLATE=rubric|tinyv, TEMPLATE_FILE (a published checkpoint's prompt), VERDICT, VERDICT_MODE=label|prob,
# CONSTRAINED=true|false (vLLM structured outputs; on in the CPU profile), N_GPUS_PER_NODE, NNODES, VERIFIER_TP, VERIFIER_GPU_MEM (colocated fraction,
# default 0.2), VERIFIER_DEVICES (dedicated GPUs) + TRAIN_DEVICES, VERIFIER_MAX_MODEL_LEN, VERIFIER_HOST,
# VERIFIER_NAME, VERLKIT_VERIFIER_URL (use a running server), RUN_DIR, STEPS, LOGGER, ON_FAILURE=rule|zero,
# VERIFIER_BACKEND=launcher|managed|external (managed: verl serves the verifier behind its router, docs/gpu.md).
# setup=hybrid (a second served model, the rubric model, flaw-checks rule-correct samples): RUBRIC_MODEL
# or RUBRIC_URL, RUBRIC_NAME, RUBRIC_DEVICES, RUBRIC_TP, RUBRIC_GPU_MEM, RUBRIC_WEIGHT, RUBRIC_MODE,
# RUBRIC_SHARE (docs/verifier-rewards.md).
# RAY_ADDRESS joins an existing Ray cluster (multi-node).
cd "$(dirname "${BASH_SOURCE[0]}")" && exec "${VK_PYTHON:-python}" -m recipes.rubric "$@"
