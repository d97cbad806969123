#!/usr/bin/env bash
# RL with a rubric reward model (RRM) or a TinyV-style verifier scoring the policy's rollouts.
#
#   bash run_rubric.sh <model> <epochs> [dataset] [no_entropy_loss_and_kl] [verifier_model] [setup] [weight] [-- hydra overrides...]
#
# With no arguments on a machine without a GPU: the CPU default (tiny local policy, SmolLM2-135M-Instruct
# as the verifier on the CPU build of vLLM, the bundled rubric sample, a few GRPO steps, a summary).
# dataset: a directory with train.parquet and test.parquet (*_tinyv rows; see data_prep/rubric.py).
# Environment knobs (all optional): ALGORITHM=gae|grpo, TEMPLATE=rubric|tinyv, N_GPUS_PER_NODE, NNODES,
# VERIFIER_TP, VERIFIER_GPU_MEM (colocated fraction, default 0.2), VERIFIER_DEVICES (dedicated GPUs),
# VERIFIER_MAX_MODEL_LEN, VERIFIER_HOST, VERIFIER_NAME, VERLKIT_VERIFIER_URL (use a running server), RUN_DIR, STEPS,
# LOGGER, ON_FAILURE=rule|zero. RAY_ADDRESS joins an existing Ray cluster (multi-node).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipes/common.sh"
cd "$VK_REPO"

vk_begin rubric "$@"
set -- "${POSITIONAL[@]+"${POSITIONAL[@]}"}"

if [[ "$PROFILE" == cpu ]]; then
  MODEL="${1:-$("$VK_PY" -m verlkit.models.local tiny)}"
  EPOCHS="${2:-1}"
  DATASET="${3:-}"
  VERIFIER_MODEL="${5:-$("$VK_PY" -m verlkit.models.local smollm2)}"
  ALGORITHM="${ALGORITHM:-grpo}"
else
  MODEL="${1:?usage: bash run_rubric.sh <model> <epochs> [dataset] [no_entropy_loss_and_kl] [verifier_model] [setup] [weight]}"
  EPOCHS="${2:-12}"
  DATASET="${3:-data/polaris}"
  VERIFIER_MODEL="${5:?a verifier (rubric) model is required on GPU}"
  ALGORITHM="${ALGORITHM:-gae}"
fi
NO_ENTROPY_LOSS_AND_KL="${4:-True}"
SETUP="${6:-tinyv_only}"
WEIGHT="${7:-1.0}"

if [[ -z "$DATASET" ]]; then
  DATASET="$RUN_DIR/data"
  "$VK_PY" -m data_prep.rubric tinyv --out "$DATASET" >&2
fi
vk_validate "$DATASET/train.parquet" "$DATASET/test.parquet"

SERVE_ARGS=(--max-model-len "${VERIFIER_MAX_MODEL_LEN:-15000}")
if [[ "$PROFILE" == cpu ]]; then
  SERVE_ARGS=(--max-model-len "${VERIFIER_MAX_MODEL_LEN:-2048}")
elif [[ -n "${VERIFIER_DEVICES:-}" ]]; then
  SERVE_ARGS+=(--devices "$VERIFIER_DEVICES" --tp "${VERIFIER_TP:-1}" --gpu-memory-utilization "${VERIFIER_GPU_MEM:-0.9}")
else
  SERVE_ARGS+=(--tp "${VERIFIER_TP:-8}" --gpu-memory-utilization "${VERIFIER_GPU_MEM:-0.2}")
fi
[[ -n "${VERIFIER_HOST:-}" ]] && SERVE_ARGS+=(--host "$VERIFIER_HOST")
if [[ -n "${VERLKIT_VERIFIER_URL:-}" ]]; then
  SERVE_ARGS+=(--external-url "$VERLKIT_VERIFIER_URL")  # served name: the server's own (or VERIFIER_NAME)
  [[ -n "${VERIFIER_NAME:-}" ]] && SERVE_ARGS+=(--served-model-name "$VERIFIER_NAME")
else
  SERVE_ARGS+=(--served-model-name "${VERIFIER_NAME:-verifier}")
fi
vk_serve verifier "$VERIFIER_MODEL" "${SERVE_ARGS[@]}"

mapfile -t ARGS < <("$VK_PY" -m recipes.rubric.args --profile "$PROFILE" --model "$MODEL" \
  --train "$DATASET/train.parquet" --val "$DATASET/test.parquet" --verifier-url "$VK_URL" --verifier-name "$VK_MODEL_NAME" \
  --epochs "$EPOCHS" --no-entropy-loss-and-kl "$NO_ENTROPY_LOSS_AND_KL" --setup "$SETUP" --weight "$WEIGHT" \
  --template "${TEMPLATE:-rubric}" --algorithm "$ALGORITHM" --n-gpus-per-node "${N_GPUS_PER_NODE:-8}" \
  --nnodes "${NNODES:-1}" --run-dir "$RUN_DIR" --experiment "$(basename "$RUN_DIR")" \
  --logger "${LOGGER:-console,wandb}" --on-failure "${ON_FAILURE:-rule}")
[[ "$PROFILE" == cpu ]] && ARGS+=("trainer.total_training_steps=${STEPS:-2}")
# GPU runs in dedicated-verifier mode train on the other devices.
[[ "$PROFILE" == gpu && -n "${TRAIN_DEVICES:-}" ]] && export CUDA_VISIBLE_DEVICES="$TRAIN_DEVICES"

vk_log "training: python -m verl.trainer.main_ppo ${ARGS[*]} ${EXTRA[*]+"${EXTRA[*]}"}"
vk_train "$RUN_DIR/train.log" "$VK_PY" -m verl.trainer.main_ppo "${ARGS[@]}" "${EXTRA[@]+"${EXTRA[@]}"}"
"$VK_PY" -m verlkit.runs.summary "$RUN_DIR/train.log" --json "$RUN_DIR/metrics.json"
vk_log "run directory: $RUN_DIR"
