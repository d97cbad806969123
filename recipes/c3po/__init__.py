"""The C3PO recipe: sample -> train one LoRA adapter per feedback -> evaluate (``run_c3po.sh``,
:mod:`recipes.c3po.run`). Its settings: ``recipes/c3po/config/``."""
