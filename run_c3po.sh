#!/usr/bin/env bash
# C3PO: learning from one sentence of feedback without overgeneralization (sample -> train -> evaluate).
# Not built yet: the constrained preference loss exists (verl/trainer/preference_trainer.py, see
# docs/preference-trainer.md); the sampling stage, the evaluation and this driver are still open work.
echo "run_c3po.sh: the C3PO recipe is not implemented yet (see docs/preference-trainer.md for the trainer that exists)" >&2
exit 2
