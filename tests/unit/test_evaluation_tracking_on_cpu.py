"""Evaluation metrics and plots in the experiment tracker: what is logged, the console tracker, an
offline wandb run read back from its own files, and a failing tracker that leaves the report alone.

The wandb test runs the real wandb client in offline mode (its local service process, no network),
into a temporary directory, and reads the run file back with tests/support/wandb_files.py."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import urllib3  # noqa: F401 -- imported before the unit tier blocks sockets: it probes IPv6 with one at import
from support.wandb_files import offline_runs

from verlkit.evaluation.tracking import (TrackerSettings, add_tracker_arguments, flatten_metrics, log_evaluation,
                                         tracker_settings)


def test_flatten_keeps_numbers_flags_and_strings_and_drops_what_was_not_computed():
    metrics = {"win_rate": 0.5, "too_few": True, "too_few_reason": "only 3", "ci": None,
               "policy": {"ece": float("nan"), "n": 12, "mean_reward": {"brier": -0.25}}}  # fmt: skip
    assert flatten_metrics(metrics) == {"eval/win_rate": 0.5, "eval/too_few": 1, "eval/too_few_reason": "only 3",
                                        "eval/policy/n": 12, "eval/policy/mean_reward/brier": -0.25}  # fmt: skip


def test_cli_options_default_to_the_console_and_name_project_group_and_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_DIR", raising=False)
    parser = argparse.ArgumentParser()
    add_tracker_arguments(parser)
    default = tracker_settings(parser.parse_args([]), "winrate-rloo", tmp_path)
    assert default == TrackerSettings("console", None, None, "winrate-rloo", tmp_path, None)
    chosen = tracker_settings(parser.parse_args(["--tracker", "wandb", "--tracker-project", "verlkit-pipeline-rloo",
                                                 "--tracker-group", "run-1", "--tracker-dir", "/runs/run-1"]),
                              "winrate-rloo", tmp_path)  # fmt: skip
    assert (chosen.project, chosen.group, chosen.directory) == ("verlkit-pipeline-rloo", "run-1", Path("/runs/run-1"))
    monkeypatch.setenv("WANDB_MODE", "online")
    assert chosen.wandb_mode() == "online" and TrackerSettings(mode="disabled").wandb_mode() == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    assert chosen.wandb_mode() == "offline"  # no network, no key: the CPU default
    with pytest.raises(ValueError, match="tracker"):
        TrackerSettings(tracker="tensorboard")


def test_console_tracker_prints_the_metrics_and_plot_paths(tmp_path, capsys):
    plot = tmp_path / "winrate.png"
    plot.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert log_evaluation(TrackerSettings("console"), {"win_rate": 0.25}, {"winrate": plot}) is None
    out = capsys.readouterr().out
    assert "eval/win_rate: 0.25" in out and f"plots/winrate: {plot}" in out
    assert not (tmp_path / "wandb").exists()


def test_a_failing_tracker_is_reported_and_does_not_raise(tmp_path, capsys):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the tracker wants a folder")
    settings = TrackerSettings("wandb", "p", "g", "n", directory=blocker / "sub", mode="offline")
    assert log_evaluation(settings, {"win_rate": 0.5}) is None
    assert "logging the evaluation to wandb failed" in capsys.readouterr().err


def test_offline_wandb_run_holds_the_metrics_and_the_plot(tmp_path, monkeypatch):
    """Offline, wandb's own error/usage telemetry (a POST to its server at exit) is switched off."""
    monkeypatch.setenv("WANDB_ERROR_REPORTING", "unset by this test")  # restored afterwards
    monkeypatch.delenv("WANDB_ERROR_REPORTING")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.bar(["win", "tie", "loss"], [0.5, 0.25, 0.25])
    fig.savefig(tmp_path / "winrate.png")
    plt.close(fig)
    settings = TrackerSettings("wandb", "verlkit-pipeline-rloo", "run-7", "winrate-rloo", tmp_path, "offline")
    run_dir = log_evaluation(settings, {"win_rate": 0.5, "too_few": False, "judge": {"relation": "independent"}},
                             {"winrate": tmp_path / "winrate.png"}, {"label": "rloo"})  # fmt: skip
    assert run_dir is not None and run_dir.parent == tmp_path / "wandb"
    assert os.environ["WANDB_ERROR_REPORTING"] == "false"
    (run,) = offline_runs(tmp_path / "wandb")
    assert (run.project, run.group, run.job_type, run.name) == ("verlkit-pipeline-rloo", "run-7", "eval", "winrate-rloo")
    assert run.summary["eval/win_rate"] == 0.5 and run.summary["eval/too_few"] == 0
    assert run.summary["eval/judge/relation"] == "independent"
    assert run.summary["plots/winrate/_type"] == "image-file"
    (png,) = run.files("media/images/**/*.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
