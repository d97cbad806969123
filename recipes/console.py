"""What a trainer shows on the recipe's console.

A verl trainer prints about 1,400 lines on a CPU run (its whole config, engine warnings from every
worker, TransferQueue statistics every minute, wandb's teardown). All of it goes to the trainer's log
file; the console gets one progress bar per trainer (its step, the last step's reward and, where the
reward calls a served model, that model's success and cache-hit rates), and the log's tail when the
trainer fails. ``VERBOSE=1`` in the environment restores the full stream.

On a terminal the bar is tqdm's; otherwise (a file, a CI log) one line per finished step.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from verlkit.runs.summary import parse_step_metrics

# (label, metric keys tried in order, shown as a percentage?)
SHOWN = (
    ("reward", ("critic/score/mean", "critic/rewards/mean"), False),
    ("loss", ("train/loss",), False),
    ("verifier ok", ("reward/verifier_ok/mean",), True),
    ("downstream ok", ("reward/downstream_ok/mean",), True),
    ("cache hits", ("reward/cache_hit/mean",), True),
)
FAILURE_TAIL_LINES = 40


def verbose(environ=os.environ) -> bool:
    return environ.get("VERBOSE", "").strip().lower() in ("1", "true", "yes")


def step_summary(metrics: dict[str, float]) -> str:
    """The few numbers of one step a person watches, e.g. ``reward 0.25, verifier ok 100%``."""
    parts = []
    for label, keys, percent in SHOWN:
        value = next((metrics[k] for k in keys if k in metrics), None)
        if value is None or value != value:  # absent or NaN
            continue
        parts.append(f"{label} {value:.0%}" if percent else f"{label} {value:.4g}")
    return ", ".join(parts)


class TrainerConsole:
    """Receives a trainer's output in chunks and decides what the console shows."""

    def __init__(self, label: str, total_steps: int | None = None, *, full: bool | None = None, stream=None):
        self.label, self.total = label, total_steps
        self.full = verbose() if full is None else full
        self.stream = stream or sys.stderr
        self._pending = b""
        self._bar = None
        if not self.full and self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, desc=label, unit="step", file=self.stream, dynamic_ncols=True,
                             leave=True)  # fmt: skip

    def feed(self, chunk: bytes) -> None:
        if self.full:
            sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if b"step:" in line:
                self._on_line(line.decode(errors="replace"))

    def _on_line(self, line: str) -> None:
        for step, metrics in parse_step_metrics(line).items():
            shown = step_summary(metrics)
            if self._bar is not None:
                self._bar.update(step - self._bar.n)
                self._bar.set_postfix_str(shown)
            else:
                of = f"/{self.total}" if self.total else ""
                print(f"[{datetime.now():%H:%M:%S}] {self.label}: step {step}{of}" + (f": {shown}" if shown else ""),
                      file=self.stream, flush=True)  # fmt: skip

    def close(self, returncode: int | None, log_path: Path) -> None:
        """End the bar; after a failure, show the end of the log (where the error is)."""
        if self._pending and b"step:" in self._pending and not self.full:
            self._on_line(self._pending.decode(errors="replace"))
        self._pending = b""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if returncode and not self.full:
            try:
                tail = Path(log_path).read_text(errors="replace").splitlines()[-FAILURE_TAIL_LINES:]
            except OSError:
                return
            print(f"--- the last {len(tail)} lines of {log_path} ---", file=self.stream)
            print("\n".join(tail), file=self.stream, flush=True)
