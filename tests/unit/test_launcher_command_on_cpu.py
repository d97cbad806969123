"""The launcher's vLLM command lines for the serving modes the recipes use (no server started)."""

import pytest

from verlkit.clients.urls import server_root
from verlkit.serving.launcher import ServerSpec, build_command


def test_lora_serving_adds_the_flags_and_allows_loading_adapters_at_run_time():
    cmd, env = build_command(ServerSpec(model="/m", name="student", enable_lora=True, max_lora_rank=32), 8000, on_gpu=False)
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "32"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    cmd, _ = build_command(ServerSpec(model="/m", name="judge"), 8000, on_gpu=False)
    assert "--enable-lora" not in cmd


def test_reward_models_are_served_for_classification_only():
    with pytest.raises(ValueError, match="generation only"):
        ServerSpec(model="/m", task="classify", enable_lora=True)
    with pytest.raises(ValueError, match="task"):
        ServerSpec(model="/m", task="embed")


def test_server_root_is_the_base_url_without_v1():
    assert server_root("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000"
    assert server_root("http://127.0.0.1:8000/") == "http://127.0.0.1:8000"
