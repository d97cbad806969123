#!/usr/bin/env bash
# GRPO for calibrated verbalized confidence on MedMCQA-format data, then export, serve and evaluate.
#
#   bash run_confidence.sh [policy_model] [design cgp|rlcr] [downstream_model] [epochs] [-- hydra overrides...]
#
# cgp (Prompt4Trust): the policy writes a hint, a frozen downstream model answers with a confidence and
# is scored (the downstream model is served by us, or a hosted API). rlcr: the policy answers and states
# its own confidence. See docs/calibration.md.
# With no arguments on a machine without a GPU: the CPU default (the tiny local policy, SmolLM2-135M-
# Instruct as the downstream model on the CPU build of vLLM, the bundled MedMCQA-format sample, a few
# GRPO steps, export, evaluation on dev with a reliability diagram).
# Settings: recipes/confidence/config/confidence.yaml (GPU), confidence_cpu.yaml, design/{cgp,rlcr}.yaml;
# any of them after `--` (docs/recipes.md).
# Environment knobs (all optional; aliases of settings, see recipes/confidence/run.py): MEDMCQA_DIR (real
# train.json/dev.json), TRAIN_SIZE, DEV_SIZE, VARIANT=log|log_penalized|brier, RUN_DIR, STEPS, LOGGER,
# N_GPUS_PER_NODE, NNODES, TRAIN_DEVICES / DOWNSTREAM_DEVICES (disjoint CUDA device lists; default: the
# last GPU serves the downstream model), DOWNSTREAM_TP, DOWNSTREAM_GPU_MEM, DOWNSTREAM_MAX_MODEL_LEN,
# DOWNSTREAM_URL (+ DOWNSTREAM_API_KEY_ENV = the NAME of the env var holding the key,
# DOWNSTREAM_RATE_LIMIT_RPS; the model name is the downstream_model argument) for a hosted API; the
# downstream_model gpt-4o-mini-2024-07-18 or gemini-2.0-flash-001 is a hosted preset (OPENAI_API_KEY /
# GEMINI_API_KEY; recipes/confidence/hosted.py), DOWNSTREAM_TEMPLATE_FILE (the downstream prompt),
# DOWNSTREAM_CONSTRAINED=true|false (vLLM structured outputs for the downstream reply in training and
# evaluation; on in the CPU profile), POLICY_DEVICES, EVAL_LIMIT, DOWNSTREAM_BACKEND=launcher|managed|external (managed: verl serves the cgp
# downstream model behind its router during training, docs/gpu.md), ALGORITHM=grpo|gdpo (gdpo:
# per-component advantages over the design's score components), CALIBRATION_MONITOR=true|false,
# VERLKIT_CONFIDENCE_STD_MIN, VERLKIT_CONFIDENCE_COLLAPSE_STEPS (the collapse alarm). RAY_ADDRESS joins
# an existing Ray cluster.
cd "$(dirname "${BASH_SOURCE[0]}")" && exec "${VK_PYTHON:-python}" -m recipes.confidence "$@"
