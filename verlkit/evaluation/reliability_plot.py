"""The reliability diagram of a calibration summary (``verlkit.calibration_stats.summary``)."""

from __future__ import annotations

import math


def plot_reliability(summary_or_bins, path: str, title: str = "Reliability diagram") -> str:
    """Reliability diagram PNG: per-bin accuracy bars, per-bin mean confidence, the diagonal, the
    count of each bin above its bar, and the ECE in the title. Returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must come before pyplot
    import matplotlib.pyplot as plt

    data = summary_or_bins if isinstance(summary_or_bins, dict) else {"bins": summary_or_bins}
    bins = data["bins"]
    centers = [(b["lo"] + b["hi"]) / 2 for b in bins]
    width = bins[0]["hi"] - bins[0]["lo"]
    accuracies = [0.0 if b["count"] == 0 else b["accuracy"] for b in bins]
    fig, ax = plt.subplots(figsize=(5.5, 5.5), dpi=110)
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfect calibration")
    ax.bar(centers, accuracies, width=width * 0.95, color="#4C72B0", edgecolor="black", linewidth=0.5,
           label="accuracy in bin")
    filled = [(c, b["confidence"]) for c, b in zip(centers, bins) if b["count"]]
    if filled:
        ax.scatter([c for c, _ in filled], [m for _, m in filled], color="#DD8452", zorder=3, s=18,
                   label="mean confidence in bin")
    for c, a, b in zip(centers, accuracies, bins):
        ax.text(c, min(a, 1.0) + 0.015, f"n={b['count']}", ha="center", va="bottom", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("stated confidence")
    ax.set_ylabel("accuracy")
    ece = data.get("ece")
    details = []
    if ece is not None and not (isinstance(ece, float) and math.isnan(ece)):
        details.append(f"ECE={ece:.3f}")
    if "n" in data:
        details.append(f"N={data['n']}")
    ax.set_title(f"{title}\n" + ", ".join(details) if details else title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
