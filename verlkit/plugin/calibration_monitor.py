"""Calibration of the rollouts at every training step, and an alarm when stated confidences collapse.

For rows whose reward result carries a ``confidence`` (the ``cgp`` and ``rlcr`` rewards), the step
metrics gain, over the rows of the step whose confidence parsed:

- ``calibration/ece`` (10 equal-width bins), ``calibration/brier``, ``calibration/auroc`` (only when
  the step has both right and wrong rows: it is undefined otherwise), with the definitions of
  ``verlkit.calibration_stats`` (the same as the evaluation CLI's);
- ``calibration/confidence_mean``, ``calibration/confidence_std`` (population std), ``calibration/accuracy``,
  ``calibration/rows``;
- ``calibration/low_std_steps``: how many consecutive steps, this one included, had a confidence std
  below the threshold; ``calibration/collapse_warnings``: how many steps of the run so far logged the
  collapse warning.

RLCR's authors name the collapse of stated confidences to one value as the method's main failure;
a run that collapses still looks healthy on reward and accuracy. Once the std stayed below
``VERLKIT_CONFIDENCE_STD_MIN`` (default 0.05) for ``VERLKIT_CONFIDENCE_COLLAPSE_STEPS`` (default 3)
consecutive steps, every such step logs a warning and counts it. ``VERLKIT_CALIBRATION_MONITOR=0``
turns the monitor off. The variables are read in the trainer's driver process, where the step metrics
are computed; ``run_confidence.sh`` sets them from its config (``recipe.calibration_monitor``).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from verlkit import calibration_stats

logger = logging.getLogger("verlkit.calibration_monitor")

ENABLED_ENV = "VERLKIT_CALIBRATION_MONITOR"
STD_MIN_ENV = "VERLKIT_CONFIDENCE_STD_MIN"
PATIENCE_ENV = "VERLKIT_CONFIDENCE_COLLAPSE_STEPS"
DEFAULT_STD_MIN = 0.05
DEFAULT_PATIENCE = 3


def enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Off only when ``VERLKIT_CALIBRATION_MONITOR`` says so (0, false, no, off)."""
    return environ.get(ENABLED_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def step_calibration(confidence: Iterable[Any], correct: Iterable[Any]) -> dict[str, float]:
    """The calibration metrics of one step's rows (rows without a finite confidence are skipped)."""
    conf = np.asarray(list(confidence), dtype=np.float64)
    corr = np.asarray(list(correct), dtype=np.float64)
    keep = np.isfinite(conf) & np.isfinite(corr)
    conf, corr = np.clip(conf[keep], 0.0, 1.0), corr[keep] >= 0.5
    if conf.size == 0:
        return {}
    out = {
        "calibration/rows": float(conf.size),
        "calibration/accuracy": float(corr.mean()),
        "calibration/confidence_mean": float(conf.mean()),
        "calibration/confidence_std": float(conf.std()),
        "calibration/ece": calibration_stats.expected_calibration_error(conf, corr),
        "calibration/brier": calibration_stats.brier_score(conf, corr),
    }
    auroc = calibration_stats.auroc(conf, corr)
    if not math.isnan(auroc):
        out["calibration/auroc"] = auroc
    return out


@dataclass
class CollapseWatch:
    """Counts consecutive steps whose confidence std is below ``std_min``; warns from ``patience`` on."""

    std_min: float = DEFAULT_STD_MIN
    patience: int = DEFAULT_PATIENCE
    streak: int = 0
    warnings: int = 0

    @classmethod
    def from_env(cls) -> "CollapseWatch":
        def read(name: str, default: float, kind: type) -> Any:
            raw = os.environ.get(name, "").strip()
            try:
                return kind(raw) if raw else kind(default)
            except ValueError:
                logger.error("%s=%r is not a number; using %s", name, raw, default)
                return kind(default)

        return cls(std_min=read(STD_MIN_ENV, DEFAULT_STD_MIN, float), patience=max(1, read(PATIENCE_ENV, DEFAULT_PATIENCE, int)))

    def observe(self, std: float) -> dict[str, float]:
        self.streak = self.streak + 1 if std < self.std_min else 0
        if self.streak >= self.patience:
            self.warnings += 1
            logger.warning(
                "stated confidences have collapsed: their std was below %.3g for %d consecutive steps (now %.4g); "
                "the policy is stating nearly one confidence for everything (%s / %s set the alarm)",
                self.std_min, self.streak, std, STD_MIN_ENV, PATIENCE_ENV)
        return {"calibration/low_std_steps": float(self.streak), "calibration/collapse_warnings": float(self.warnings)}


class CalibrationMonitor:
    """Per-process state of the monitor (the driver computes every step's metrics)."""

    def __init__(self, watch: CollapseWatch | None = None):
        self.watch = watch

    def update(self, columns: Mapping[str, Iterable[Any]]) -> dict[str, float]:
        """Metrics of one training step from its reward columns (``confidence``, ``acc``)."""
        if "confidence" not in columns or "acc" not in columns or not enabled():
            return {}
        metrics = step_calibration(columns["confidence"], columns["acc"])
        if not metrics:
            return {}
        if self.watch is None:
            self.watch = CollapseWatch.from_env()
        metrics.update(self.watch.observe(metrics["calibration/confidence_std"]))
        return metrics


monitor = CalibrationMonitor()
