#!/usr/bin/env bash
# SFT -> DPO -> Bradley–Terry reward model -> RLOO -> win rate against a reference, one command.
#
#   bash run_pipeline.sh [base_model] [reference_model] [-- overrides...]
#
# With no arguments on a machine without a GPU: every stage on the tiny local model and the bundled
# samples (data_prep/assets/pipeline), one process, a few steps each, in minutes.
# On GPUs: base_model (e.g. a Qwen2.5-0.5B directory) and reference_model (e.g. Qwen2.5-0.5B-Instruct)
# are required.
# Settings: recipes/pipeline/config/pipeline.yaml and one config per stage trainer (sft, dpo, rm, rloo;
# each with a _cpu variant). Overrides after `--`: `recipe.*` ones set the pipeline's settings,
# `<stage>.key=value` one stage's trainer (e.g. `rloo.trainer.save_freq=5`), others every stage's trainer
# (docs/recipes.md).
# Environment knobs (all optional; aliases of settings, see recipes/pipeline/run.py):
#   STAGES=prep,sft,dpo,rm,rloo,eval   stages to run; a skipped stage's output must already be in RUN_DIR
#   RUN_DIR                            reuse a directory (e.g. to run STAGES=eval again)
#   SMOLTALK, UF_TRAIN, UF_TEST        input files (SmolTalk-style chats, UltraFeedback-style pairs)
#   SFT_SIZE, DPO_SIZE, RM_TEST_SIZE, RL_SIZE, EVAL_SIZE, SEED   deterministic subsets (data_prep.pipeline)
#   RLOO_INIT=sft|dpo                  the model RLOO starts from (default sft)
#   EVAL_MODELS=sft,dpo,rloo           trained models compared with the reference (CPU default: rloo)
#   NPROC (processes/GPUs per node), NNODES, TORCHRUN (the launcher command for sft/dpo/rm), STEPS, LOGGER
#   RM_DEVICES (GPU of the served reward model; default the last GPU), TRAIN_DEVICES (the others),
#   RM_GPU_MEM, RM_BACKEND=launcher|managed (managed: verl serves the reward model during RLOO, docs/pipeline.md),
#   EVAL_MAX_TOKENS, EVAL_TEMPERATURE, TIE_BAND. RAY_ADDRESS joins an existing Ray cluster.
#   EVAL_JUDGE_URL + EVAL_JUDGE_MODEL (+ EVAL_JUDGE_API_KEY_ENV: the NAME of the env var with the key,
#   EVAL_JUDGE_RPS): score the evaluation with a hosted reward judge answering "reward:<float>"
#   (e.g. nvidia/llama-3.1-nemotron-70b-reward) instead of the trained reward model.
cd "$(dirname "${BASH_SOURCE[0]}")" && exec "${VK_PYTHON:-python}" -m recipes.pipeline "$@"
