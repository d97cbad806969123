"""The SFT -> DPO -> reward model -> RLOO pipeline with a win-rate evaluation (``run_pipeline.sh``,
:mod:`recipes.pipeline.run`; stages and report: :mod:`recipes.pipeline.stages`). Its settings:
``recipes/pipeline/config/``."""
