"""verl's ``gdpo`` estimator over our rewards' score components, on the v1 trainer too.

``algorithm.adv_estimator=gdpo`` normalises each reward component (``algorithm.gdpo_reward_keys``,
keys of the reward result dict, e.g. RLCR's ``format_term``/``accuracy_term``/``brier_term``) within
its group before the weighted sum (``gdpo_reward_weights``). verl 0.9.1's estimator reads the
components from ``non_tensor_batch`` and each row's last response position from ``prompts`` and
``attention_mask``. The legacy trainer hands it all three; the v1 trainer (verl's default, and the
CPU profile's) hands it only the uids and the response tensors, since the reward results stay in
TransferQueue under ``extra_fields.reward_extra_info``, so ``gdpo`` stops there with an
AssertionError. Two wraps close that gap; nothing changes for any other estimator:

1. the v1 trainer's ``_compute_advantage``: with ``adv_estimator=gdpo`` it reads the batch's
   components from ``reward_extra_info`` for the estimator, and adds ``gdpo/<key>/mean|std|min|max``
   (what the legacy trainer logs) and ``gdpo/filled_components`` to the step's metrics;
2. the registered ``gdpo`` estimator: takes the components from there when the batch lacks them,
   uses the response mask for the positions when the batch has no prompts (only the sum over the
   response matters to an outcome estimator), and replaces a component that is NaN on a row (the
   registry's value for a key that does not apply to the row's source, or a row whose reward
   failed) by its group's mean over the rows that have it, so that this component adds nothing to
   the row's advantage instead of turning the whole batch's advantages into NaN. The fills are
   counted (``gdpo/filled_components``) and the first one is logged.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import math
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger("verlkit.gdpo")
ESTIMATOR = "gdpo"

# What the v1 trainer's wrap hands to the estimator's wrap within one _compute_advantage call.
_pending: contextvars.ContextVar[dict | None] = contextvars.ContextVar("verlkit_gdpo_components", default=None)
_warned = {"filled": False}


def fill_missing_by_group(values: Sequence[float], index: Sequence[Any]) -> tuple[np.ndarray, int]:
    """``values`` with each NaN replaced by the mean of its group's finite values (0.0 when the group
    has none), and the number of values replaced."""
    out = np.asarray(values, dtype=np.float64).copy()
    missing = ~np.isfinite(out)
    if not missing.any():
        return out, 0
    groups = np.asarray([str(i) for i in index], dtype=object)
    for group in set(groups[missing]):
        rows = groups == group
        present = out[rows & ~missing]
        out[rows & missing] = float(present.mean()) if present.size else 0.0
    return out, int(missing.sum())


def components_from_infos(infos: Sequence[dict], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """``{key: per-row values}`` from the rows' reward results (NaN where a row lacks the key)."""
    def value(info: dict, key: str) -> float:
        raw = info.get(key) if isinstance(info, dict) else None
        try:
            return float(raw)
        except (TypeError, ValueError):
            return math.nan

    return {key: np.asarray([value(info, key) for info in infos], dtype=np.float64) for key in keys}


def pending_components() -> dict[str, np.ndarray] | None:
    """The components of the batch whose advantages the v1 trainer is computing now, if gdpo."""
    pending = _pending.get()
    return pending.get("components") if pending else None


def _is_gdpo(name: Any) -> bool:
    return str(getattr(name, "value", name)) == ESTIMATOR


def _wrap_estimator(core_algos) -> None:
    original = core_algos.ADV_ESTIMATOR_REGISTRY[ESTIMATOR]
    if getattr(original, "_verlkit", False):
        return

    @functools.wraps(original)
    def gdpo(token_level_rewards, response_mask, index, *args, config=None, non_tensor_batch=None, batch=None,
             **kwargs):
        keys = list((config.get("gdpo_reward_keys", None) if config is not None else None) or [])
        if keys and non_tensor_batch is not None and batch is not None:
            pending = _pending.get() or {}
            columns = dict(non_tensor_batch)
            for key in keys:
                if key not in columns and key in pending.get("components", {}):
                    columns[key] = pending["components"][key]
            absent = [k for k in keys if k not in columns]
            if absent:
                raise ValueError(f"algorithm.gdpo_reward_keys names {absent}, which the reward results do not "
                                 "have; the rewards' score components are listed in docs/calibration.md and "
                                 "docs/verifier-rewards.md")
            filled_total = 0
            for key in keys:
                columns[key], filled = fill_missing_by_group(columns[key], index)
                filled_total += filled
            pending["filled"] = pending.get("filled", 0) + filled_total
            if filled_total and not _warned["filled"]:
                _warned["filled"] = True
                logger.warning("gdpo: %d component value(s) were missing (NaN) and count as their group's mean "
                               "(further fills are counted in gdpo/filled_components)", filled_total)
            non_tensor_batch = columns
            if "prompts" not in batch.keys() or "attention_mask" not in batch.keys():
                batch = {"prompts": response_mask[:, :0], "attention_mask": response_mask.long()}
        return original(token_level_rewards, response_mask, index, *args, config=config,
                        non_tensor_batch=non_tensor_batch, batch=batch, **kwargs)

    gdpo._verlkit = True
    core_algos.ADV_ESTIMATOR_REGISTRY[ESTIMATOR] = gdpo


def _patch_v1_trainer(module) -> None:
    cls = module.PPOTrainer
    original = cls._compute_advantage
    if getattr(original, "_verlkit", False):
        return

    @functools.wraps(original)
    def _compute_advantage(self, batch, metrics, *args, **kwargs):
        algorithm = self.config.algorithm
        keys = list(algorithm.get("gdpo_reward_keys", None) or [])
        if not (_is_gdpo(algorithm.adv_estimator) and keys):
            return original(self, batch, metrics, *args, **kwargs)
        data = module.tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
        infos = [(f.get("reward_extra_info") or {}) if isinstance(f, dict) else {}
                 for f in data.pop("extra_fields").tolist()]
        pending = {"components": components_from_infos(infos, keys), "filled": 0}
        token = _pending.set(pending)
        try:
            result = original(self, batch, metrics, *args, **kwargs)
        finally:
            _pending.reset(token)
        real = np.array([not tag.get("is_padding", False) for tag in batch.tags], dtype=bool)
        for key, values in pending["components"].items():
            values = values[real & np.isfinite(values)]
            if values.size:
                metrics.update({f"gdpo/{key}/mean": float(values.mean()), f"gdpo/{key}/std": float(values.std()),
                                f"gdpo/{key}/min": float(values.min()), f"gdpo/{key}/max": float(values.max())})
        metrics["gdpo/filled_components"] = float(pending["filled"])
        return result

    _compute_advantage._verlkit = True
    cls._compute_advantage = _compute_advantage


def arm(on_import) -> None:
    on_import("verl.trainer.ppo.core_algos", _wrap_estimator)
    on_import("verl.trainer.ppo.v1.trainer_base", _patch_v1_trainer)
