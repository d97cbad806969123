"""Calibration metrics checked against independent computations (scikit-learn, a plain loop)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from verlkit import calibration_stats as cm
from verlkit.evaluation.reliability_plot import plot_reliability


def ece_reference(conf, correct, n_bins=10):
    """Plain loop over rows, bin edges as decimals i/10: (lo, hi], 0 into the first bin."""
    totals = [[0, 0.0, 0.0] for _ in range(n_bins)]  # count, sum conf, sum correct
    for c, y in zip(conf, correct):
        for i in range(n_bins):
            lo, hi = i / n_bins, (i + 1) / n_bins
            if lo < c <= hi or (i == 0 and c == 0):
                totals[i][0] += 1
                totals[i][1] += c
                totals[i][2] += float(y)
                break
    n = len(conf)
    return sum(cnt / n * abs(sc / cnt - sy / cnt) for cnt, sc, sy in totals if cnt)


def _data(seed, n=400, grid=False):
    rng = np.random.default_rng(seed)
    if grid:  # verbalized confidences are usually multiples of 0.05 or 0.1: bin edges matter
        conf = rng.integers(0, 21, n) * 5 / 100
    else:
        conf = rng.random(n)
    correct = rng.random(n) < conf * 0.8 + 0.1
    return conf, correct


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("grid", [False, True])
def test_ece_brier_auroc_match_independent_computations(seed, grid):
    conf, correct = _data(seed, grid=grid)
    assert cm.expected_calibration_error(conf, correct) == pytest.approx(ece_reference(conf, correct), abs=1e-12)
    assert cm.brier_score(conf, correct) == pytest.approx(np.mean([(c - y) ** 2 for c, y in zip(conf, correct)]))
    assert cm.auroc(conf, correct) == pytest.approx(roc_auc_score(correct, conf), abs=1e-12)


def test_bin_edges_are_left_open_right_closed():
    conf = np.array([0.0, 0.1, 0.1000001, 0.3, 0.7, 0.95, 1.0])
    assert cm.bin_index(conf).tolist() == [0, 0, 1, 2, 6, 9, 9]


@pytest.mark.parametrize("label", [True, False])
def test_single_class_edge_cases(label):
    conf = np.linspace(0, 1, 21)
    correct = np.full(conf.shape, label)
    assert math.isnan(cm.auroc(conf, correct))  # undefined with one class (documented)
    assert cm.expected_calibration_error(conf, correct) == pytest.approx(ece_reference(conf, correct))
    expected_brier = np.mean((conf - float(label)) ** 2)
    assert cm.brier_score(conf, correct) == pytest.approx(expected_brier)
    summary = cm.summary(conf, correct)
    assert summary["accuracy"] == float(label)


def test_perfectly_calibrated_and_worst_case():
    assert cm.expected_calibration_error([1.0, 1.0, 0.0, 0.0], [True, True, False, False]) == 0.0
    assert cm.expected_calibration_error([1.0, 1.0], [False, False]) == 1.0
    assert cm.brier_score([1.0, 0.0], [False, True]) == 1.0
    assert cm.auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert cm.auroc([0.5, 0.5], [True, False]) == 0.5  # a tie counts half


def test_report_all_vs_parseable():
    conf = [0.9, 0.6, math.nan, 0.2, math.nan]
    correct = [True, False, True, False, False]  # the unparseable "True" must not count as correct
    report = cm.calibration_report(conf, correct)
    assert report["n"] == 5
    assert report["parse_failure_rate"] == pytest.approx(0.4)
    assert report["parseable"]["n"] == 3
    assert report["parseable"]["accuracy"] == pytest.approx(1 / 3)
    assert report["all"]["accuracy"] == pytest.approx(1 / 5)
    assert report["all"]["mean_confidence"] == pytest.approx((0.9 + 0.6 + 0.2) / 5)
    all_conf = [0.9, 0.6, 0.0, 0.2, 0.0]
    all_corr = [True, False, False, False, False]
    assert report["all"]["ece"] == pytest.approx(ece_reference(all_conf, all_corr))
    assert report["all"]["brier"] == pytest.approx(np.mean([(c - y) ** 2 for c, y in zip(all_conf, all_corr)]))
    assert report["all"]["auroc"] == pytest.approx(roc_auc_score(all_corr, all_conf))
    assert report["all"]["bins"][0]["count"] == 2


def test_all_unparseable_report_is_json_safe():
    report = cm.calibration_report([math.nan] * 3, [False] * 3)
    assert report["parse_failure_rate"] == 1.0 and report["parseable"]["n"] == 0
    text = json.dumps(cm.to_json_safe(report), allow_nan=False)
    assert json.loads(text)["all"]["auroc"] is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="length"):
        cm.brier_score([0.5], [True, False])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cm.brier_score([1.5], [True])


def test_reliability_png(tmp_path):
    conf, correct = _data(0, grid=True)
    path = plot_reliability(cm.summary(conf, correct), str(tmp_path / "rel.png"), title="test")
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
