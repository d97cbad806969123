"""Console tables and the ``--json`` file shared by the benchmarks.

The JSON file holds the ratios named in issue 14 (``KNOWN_KEYS``) where a benchmark measured them,
plus a ``notes`` list and whatever context the benchmark adds (sizes, machine load). A key the
benchmark could not measure is left out, and the reason is printed and kept in ``omitted``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

KNOWN_KEYS = (
    "ours_vs_raw", "ours_vs_verl_rate_limited", "ours_vs_verl_naive", "ours_vs_genrm_remote", "ours_vs_openrlhf",
    "grpo_batch_speedup", "requests_sent", "distinct_pairs", "rule_vs_verl_math_verify",
    "rule_vs_default_compute_score", "pathological_max_over_bound_s", "verifier_in_training_vs_standalone",
)


class Report:
    def __init__(self, benchmark: str) -> None:
        self.data: dict = {"benchmark": benchmark, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                           "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                       "load_avg_start": list(os.getloadavg())}}
        self.omitted: dict[str, str] = {}
        self._start = time.monotonic()

    def set(self, key: str, value) -> None:
        self.data[key] = round(value, 4) if isinstance(value, float) else value

    def omit(self, key: str, why: str) -> None:
        self.omitted[key] = why
        print(f"[{key}] not measured: {why}")

    def write(self, path: str | None, applicable: tuple[str, ...]) -> None:
        """Print the reason for every applicable key left out, then write the file (if asked)."""
        for key in applicable:
            if key not in self.data and key not in self.omitted:
                self.omit(key, "no measurement produced it in this run")
        self.data["machine"]["load_avg_end"] = list(os.getloadavg())
        self.data["wall_s_total"] = round(time.monotonic() - self._start, 1)
        self.data["omitted"] = self.omitted
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(json.dumps(self.data, indent=2, sort_keys=False) + "\n")
            print(f"\nratios written to {path}")


def table(title: str, header: list[str], rows: list[list], widths: list[int] | None = None) -> None:
    """A plain fixed-width table; the first column is left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = widths or [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
