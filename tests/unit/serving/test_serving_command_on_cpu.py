"""The vLLM command lines and environments build_command composes (no server started)."""

from pathlib import Path

import pytest

from verlkit.serving import ServerSpec, build_command, gpu_available


def test_cpu_command_uses_the_cpu_build_flags_bf16_and_its_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.delenv("VERLKIT_VLLM_OMP_THREADS", raising=False)
    spec = ServerSpec(model="/models/tiny", name="verifier", run_dir=tmp_path, python="/venv/bin/python")
    cmd, env = build_command(spec, 8123, on_gpu=False)
    assert cmd == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/tiny", "--served-model-name", "verifier",
        "--host", "127.0.0.1", "--port", "8123", "--max-model-len", "2048",
        "--dtype", "bfloat16",
        "--enforce-eager", "--distributed-executor-backend", "uni",
    ]  # fmt: skip
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["DO_NOT_TRACK"] == "1"
    assert env["VLLM_CACHE_ROOT"] == str(tmp_path.resolve() / "verifier.vllm_cache")


def test_cpu_environment_knobs_come_from_the_caller(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    monkeypatch.setenv("VERLKIT_VLLM_OMP_THREADS", "2")
    _, env = build_command(ServerSpec(model="/m", run_dir=tmp_path), 8000, on_gpu=False)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "3" and env["OMP_NUM_THREADS"] == "2"


def test_gpu_command_places_the_server_and_leaves_the_dtype_to_vllm(tmp_path):
    spec = ServerSpec(model="/models/judge", name="judge", served_model_name="judge-7b", run_dir=tmp_path,
                      devices="2,3", tensor_parallel_size=2, gpu_memory_utilization=0.85, max_model_len=4096,
                      python="py")  # fmt: skip
    cmd, env = build_command(spec, 9000, on_gpu=True)
    assert cmd == [
        "py", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/judge", "--served-model-name", "judge-7b",
        "--host", "127.0.0.1", "--port", "9000", "--max-model-len", "4096",
        "--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.85",
    ]  # fmt: skip
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"


def test_an_explicit_dtype_wins_over_the_cpu_default(tmp_path):
    cmd, _ = build_command(ServerSpec(model="/m", dtype="float16", run_dir=tmp_path), 8000, on_gpu=False)
    assert cmd[cmd.index("--dtype") + 1] == "float16" and cmd.count("--dtype") == 1


def test_extra_args_go_last_as_strings(tmp_path):
    spec = ServerSpec(model="/m", run_dir=tmp_path, extra_args=("--seed", 7, "--disable-log-requests"))
    cmd, _ = build_command(spec, 8000, on_gpu=False)
    assert cmd[-3:] == ["--seed", "7", "--disable-log-requests"]


def test_lora_serving_adds_the_flags_and_allows_loading_adapters_at_run_time(tmp_path):
    spec = ServerSpec(model="/m", name="student", enable_lora=True, max_lora_rank=32, run_dir=tmp_path)
    cmd, env = build_command(spec, 8000, on_gpu=False)
    assert cmd[cmd.index("--enable-lora") :] == ["--enable-lora", "--max-lora-rank", "32"]
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    cmd, env = build_command(ServerSpec(model="/m", name="judge", run_dir=tmp_path), 8000, on_gpu=False)
    assert "--enable-lora" not in cmd


@pytest.mark.parametrize("hidden", ["", "-1"])
def test_no_gpu_when_cuda_devices_are_hidden(monkeypatch, hidden):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
    assert gpu_available() is False


def test_model_paths_are_passed_as_strings(tmp_path):
    cmd, _ = build_command(ServerSpec(model=Path("/models/a b"), run_dir=tmp_path), 8000, on_gpu=False)
    assert cmd[cmd.index("--model") + 1] == "/models/a b"
