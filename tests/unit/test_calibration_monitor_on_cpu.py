"""The training-time calibration monitor: per-step ECE/Brier/AUROC/confidence spread from the reward
columns, and the confidence-collapse alarm. Expected values are worked out by hand in the comments."""

from __future__ import annotations

import logging
import math

import pytest

from verlkit.plugin import calibration_monitor as cmon
from verlkit.plugin import step_metrics


def test_one_step_of_rlcr_rows():
    # parsed rows: conf [0.95, 0.75, 0.35, 0.55], right [1, 1, 0, 0]; the 5th did not parse (NaN)
    # mean 0.65; deviations ±0.3, ±0.1 -> population var (0.09+0.01+0.09+0.01)/4 = 0.05, std 0.223607
    # ECE: one row per bin -> (0.05 + 0.25 + 0.35 + 0.55)/4 = 0.3
    # Brier: (0.0025 + 0.0625 + 0.1225 + 0.3025)/4 = 0.1225; AUROC: every right row above every wrong one = 1
    out = cmon.step_calibration([0.95, 0.75, 0.35, 0.55, math.nan], [1.0, 1.0, 0.0, 0.0, 0.0])
    assert out == pytest.approx({
        "calibration/rows": 4.0, "calibration/accuracy": 0.5, "calibration/confidence_mean": 0.65,
        "calibration/confidence_std": 0.223607, "calibration/ece": 0.3, "calibration/brier": 0.1225,
        "calibration/auroc": 1.0,
    }, abs=1e-6)


def test_two_rows_in_one_bin_and_an_inverted_ranking():
    # both in (0.7, 0.8]: mean conf 0.75, accuracy 0.5 -> ECE 0.25; Brier (0.28² + 0.78²)/2 = 0.3434
    # the right row is less confident than the wrong one -> AUROC 0
    out = cmon.step_calibration([0.72, 0.78], [1.0, 0.0])
    assert out["calibration/ece"] == pytest.approx(0.25)
    assert out["calibration/brier"] == pytest.approx(0.3434)
    assert out["calibration/auroc"] == 0.0


def test_auroc_is_left_out_when_the_step_has_one_class_and_nothing_without_confidences():
    out = cmon.step_calibration([0.9, 0.8], [1.0, 1.0])
    assert "calibration/auroc" not in out and out["calibration/brier"] == pytest.approx((0.01 + 0.04) / 2)
    assert cmon.step_calibration([math.nan, math.nan], [0.0, 1.0]) == {}
    assert cmon.CalibrationMonitor().update({"acc": [1.0], "verifier_failed": [0.0]}) == {}


def test_collapse_alarm_after_patience_consecutive_low_std_steps(caplog):
    watch = cmon.CollapseWatch(std_min=0.05, patience=3)
    with caplog.at_level(logging.WARNING, logger="verlkit.calibration_monitor"):
        seen = [watch.observe(std) for std in (0.2, 0.01, 0.0, 0.04, 0.1, 0.0)]
    assert [m["calibration/low_std_steps"] for m in seen] == [0, 1, 2, 3, 0, 1]
    assert [m["calibration/collapse_warnings"] for m in seen] == [0, 0, 0, 1, 1, 1]
    warnings = [r for r in caplog.records if "collapsed" in r.getMessage()]
    assert len(warnings) == 1 and "3 consecutive steps" in warnings[0].getMessage()


def test_threshold_and_patience_come_from_the_environment(monkeypatch, caplog):
    monkeypatch.setenv(cmon.STD_MIN_ENV, "0.2")
    monkeypatch.setenv(cmon.PATIENCE_ENV, "1")
    monitor = cmon.CalibrationMonitor()
    # conf [0.5, 0.7]: std 0.1 < 0.2 -> the first step already warns
    out = monitor.update({"confidence": [0.5, 0.7], "acc": [1.0, 0.0]})
    assert out["calibration/confidence_std"] == pytest.approx(0.1)
    assert out["calibration/collapse_warnings"] == 1.0
    monkeypatch.setenv(cmon.PATIENCE_ENV, "three")
    with caplog.at_level(logging.ERROR, logger="verlkit.calibration_monitor"):
        assert cmon.CollapseWatch.from_env().patience == cmon.DEFAULT_PATIENCE
    assert "is not a number" in caplog.text


def test_step_metrics_add_the_monitor_next_to_the_reward_keys(monkeypatch):
    monkeypatch.setattr(step_metrics, "monitor", cmon.CalibrationMonitor(cmon.CollapseWatch(0.05, 2)))
    columns = {"confidence": [0.9, 0.9, math.nan], "acc": [1.0, 0.0, 0.0], "reward_error": [0.0, 0.0, 1.0]}
    first = step_metrics.step_metrics(columns)
    second = step_metrics.step_metrics(columns)
    assert first["reward/reward_error/count"] == 1.0 and first["reward/confidence/mean"] == pytest.approx(0.9)
    # both parsed rows state 0.9: std 0, one right one wrong -> ECE |0.9 - 0.5| = 0.4, AUROC ties = 0.5
    assert first["calibration/ece"] == pytest.approx(0.4) and first["calibration/auroc"] == 0.5
    assert first["calibration/collapse_warnings"] == 0.0 and second["calibration/collapse_warnings"] == 1.0
