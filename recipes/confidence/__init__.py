"""The confidence recipe: GRPO for calibrated verbalized confidence (``run_confidence.sh``,
:mod:`recipes.confidence.run`). Its settings: ``recipes/confidence/config/``."""
