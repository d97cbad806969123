"""The CPU replica for frozen served models: what it serves and how, and that the CPU profile registers it
in verl's replica registry (starting it is tests/integration/test_frozen_vllm_replica.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_dir(tmp_path):
    def make(architecture: str, positions: int | None = 2048) -> Path:
        config = {"architectures": [architecture]}
        if positions is not None:
            config["max_position_embeddings"] = positions
        (tmp_path / "config.json").write_text(json.dumps(config))
        return tmp_path

    return make


def test_a_sequence_classifier_is_probed_by_classification_anything_else_by_generation(model_dir):
    from verlkit.cpu_profile.frozen_vllm import serving_task

    assert serving_task(str(model_dir("Qwen2ForSequenceClassification"))) == "classify"
    assert serving_task(str(model_dir("LlamaForCausalLM"))) == "generate"
    assert serving_task("/no/such/model") == "generate"


def test_context_length_is_the_configured_one_else_prompt_plus_response_within_the_model(model_dir):
    from verlkit.cpu_profile.frozen_vllm import max_model_len_for

    rollout = SimpleNamespace(max_model_len=None, prompt_length=2048, response_length=2048)
    assert max_model_len_for(rollout, str(model_dir("X", positions=2048))) == 2048
    assert max_model_len_for(rollout, str(model_dir("X", positions=8192))) == 4096
    assert max_model_len_for(rollout, str(model_dir("X", positions=None))) == 4096
    assert max_model_len_for(SimpleNamespace(max_model_len=1024, prompt_length=1, response_length=1),
                             str(model_dir("X", positions=2048))) == 1024


def test_replica_logs_go_to_the_run_directory(monkeypatch, tmp_path):
    from verlkit.cpu_profile.frozen_vllm import replica_run_dir

    monkeypatch.setenv("VERLKIT_RUN_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "b"))
    assert replica_run_dir() == tmp_path / "a"
    monkeypatch.delenv("VERLKIT_RUN_DIR")
    assert replica_run_dir() == tmp_path / "b"


def test_the_cpu_profile_registers_the_replica_with_verl():
    code = "from verl.workers.rollout.replica import get_rollout_replica_class as get; c = get('vllm_cpu'); " \
           "print(c.__module__ + '.' + c.__name__)"
    env = {**os.environ, "PYTHONPATH": str(REPO), "VERL_PLATFORM": "cpu"}
    cpu = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert cpu.stdout.strip().splitlines()[-1:] == ["verlkit.cpu_profile.frozen_vllm.FrozenVLLMReplica"], cpu.stderr[-2000:]
