#!/usr/bin/env bash
# Train the rubric reward model (RRM) itself with RL on `grade` rows: the policy is the grader, rewarded
# by (1 - |its Total Score/10 - reference score|)^2. No verifier server.
#
#   bash recipes/rubric/train_rrm.sh <rrm_sft_model> <epochs> [dataset dir with train.parquet/test.parquet] [-- hydra overrides...]
#
# No arguments on a machine without a GPU: the tiny local model on the bundled grade sample, 2 GRPO steps.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
cd "$VK_REPO"
vk_args "$@"
set -- "${POSITIONAL[@]+"${POSITIONAL[@]}"}"

vk_detect_profile
vk_run_dir rrm
vk_install_cleanup
if [[ "$PROFILE" == cpu ]]; then
  MODEL="${1:-$("$VK_PY" -m verlkit.models.local tiny)}"; EPOCHS="${2:-1}"; ALGORITHM="${ALGORITHM:-grpo}"
else
  MODEL="${1:?usage: bash recipes/rubric/train_rrm.sh <rrm_sft_model> <epochs> [dataset]}"; EPOCHS="${2:-12}"
  ALGORITHM="${ALGORITHM:-gae}"
fi
DATASET="${3:-}"
if [[ -z "$DATASET" ]]; then
  DATASET="$RUN_DIR/data"
  "$VK_PY" -m data_prep.rubric grade --out "$DATASET" >&2
fi
vk_validate "$DATASET/train.parquet" "$DATASET/test.parquet"
mapfile -t ARGS < <("$VK_PY" -m recipes.rubric.rrm_args --profile "$PROFILE" --model "$MODEL" \
  --train "$DATASET/train.parquet" --val "$DATASET/test.parquet" --epochs "$EPOCHS" --algorithm "$ALGORITHM" \
  --n-gpus-per-node "${N_GPUS_PER_NODE:-8}" --nnodes "${NNODES:-1}" --run-dir "$RUN_DIR" \
  --logger "${LOGGER:-console,wandb}")
[[ "$PROFILE" == cpu ]] && ARGS+=("trainer.total_training_steps=${STEPS:-2}")
vk_train "$RUN_DIR/train.log" "$VK_PY" -m verl.trainer.main_ppo "${ARGS[@]}" "${EXTRA[@]+"${EXTRA[@]}"}"
"$VK_PY" -m verlkit.runs.summary "$RUN_DIR/train.log" --json "$RUN_DIR/metrics.json"
