"""The rubric recipes: RL scored by a rubric reward model or a TinyV verifier (``run_rubric.sh``,
:mod:`recipes.rubric.run`) and training the rubric reward model itself (``train_rrm.sh``,
:mod:`recipes.rubric.train_rrm`). Their settings: ``recipes/rubric/config/``."""
