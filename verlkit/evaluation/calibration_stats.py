"""Calibration metrics for verbalized confidence, and a reliability diagram.

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


def reliability_figure(summary_or_bins, title: str = "Reliability diagram", details: Sequence[str] = (),
                       warning: str | None = None):
    """The reliability diagram as a matplotlib ``Figure`` (see :func:`plot_reliability`)."""
    # The Agg canvas is used directly, so drawing never changes pyplot's global backend or state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = summary_or_bins if isinstance(summary_or_bins, dict) else {"bins": summary_or_bins}
    bins = data["bins"]
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"]
    accuracies = [0.0 if b["count"] == 0 else b["accuracy"] for b in bins]
    fig = Figure(figsize=(6, 6.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfect calibration")
    ax.bar(centers, accuracies, width=width * 0.95, color="#4C72B0", edgecolor="black", linewidth=0.5,
           label="accuracy in bin")
    filled = [(c, b["confidence"]) for c, b in zip(centers, bins) if b["count"]]
    if filled:
        ax.scatter([c for c, _ in filled], [m for _, m in filled], color="#DD8452", zorder=3, s=18,
                   label="mean confidence in bin")
    for c, a, b in zip(centers, accuracies, bins):
        if b["count"]:  # an empty bin has no bar; a row of "n=0" labels only hides the ones that matter
            ax.text(c, min(a, 1.0) + 0.015, f"n={b['count']}", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("stated confidence (bins of 0.1; an empty bin has no bar)")
    ax.set_ylabel("accuracy")
    numbers = []
    for key, label in (("ece", "ECE"), ("brier", "Brier")):
        value = data.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            numbers.append(f"{label}={value:.3f}")
    if "n" in data:
        numbers.append(f"N={data['n']}")
    fig.suptitle(title, fontsize=10, fontweight="bold")
    if warning:  # in red under the title, in place of the numbers it would discredit
        fig.text(0.5, 0.945, warning, ha="center", va="top", fontsize=9, color="#B00020", fontweight="bold")
    ax.set_title("\n".join([*details, "" if warning else ", ".join(numbers)]).strip(), fontsize=8.5)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95 if warning else 1))
    return fig


def plot_reliability(summary_or_bins, path: str, title: str = "Reliability diagram", details: Sequence[str] = (),
                     warning: str | None = None) -> str:
    """Reliability diagram PNG: per-bin accuracy bars with each non-empty bin's count above its bar,
    per-bin mean confidence, the diagonal. The title: ``title``, then ``details`` (model, data, N,
    what failed: one line each), then ECE/Brier and N -- or, with ``warning`` (too few rows to mean
    anything), the warning in red instead of the numbers. The legend sits below the axes, never over
    the bars. Returns ``path``."""
    reliability_figure(summary_or_bins, title, details, warning).savefig(path)
    return path
