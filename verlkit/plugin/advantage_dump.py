"""Record each training step's per-sample scores and advantages, to check an estimator on real batches.

With ``VERLKIT_ADVANTAGE_DUMP=<file.jsonl>`` set in the trainer's environment, verl's (v1) trainer
appends one JSON line per sample and step after it computed advantages:
``{"step", "uid", "score", "advantage", "response_tokens"}``, where ``score`` is the sample's summed
token-level reward (what the estimator saw) and ``advantage`` its advantage at the first response
token (outcome estimators such as GRPO and RLOO broadcast one value over the response). With
``adv_estimator=gdpo`` each record also has ``"components": {key: value}``, the score components the
estimator normalised (``verlkit.plugin.gdpo_components``). The pipeline's tests use it to check RLOO's
leave-one-out formula on the batches of a real run, the gdpo tests the per-component normalisation.
Unset (the default), nothing is patched.
"""

from __future__ import annotations

import functools
import json
import logging
import os

from verlkit.plugin import gdpo_components

logger = logging.getLogger("verlkit.advantage_dump")
DUMP_ENV = "VERLKIT_ADVANTAGE_DUMP"


def records(data, step: int, components: dict | None = None) -> list[dict]:
    """Per-sample records of a ``DataProto`` that has advantages, rewards, a response mask and uids;
    ``components``: ``{key: per-row values}`` to add to each record."""
    batch = data.batch
    mask = batch["response_mask"].bool()
    first = mask.float().argmax(dim=1)
    rows = range(mask.shape[0])
    scores = batch["token_level_rewards"].sum(-1)
    advantages = batch["advantages"][rows, first]
    uids = data.non_tensor_batch["uid"]
    out = [
        {"step": step, "uid": str(uids[i]), "score": float(scores[i]), "advantage": float(advantages[i]),
         "response_tokens": int(mask[i].sum())}
        for i in rows
    ]  # fmt: skip
    for key, values in (components or {}).items():
        for rec, value in zip(out, values):
            rec.setdefault("components", {})[key] = float(value)
    return out


def _patch_v1_trainer(module) -> None:
    original = module.compute_advantage_for_multi_trajectories
    if getattr(original, "_verlkit", False):
        return
    path = os.environ[DUMP_ENV]
    calls = {"n": 0}

    @functools.wraps(original)
    def compute_advantage_for_multi_trajectories(data, *args, **kwargs):
        out = original(data, *args, **kwargs)
        calls["n"] += 1
        try:
            pending = gdpo_components.pending_components()
            with open(path, "a") as f:
                for rec in records(out, calls["n"], pending):
                    f.write(json.dumps(rec) + "\n")
        except Exception:  # a diagnostic must never break training
            logger.exception("could not write the advantage dump to %s", path)
        return out

    compute_advantage_for_multi_trajectories._verlkit = True
    module.compute_advantage_for_multi_trajectories = compute_advantage_for_multi_trajectories


def arm(on_import) -> None:
    if os.environ.get(DUMP_ENV):
        on_import("verl.trainer.ppo.v1.trainer_base", _patch_v1_trainer)
