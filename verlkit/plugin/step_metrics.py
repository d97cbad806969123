"""Turn the reward results' extra keys into per-step training metrics.

verl 0.9.1 stores every key of a reward result dict with the batch but logs them only for
validation. Verifier failure rates, cache hits or parse rates are what a user needs to watch
*during* training, so this hook adds ``reward/<key>/mean`` (NaN-aware: rows where a key does not
apply are skipped) and, for the failure flags in ``COUNTED``, ``reward/<key>/count`` to every training
step's metrics (an outage of 3 rows in 512 is a count to see, not a mean of 0.994); success flags
(``parse_ok``) also get the count of their failures (``reward/parse_fail/count``).
Rows that state a confidence also feed the calibration monitor (``calibration/*``, see
``verlkit.plugin.calibration_monitor``). It wraps the v1 trainer's metric computation and the legacy
trainer's ``compute_data_metrics``; both keep their behaviour and only gain keys.
"""

from __future__ import annotations

import functools
import logging
from typing import Any, Iterable, Mapping

import numpy as np

from verlkit.plugin.calibration_monitor import monitor

logger = logging.getLogger("verlkit.reward_metrics")

# Counted (as well as averaged): flags whose absolute number matters when they are rare. Each is a key some
# registered reward returns (tests/unit/test_step_metrics_on_cpu.py checks it against the registry).
# sent_to_verifier / sent_to_rubric: setup=hybrid's load on each model, as numbers of samples.
COUNTED = ("reward_error", "verifier_failed", "downstream_failed", "rm_failed", "rule_failed", "cache_hit",
           "sent_to_verifier", "sent_to_rubric")
# Failures counted from the success flag rewards return: ``reward/parse_fail/count`` = rows with parse_ok 0.
COUNTED_FAILURES_OF = {"parse_ok": "parse_fail", "format_ok": "format_fail"}


def summarize(columns: Mapping[str, Iterable[Any]]) -> dict[str, float]:
    """``{key: values}`` -> ``{"reward/<key>/mean": ..., "reward/<key>/count": ...}``."""
    out: dict[str, float] = {}
    for key, values in columns.items():
        try:
            arr = np.asarray(list(values), dtype=np.float64)
        except (TypeError, ValueError):
            continue  # not numeric: nothing to average
        if arr.size == 0:
            continue
        valid = ~np.isnan(arr)
        if not valid.any():
            continue
        out[f"reward/{key}/mean"] = float(arr[valid].mean())
        if key in COUNTED:
            out[f"reward/{key}/count"] = float(arr[valid].sum())
        if key in COUNTED_FAILURES_OF:
            out[f"reward/{COUNTED_FAILURES_OF[key]}/count"] = float((arr[valid] == 0).sum())
    return out


def step_metrics(columns: Mapping[str, Iterable[Any]]) -> dict[str, float]:
    """Everything this hook adds to one training step, from the step's reward columns."""
    columns = {k: list(v) for k, v in columns.items()}
    out = summarize(columns)
    try:
        out.update(monitor.update(columns))
    except Exception:  # metrics must never break training
        logger.exception("could not compute the calibration monitor's step metrics")
    return out


def _schema_keys() -> list[str]:
    from verl.utils.reward_score.registry import result_keys

    return [k for k in result_keys() if k != "score"]


def _patch_v1_trainer(module) -> None:
    cls = module.PPOTrainer
    original = cls._compute_metrics
    if getattr(original, "_verlkit", False):
        return

    @functools.wraps(original)
    def _compute_metrics(self, batch, metrics, *args, **kwargs):
        result = original(self, batch, metrics, *args, **kwargs)
        try:
            metrics.update(_v1_reward_metrics(module.tq, batch))
        except Exception:  # metrics must never break training
            logger.exception("could not compute reward step metrics")
        return result

    _compute_metrics._verlkit = True
    cls._compute_metrics = _compute_metrics


def _v1_reward_metrics(tq, batch) -> dict[str, float]:
    # The v1 trainer scores inside the agent loop and keeps each sample's reward result under
    # extra_fields["reward_extra_info"].
    mask = np.array([not tag.get("is_padding", False) for tag in batch.tags], dtype=bool)
    data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
    infos = [
        (f.get("reward_extra_info") or {}) if isinstance(f, dict) else {}
        for f, keep in zip(data.pop("extra_fields").tolist(), mask if mask.any() else [True] * len(mask))
        if keep
    ]
    keys = _schema_keys()
    return step_metrics({k: [info.get(k, np.nan) for info in infos] for k in keys if any(k in i for i in infos)})


def _patch_legacy_trainer(module) -> None:
    original = module.compute_data_metrics
    if getattr(original, "_verlkit", False):
        return

    @functools.wraps(original)
    def compute_data_metrics(batch, *args, **kwargs):
        metrics = original(batch, *args, **kwargs)
        keys = [k for k in _schema_keys() if k in batch.non_tensor_batch]
        metrics.update(step_metrics({k: batch.non_tensor_batch[k] for k in keys}))
        return metrics

    compute_data_metrics._verlkit = True
    module.compute_data_metrics = compute_data_metrics


def arm(on_import) -> None:
    on_import("verl.trainer.ppo.v1.trainer_base", _patch_v1_trainer)
    on_import("verl.trainer.ppo.ray_trainer", _patch_legacy_trainer)
