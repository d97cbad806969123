"""Calibration metrics for verbalized confidence (pure numpy; a leaf, so that both the evaluation CLI
and the training-time monitor ``verlkit.plugin.calibration_monitor`` use the same definitions).

Inputs per row: ``confidence`` in [0, 1] (NaN when the reply did not parse), ``correct`` (bool) and,
optionally, ``parsed`` (bool; default: confidence is not NaN).

Two views, both reported by :func:`calibration_report`:

* ``all``: every row. An unparseable row counts as **wrong with confidence 0** (the seed used
  1e-12, the same bin and the same Brier term up to 1e-24). It therefore lowers accuracy and lands
  in the first ECE bin.
* ``parseable``: only rows whose reply parsed.

Definitions:

* ECE: 10 equal-width bins; bin i covers (i/10, (i+1)/10], the first bin also includes 0;
  ECE = sum_b (|b| / N) · |mean confidence_b - accuracy_b|.
* Brier: mean((confidence - correct)^2).
* AUROC: probability that a random correct row has a higher confidence than a random wrong row
  (ties count 1/2), i.e. the area under the ROC of confidence as a score for correctness.
  **NaN when only one class is present** (all correct or all wrong): it is undefined there, and
  0.5 would look like a measured "no discrimination". JSON output writes NaN as null.
* parse_failure_rate: share of rows that did not parse (reported on ``all``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

NUM_BINS = 10


def _arrays(confidence: Sequence[float], correct: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=float).reshape(-1)
    corr = np.asarray(correct, dtype=float).reshape(-1)
    if conf.shape != corr.shape:
        raise ValueError(f"confidence and correct differ in length: {conf.shape[0]} vs {corr.shape[0]}")
    if np.any(np.isnan(conf)):
        raise ValueError("confidence contains NaN; use calibration_report for unparseable rows")
    if np.any((conf < 0) | (conf > 1)):
        raise ValueError("confidence must lie in [0, 1]")
    return conf, corr


def bin_edges(num_bins: int = NUM_BINS) -> np.ndarray:
    return np.linspace(0.0, 1.0, num_bins + 1)


def bin_index(confidence: np.ndarray, num_bins: int = NUM_BINS) -> np.ndarray:
    """Bin of each confidence: i such that edges[i] < c <= edges[i+1]; c == 0 goes to bin 0."""
    edges = bin_edges(num_bins)
    # searchsorted(side="left") gives the first edge >= c, so c sits in (edges[j-1], edges[j]].
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, num_bins - 1)


def reliability_bins(confidence, correct, num_bins: int = NUM_BINS) -> list[dict[str, float]]:
    """Per bin: lo, hi, count, mean confidence and accuracy (NaN for empty bins)."""
    conf, corr = _arrays(confidence, correct)
    edges = bin_edges(num_bins)
    idx = bin_index(conf, num_bins)
    bins = []
    for b in range(num_bins):
        mask = idx == b
        n = int(mask.sum())
        bins.append({
            "lo": float(edges[b]),
            "hi": float(edges[b + 1]),
            "count": n,
            "confidence": float(conf[mask].mean()) if n else math.nan,
            "accuracy": float(corr[mask].mean()) if n else math.nan,
        })
    return bins


def expected_calibration_error(confidence, correct, num_bins: int = NUM_BINS) -> float:
    conf, corr = _arrays(confidence, correct)
    if conf.size == 0:
        return math.nan
    total = 0.0
    for b in reliability_bins(conf, corr, num_bins):
        if b["count"]:
            total += b["count"] / conf.size * abs(b["confidence"] - b["accuracy"])
    return float(total)


def brier_score(confidence, correct) -> float:
    conf, corr = _arrays(confidence, correct)
    return float(np.mean((conf - corr) ** 2)) if conf.size else math.nan


def auroc(confidence, correct) -> float:
    """Mann-Whitney estimate with average ranks for ties; NaN if only one class is present."""
    conf, corr = _arrays(confidence, correct)
    positives = corr > 0.5
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(conf, kind="mergesort")
    ranks = np.empty(conf.size, dtype=float)
    sorted_conf = conf[order]
    i = 0
    while i < conf.size:  # average rank over each run of tied confidences
        j = i
        while j + 1 < conf.size and sorted_conf[j + 1] == sorted_conf[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = ranks[positives].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def summary(confidence, correct, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """Accuracy, ECE, Brier, AUROC, confidence mean/std and the bins for a set of parsed rows."""
    conf, corr = _arrays(confidence, correct)
    n = int(conf.size)
    return {
        "n": n,
        "accuracy": float(corr.mean()) if n else math.nan,
        "ece": expected_calibration_error(conf, corr, num_bins),
        "brier": brier_score(conf, corr),
        "auroc": auroc(conf, corr),
        "mean_confidence": float(conf.mean()) if n else math.nan,
        "std_confidence": float(conf.std()) if n else math.nan,
        "bins": reliability_bins(conf, corr, num_bins),
    }


def calibration_report(confidence, correct, parsed=None, num_bins: int = NUM_BINS) -> dict[str, Any]:
    """``{"all": ..., "parseable": ..., "parse_failure_rate": ..., "n": ...}`` (see module doc)."""
    conf = np.asarray(confidence, dtype=float).reshape(-1)
    corr = np.asarray(correct, dtype=bool).reshape(-1)
    ok = ~np.isnan(conf) if parsed is None else np.asarray(parsed, dtype=bool).reshape(-1)
    if not (conf.shape == corr.shape == ok.shape):
        raise ValueError("confidence, correct and parsed must have the same length")
    n = int(conf.size)
    conf_all = np.where(ok, np.nan_to_num(conf, nan=0.0), 0.0)
    corr_all = corr & ok
    return {
        "n": n,
        "parse_failure_rate": float((~ok).mean()) if n else math.nan,
        "all": summary(conf_all, corr_all, num_bins),
        "parseable": summary(conf[ok], corr[ok], num_bins),
    }


def to_json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: to_json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
