#!/usr/bin/env bash
# C3PO: learn one sentence of feedback without overgeneralizing — sample -> train -> evaluate.
#
#   bash run_c3po.sh [student_model] [feedback_prefix] [method] [-- preference-trainer overrides...]
#
# method: lcdpo (C3PO, default) | dpo | sft | sft_neg (see recipes/c3po/__init__.py). feedback_prefix
# selects feedbacks whose name or content starts with it (all of FEEDBACK_FILE when empty). One LoRA
# adapter is trained and evaluated per feedback.
# With no arguments on a machine without a GPU: the CPU default — the tiny local model as the student
# (it also writes the completions, as the original's completion model is the trained model),
# SmolLM2-135M-Instruct as teacher and judge on the CPU build of vLLM (replies constrained to the
# expected formats), the first two bundled feedbacks (one qualitative, one quantitative), small
# counts, a few LoRA steps, evaluation of the adapter loaded into the running student server.
# Environment knobs (all optional):
#   TEACHER (model dir; required on GPU unless TEACHER_URL), TEACHER_URL + TEACHER_API_KEY_ENV (the NAME
#   of the env var holding the key) + TEACHER_NAME for a hosted OpenAI-compatible API;
#   JUDGE_URL + JUDGE_MODEL + JUDGE_API_KEY_ENV (default: the teacher; a separate judge avoids self-preference);
#   FEEDBACK_FILE, GENERAL_PROMPTS, MAX_FEEDBACKS, NUM_PROMPTS (in/near/out-of-scope each), PROMPTS_PER_CATEGORY,
#   TEST_FRACTION, EVAL_LIMIT, EVAL_BASELINES (e.g. in_context,cot: also evaluate the prompting baselines),
#   NPROC, NNODES, STUDENT_DEVICES, TEACHER_DEVICES, TRAIN_DEVICES, TEACHER_TP, RUN_DIR, LOGGER.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/recipes/common.sh"
cd "$VK_REPO"

USAGE="usage: bash run_c3po.sh [student_model] [feedback_prefix] [lcdpo|dpo|sft|sft_neg] [-- trainer overrides]"
vk_begin c3po "$@"
set -- "${POSITIONAL[@]+"${POSITIONAL[@]}"}"

PREFIX="${2:-}"
METHOD="${3:-lcdpo}"
case "$METHOD" in lcdpo|dpo|sft|sft_neg) ;; *) vk_log "unknown method '$METHOD'. $USAGE"; exit 2 ;; esac
if [[ "$PROFILE" == cpu ]]; then
  STUDENT="${1:-$("$VK_PY" -m verlkit.models.local tiny)}"
  [[ -z "${TEACHER_URL:-}" ]] && TEACHER="${TEACHER:-$("$VK_PY" -m verlkit.models.local smollm2)}"
  NPROC="${NPROC:-1}"
  MAX_FEEDBACKS="${MAX_FEEDBACKS:-2}"
  NUM_PROMPTS="${NUM_PROMPTS:-8}"
  SAMPLE_ARGS=(--prompts-per-category "${PROMPTS_PER_CATEGORY:-4}" --test-fraction "${TEST_FRACTION:-0.25}"
               --teacher-max-tokens 512 --completion-max-tokens 48 --max-category-chars 40 --max-prompt-chars 80
               --max-response-chars 160)
  EVAL_ARGS=(--limit "${EVAL_LIMIT:-4}" --max-tokens 48 --judge-max-tokens 160)
  TEACHER_SERVE=(--max-model-len 2048); STUDENT_SERVE=(--max-model-len 2048)
else
  STUDENT="${1:?$USAGE}"
  [[ -n "${TEACHER_URL:-}" || -n "${TEACHER:-}" ]] || { vk_log "set TEACHER (a model directory) or TEACHER_URL (a hosted API). $USAGE"; exit 2; }
  mapfile -t ALL_GPUS < <(nvidia-smi --query-gpu=index --format=csv,noheader | tr -d ' ')
  STUDENT_DEVICES="${STUDENT_DEVICES:-${ALL_GPUS[-2]:-${ALL_GPUS[0]}}}"
  TEACHER_DEVICES="${TEACHER_DEVICES:-${ALL_GPUS[-1]}}"
  TRAIN_DEVICES="${TRAIN_DEVICES:-$(printf '%s\n' "${ALL_GPUS[@]}" | { grep -vxF -f <(tr ',' '\n' <<<"$STUDENT_DEVICES,$TEACHER_DEVICES") || true; } | paste -sd,)}"
  [[ -n "$TRAIN_DEVICES" ]] || { vk_log "no GPU left for training (student server: $STUDENT_DEVICES, teacher: $TEACHER_DEVICES)"; exit 2; }
  NPROC="${NPROC:-$(tr ',' '\n' <<<"$TRAIN_DEVICES" | grep -c .)}"
  NUM_PROMPTS="${NUM_PROMPTS:-960}"
  SAMPLE_ARGS=(--prompts-per-category "${PROMPTS_PER_CATEGORY:-32}" --test-fraction "${TEST_FRACTION:-0.1}" --request-seeds)
  EVAL_ARGS=(--limit "${EVAL_LIMIT:-75}" --max-tokens 512)
  TEACHER_SERVE=(--max-model-len 8192 --devices "$TEACHER_DEVICES" --tp "${TEACHER_TP:-1}" --gpu-memory-utilization 0.9)
  STUDENT_SERVE=(--max-model-len 4096 --devices "$STUDENT_DEVICES" --gpu-memory-utilization 0.9)
fi

# --- feedbacks ----------------------------------------------------------------------------------------
FB_ARGS=()
[[ -n "${FEEDBACK_FILE:-}" ]] && FB_ARGS+=(--feedback "$FEEDBACK_FILE")
mapfile -t SLUGS < <("$VK_PY" -m recipes.c3po.args select "${FB_ARGS[@]+"${FB_ARGS[@]}"}" ${PREFIX:+--prefix "$PREFIX"}) || exit 2
[[ -n "${MAX_FEEDBACKS:-}" ]] && SLUGS=("${SLUGS[@]:0:$MAX_FEEDBACKS}")
((${#SLUGS[@]})) || { vk_log "no feedback selected"; exit 2; }
vk_log "feedbacks: ${SLUGS[*]}; method: $METHOD"

# --- servers: the student writes the completions and serves the trained adapters; the teacher writes
# categories and prompts and (by default) judges -----------------------------------------------------------
vk_serve_start student "$STUDENT" --served-model-name student --enable-lora --max-lora-rank 64 "${STUDENT_SERVE[@]}"
if [[ -n "${TEACHER_URL:-}" ]]; then
  vk_serve_start teacher "${TEACHER:-external}" --external-url "$TEACHER_URL" ${TEACHER_NAME:+--served-model-name "$TEACHER_NAME"}
else
  vk_serve_start teacher "$TEACHER" --served-model-name teacher "${TEACHER_SERVE[@]}"
fi
vk_serve_wait student; STUDENT_URL="$VK_URL"; STUDENT_NAME="$VK_MODEL_NAME"
vk_serve_wait teacher; TEACHER_URL_USED="$VK_URL"; TEACHER_NAME_USED="$VK_MODEL_NAME"
JUDGE=(--judge-url "${JUDGE_URL:-$TEACHER_URL_USED}" --judge-model "${JUDGE_MODEL:-$TEACHER_NAME_USED}")
# a separate judge brings its own key; the default judge (the teacher) uses the teacher's
JUDGE_KEY_ENV="${JUDGE_API_KEY_ENV:-}"
[[ -z "${JUDGE_URL:-}" ]] && JUDGE_KEY_ENV="${TEACHER_API_KEY_ENV:-}"
[[ -n "$JUDGE_KEY_ENV" ]] && JUDGE+=(--judge-api-key-env "$JUDGE_KEY_ENV")

# --- sampling -------------------------------------------------------------------------------------------------
SAMPLE="$RUN_DIR/sample"
SAMPLE_CMD=(--out "$SAMPLE" --teacher-url "$TEACHER_URL_USED" --teacher-model "$TEACHER_NAME_USED"
            --completion-url "$STUDENT_URL" --completion-model "$STUDENT_NAME"
            --num-in-scope "$NUM_PROMPTS" --num-near-scope "$NUM_PROMPTS" --num-out-of-scope "$NUM_PROMPTS"
            "${SAMPLE_ARGS[@]}" "${FB_ARGS[@]+"${FB_ARGS[@]}"}")
[[ -n "$PREFIX" ]] && SAMPLE_CMD+=(--feedback-prefix "$PREFIX")
[[ -n "${TEACHER_API_KEY_ENV:-}" ]] && SAMPLE_CMD+=(--teacher-api-key-env "$TEACHER_API_KEY_ENV")
[[ -n "${GENERAL_PROMPTS:-}" ]] && SAMPLE_CMD+=(--general-prompts "$GENERAL_PROMPTS")
[[ -n "${MAX_FEEDBACKS:-}" ]] && SAMPLE_CMD+=(--max-feedbacks "$MAX_FEEDBACKS")
vk_log "sampling: python -m verlkit.c3po.sample ${SAMPLE_CMD[*]}"
"$VK_PY" -m verlkit.c3po.sample "${SAMPLE_CMD[@]}" || vk_log "sampling reported failures (see $SAMPLE/*/report.json)"

# --- per feedback: train a LoRA adapter, load it into the student server, evaluate --------------------------------
[[ "$PROFILE" == gpu ]] && export CUDA_VISIBLE_DEVICES="$TRAIN_DEVICES"
EVALUATED=0
for slug in "${SLUGS[@]}"; do
  work="$RUN_DIR/train/$slug"; mkdir -p "$work"
  if ! "$VK_PY" -m data_prep.c3po "$SAMPLE/$slug" --out "$work/train.parquet" >&2; then
    vk_log "$slug: no training data; skipped"; continue
  fi
  ROWS="$("$VK_PY" -m recipes.c3po.args rows "$work/train.parquet")"
  OVR=(--profile "$PROFILE" --method "$METHOD" --model "$STUDENT" --train "$work/train.parquet" --ckpt "$work/checkpoints"
       --nproc "$NPROC" --nnodes "${NNODES:-1}" --logger "${LOGGER:-console,wandb}" --experiment "$(basename "$RUN_DIR")-$slug")
  [[ "$PROFILE" == cpu ]] && OVR+=(--batch-rows "$(( ROWS < 12 ? ROWS : 12 ))")
  mapfile -t ARGS < <("$VK_PY" -m recipes.c3po.args overrides "${OVR[@]}")
  ((${#ARGS[@]})) || { vk_log "composing the trainer's overrides failed"; exit 1; }
  vk_log "$slug: torchrun -m verlkit.preference.train ${ARGS[*]} ${EXTRA[*]+"${EXTRA[*]}"}"
  vk_train "$work/train.log" "$VK_PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" \
    -m verlkit.preference.train "${ARGS[@]}" "${EXTRA[@]+"${EXTRA[@]}"}"
  "$VK_PY" -m verlkit.runs.summary "$work/train.log" --json "$work/metrics.json" --prefixes train/loss,pref/ >&2 || true
  # verl's merger writes the base weights and the adapter; only the adapter is new
  ckpt="$("$VK_PY" -m recipes.pipeline.args latest "$work/checkpoints")"
  "$VK_PY" -m verl.model_merger merge --backend fsdp --local_dir "$ckpt" --target_dir "$work/export" \
    >"$work/export.log" 2>&1 || { tail -n 30 "$work/export.log" >&2; exit 1; }
  rm -rf "$work/adapter"; mv "$work/export/lora_adapter" "$work/adapter"; rm -rf "$work/export"
  ADAPTER="c3po-$slug"
  "$VK_PY" -m recipes.c3po.args load-adapter "$STUDENT_URL" "$ADAPTER" "$work/adapter"
  vk_log "$slug: adapter $work/adapter loaded into the student server as '$ADAPTER'"
  "$VK_PY" -m verlkit.c3po.evaluate --sample-dir "$SAMPLE/$slug" --out "$RUN_DIR/eval/$slug" --method trained \
    --model-url "$STUDENT_URL" --model-name "$ADAPTER" --baseline-url "$STUDENT_URL" --baseline-name "$STUDENT_NAME" \
    "${JUDGE[@]}" "${EVAL_ARGS[@]}" && EVALUATED=$((EVALUATED + 1))
  IFS=, read -r -a BASELINES <<<"${EVAL_BASELINES:-}"
  for b in "${BASELINES[@]+"${BASELINES[@]}"}"; do
    "$VK_PY" -m verlkit.c3po.evaluate --sample-dir "$SAMPLE/$slug" --out "$RUN_DIR/eval/$slug" --method "$b" \
      "${JUDGE[@]}" "${EVAL_ARGS[@]}" || true
  done
done
"$VK_PY" -m recipes.c3po.args report "$RUN_DIR/eval"
((EVALUATED)) || { vk_log "no feedback was trained and evaluated"; exit 1; }
vk_log "evaluation JSON and plots: $RUN_DIR/eval/<feedback>/; run directory: $RUN_DIR"
