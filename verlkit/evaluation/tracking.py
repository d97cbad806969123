"""Evaluation results in the experiment tracker, beside the training run they evaluate.

Every evaluation CLI (calibration, win rate, reward-model pairwise accuracy, verifier evaluation,
C3PO evaluation) ends with :func:`log_evaluation`: its summary metrics (flattened to ``eval/...``
keys) and its plots (as ``wandb.Image`` under ``plots/...``) go to

* ``--tracker wandb``: one wandb run per evaluation, ``job_type="eval"``, in the training run's
  project (``--tracker-project``) and run group (``--tracker-group``; the recipe drivers set the
  training runs' group to the experiment name through ``WANDB_RUN_GROUP``, and pass the same name
  here). Mode ``--wandb-mode``, else ``$WANDB_MODE``, else ``offline`` (no network, no key: the run
  is written under ``<--tracker-dir>/wandb/offline-run-*``; ``wandb sync`` uploads it later).
* ``--tracker console`` (the CLIs' default when run by hand): the same metrics printed, nothing
  written.

The tracker comes after the report files: a tracker that fails (online mode without a key, a full
disk) is reported on stderr and the evaluation's own outputs stay as written.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACKERS = ("wandb", "console")
WANDB_MODES = ("offline", "online", "disabled")
DEFAULT_WANDB_MODE = "offline"
METRIC_PREFIX = "eval"
PLOT_PREFIX = "plots"


@dataclass(frozen=True)
class TrackerSettings:
    """Where an evaluation's metrics go (see the module doc)."""

    tracker: str = "console"
    project: str | None = None
    group: str | None = None
    name: str | None = None
    directory: Path | None = None  # wandb writes <directory>/wandb/; None: $WANDB_DIR, else the report's folder
    mode: str | None = None  # None: $WANDB_MODE, else offline

    def __post_init__(self) -> None:
        if self.tracker not in TRACKERS:
            raise ValueError(f"tracker must be one of {TRACKERS}, got {self.tracker!r}")
        if self.mode is not None and self.mode not in WANDB_MODES:
            raise ValueError(f"wandb mode must be one of {WANDB_MODES}, got {self.mode!r}")

    def wandb_mode(self, environ: Mapping[str, str] = os.environ) -> str:
        return self.mode or environ.get("WANDB_MODE") or DEFAULT_WANDB_MODE


def add_tracker_arguments(parser: argparse.ArgumentParser) -> None:
    """The tracker options every evaluation CLI shares."""
    g = parser.add_argument_group("experiment tracker")
    g.add_argument("--tracker", choices=TRACKERS, default="console",
                   help="wandb: log the summary metrics and plots as a wandb run (job_type eval); "
                        "console: print them (default)")  # fmt: skip
    g.add_argument("--tracker-project", default=None, help="the wandb project: the evaluated training run's")
    g.add_argument("--tracker-group", default=None, help="the wandb run group: the evaluated training run's")
    g.add_argument("--tracker-run-name", default=None, help="the evaluation run's name (default: from the CLI)")
    g.add_argument("--tracker-dir", type=Path, default=None,
                   help="wandb writes <dir>/wandb/ (default: $WANDB_DIR, else the folder of the report)")
    g.add_argument("--wandb-mode", choices=WANDB_MODES, default=None,
                   help=f"default: $WANDB_MODE, else {DEFAULT_WANDB_MODE}")


def tracker_settings(args: argparse.Namespace, default_name: str, default_dir: Path) -> TrackerSettings:
    """:class:`TrackerSettings` from the options of :func:`add_tracker_arguments`."""
    directory = args.tracker_dir or (Path(os.environ["WANDB_DIR"]) if os.environ.get("WANDB_DIR") else default_dir)
    return TrackerSettings(tracker=args.tracker, project=args.tracker_project, group=args.tracker_group,
                           name=args.tracker_run_name or default_name, directory=directory, mode=args.wandb_mode)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = METRIC_PREFIX) -> dict[str, float | int | str]:
    """``{"a": {"b": 1}}`` -> ``{"eval/a/b": 1}``: numbers (bools as 0/1) and strings; None and
    non-finite numbers are left out (a metric that could not be computed is absent, never 0)."""
    flat: dict[str, float | int | str] = {}
    for key, value in metrics.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name))
        elif isinstance(value, bool):
            flat[name] = int(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isfinite(value):
                flat[name] = value
        elif isinstance(value, str):
            flat[name] = value
    return flat


def log_evaluation(settings: TrackerSettings, metrics: Mapping[str, Any], plots: Mapping[str, Path] | None = None,
                   config: Mapping[str, Any] | None = None) -> Path | None:  # fmt: skip
    """Log one evaluation (see the module doc). Returns the wandb run's directory (None for the
    console, or when the tracker failed)."""
    flat = flatten_metrics(metrics)
    plots = {name: Path(path) for name, path in (plots or {}).items() if Path(path).is_file()}
    if settings.tracker == "console":
        for key, value in flat.items():
            print(f"{key}: {value}")
        for name, path in plots.items():
            print(f"{PLOT_PREFIX}/{name}: {path}")
        return None
    try:
        return _log_to_wandb(settings, flat, plots, dict(config or {}))
    except Exception as e:  # noqa: BLE001 -- any tracker failure: the report files are already written
        print(f"tracker: logging the evaluation to wandb failed ({type(e).__name__}: {e}); its report files are "
              "unaffected", file=sys.stderr)  # fmt: skip
        return None


def _log_to_wandb(settings: TrackerSettings, flat: dict[str, Any], plots: dict[str, Path],
                  config: dict[str, Any]) -> Path:  # fmt: skip
    mode = settings.wandb_mode()
    if mode != "online":
        # Offline means no network: wandb's own error and usage telemetry would still POST to its
        # server (at exit, from an export thread). The variable is read when wandb sets up its recorder.
        os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
    import wandb

    directory = Path(settings.directory or ".").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # console="off": the CLIs run inside the recipe drivers, whose stdout is redirected; wandb's
    # capture would wrap it. No system-stats sampler, no git or code snapshot: an evaluation is seconds.
    quiet = wandb.Settings(console="off", x_disable_stats=True, disable_git=True, save_code=False, silent=True)
    run = wandb.init(project=settings.project, group=settings.group, name=settings.name, job_type="eval", mode=mode,
                     dir=str(directory), config=config, settings=quiet, reinit="create_new")  # fmt: skip
    try:
        numbers = {k: v for k, v in flat.items() if not isinstance(v, str)}
        images = {f"{PLOT_PREFIX}/{name}": wandb.Image(str(path), caption=path.name) for name, path in plots.items()}
        run.log({**numbers, **images})
        run.summary.update(flat)  # the strings (reasons, names) go to the summary only
        run_dir = Path(run.dir).parent if mode != "disabled" else directory
    finally:
        run.finish()
        wandb.teardown()  # ends wandb's service process: nothing of ours outlives the evaluation
    print(f"tracker: wandb ({mode}) project={settings.project} group={settings.group} run={settings.name} -> "
          f"{run_dir}", file=sys.stderr)  # fmt: skip
    return run_dir
