"""The reward-model export's command line and ``latest_checkpoint``, which recipes call cheaply (the
module must not import torch or verl until an export actually runs)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from verlkit.preference.export import latest_checkpoint, main


def test_latest_checkpoint_follows_verls_marker_then_the_highest_step(tmp_path):
    for step in (1, 2, 10):
        (tmp_path / f"global_step_{step}").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "global_step_10"  # numeric, not lexical
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("2\n")
    assert latest_checkpoint(str(tmp_path)) == tmp_path / "global_step_2"
    # a marker naming a step that is gone: the highest step left
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("7")
    assert latest_checkpoint(tmp_path) == tmp_path / "global_step_10"
    with pytest.raises(FileNotFoundError, match="no global_step_\\* checkpoint under"):
        latest_checkpoint(tmp_path / "empty")


def test_the_command_line_reports_a_missing_checkpoint(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "rm")]) == 1
    assert "reward_model_export: no global_step_* checkpoint under" in capsys.readouterr().err


def test_importing_the_export_module_imports_neither_torch_nor_verl():
    code = ("import sys; from verlkit.preference.export import latest_checkpoint; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'verl', 'transformers')))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
