#!/usr/bin/env bash
# C3PO: learn one sentence of feedback without overgeneralizing — sample -> train -> evaluate.
#
#   bash run_c3po.sh [student_model] [feedback_prefix] [method] [second_feedback_prefix] [-- overrides...]
#
# second_feedback_prefix (or SECOND_FEEDBACK_PREFIX; the original's --second_feedback_prefix): the first
# feedback each prefix selects gets its own adapter, and one more adapter is trained on their combined
# data and evaluated on both (MERGE_ADAPTERS=1: also their two own adapters concatenated). FEEDBACK_CATEGORY (scope/type, e.g. quantitative) selects beside the prefix.
# SWEEP_PARAMS=optim.lr,model.lora_rank SWEEP_VALUES="(1e-4,8),(5e-4,16)": one run directory per point
# (RUN_DIR/sweep/<point>/), the sampled data shared. RUN_DIR/comparison.{md,json,png} compares them all.
#
# method: lcdpo (C3PO, default) | dpo | sft | sft_neg (see recipes/c3po/run.py). feedback_prefix
# selects feedbacks whose name or content starts with it (all of FEEDBACK_FILE when empty). One LoRA
# adapter is trained and evaluated per feedback.
# With no arguments on a machine without a GPU: the CPU default — the tiny local model as the student
# (it also writes the completions, as the original's completion model is the trained model),
# SmolLM2-135M-Instruct as teacher and judge on the CPU build of vLLM (replies constrained to the
# expected formats), the first two bundled feedbacks (one qualitative, one quantitative), small
# counts, a few LoRA steps, evaluation of the adapter loaded into the running student server.
# Settings: recipes/c3po/config/c3po.yaml (GPU; on the preference trainer's config), c3po_cpu.yaml,
# method/*.yaml; any of them after `--`, e.g. `-- optim.lr=1e-4 recipe.eval.limit=20` (docs/recipes.md).
# Environment knobs (all optional; aliases of settings, see recipes/c3po/run.py):
#   TEACHER (model dir; required on GPU unless TEACHER_URL), TEACHER_URL + TEACHER_API_KEY_ENV (the NAME
#   of the env var holding the key) + TEACHER_NAME for a hosted OpenAI-compatible API;
#   JUDGE_URL + JUDGE_MODEL + JUDGE_API_KEY_ENV (default: the teacher; a separate judge avoids self-preference);
#   JUDGE_CONSTRAINED=auto|on|off (the judge's verdict lines by vLLM structured outputs; auto: on for our servers);
#   FEEDBACK_FILE, GENERAL_PROMPTS, MAX_FEEDBACKS, NUM_PROMPTS (in/near/out-of-scope each), PROMPTS_PER_CATEGORY,
#   TEST_FRACTION, EVAL_LIMIT, EVAL_BASELINES (e.g. in_context,cot: also evaluate the prompting baselines),
#   NPROC, NNODES, STUDENT_DEVICES, TEACHER_DEVICES, TRAIN_DEVICES, TEACHER_TP, RUN_DIR, LOGGER.
cd "$(dirname "${BASH_SOURCE[0]}")" && exec "${VK_PYTHON:-python}" -m recipes.c3po "$@"
