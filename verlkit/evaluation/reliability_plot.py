"""The reliability diagram of a calibration summary (``verlkit.calibration_stats.summary``)."""

from __future__ import annotations

import math
from typing import Sequence


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
