"""A rollout backend for verl that generates with HF transformers on the CPU.

verl 0.9.1's rollout talks to inference *servers* (vLLM, SGLang, TRT-LLM), none of which verl can
drive on a CPU. This module provides the three pieces verl's hybrid (colocated) rollout mode needs,
selected with ``actor_rollout_ref.rollout.name=hf``:

* ``HFGenerationServer``: a Ray actor holding a transformers model; verl's agent loop calls its
  token-in/token-out ``generate``. Requests are served one at a time under a lock (generation
  runs on a worker thread so the actor keeps answering control calls).
* ``HFReplica``: the ``RolloutReplica`` that starts one server per replica without a GPU.
* ``HFRolloutAdapter``: the ``BaseRollout`` living in each actor worker; after every update it
  receives the new weights from the FSDP engine and pushes them to its replica's server.

Fine for the tiny and 135M models the CPU profile uses; not a substitute for vLLM on GPUs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Generator, Optional

import ray
import torch

from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput

logger = logging.getLogger("verlkit.cpu_profile.hf_rollout")


def server_name(replica_rank: int, suffix: str = "") -> str:
    return f"verlkit_hf_rollout_server_{replica_rank}{suffix}"


def _model_path(model_config: Any) -> str:
    get = model_config.get if hasattr(model_config, "get") else lambda k, d=None: getattr(model_config, k, d)
    return get("local_path", None) or get("path")


class HFGenerationServer:
    """Token-in/token-out generation with ``transformers`` (a Ray actor)."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int):
        from transformers import AutoModelForCausalLM, GenerationConfig

        self.config = config
        self.replica_rank = replica_rank
        path = _model_path(model_config)
        self.model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="sdpa")
        self.model.eval()
        gen_cfg = GenerationConfig.from_model_config(self.model.config)
        eos = gen_cfg.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self.pad_id = gen_cfg.pad_token_id if gen_cfg.pad_token_id is not None else next(iter(self.eos_ids), 0)
        self.global_steps: Optional[int] = None
        self.weight_version = 0
        self._lock = asyncio.Lock()

    def ready(self) -> bool:
        return True

    def _max_tokens(self, sampling_params: dict, prompt_len: int) -> int:
        cfg = self.config
        if "max_tokens" in sampling_params:
            wanted = sampling_params["max_tokens"]
        elif "max_new_tokens" in sampling_params:
            wanted = sampling_params["max_new_tokens"]
        else:
            wanted = min(cfg.response_length, cfg.prompt_length + cfg.response_length - prompt_len)
        return max(1, int(wanted))

    def _generate_blocking(self, prompt_ids: list[int], sampling_params: dict) -> TokenOutput:
        temperature = float(sampling_params.get("temperature", 1.0) or 0.0)
        top_p = float(sampling_params.get("top_p", 1.0) or 1.0)
        top_k = int(sampling_params.get("top_k", -1) or -1)
        want_logprobs = bool(sampling_params.get("logprobs", False))
        max_new = self._max_tokens(sampling_params, len(prompt_ids))
        inputs = torch.tensor([list(prompt_ids)], dtype=torch.long)
        kwargs: dict[str, Any] = dict(
            max_new_tokens=max_new,
            do_sample=temperature > 0,
            pad_token_id=self.pad_id,
            eos_token_id=sorted(self.eos_ids) or None,
            return_dict_in_generate=True,
            output_logits=want_logprobs,
        )
        if temperature > 0:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=top_k if top_k > 0 else 0)
        with torch.no_grad():
            out = self.model.generate(inputs, attention_mask=torch.ones_like(inputs), **kwargs)
        new_tokens = out.sequences[0, inputs.shape[1] :].tolist()
        # Cut after the first eos (HF pads finished sequences); keep the eos itself, as vLLM does.
        for i, tok in enumerate(new_tokens):
            if tok in self.eos_ids:
                new_tokens = new_tokens[: i + 1]
                break
        log_probs = None
        if want_logprobs:
            logits = torch.stack(out.logits, dim=1)[0, : len(new_tokens)].float()
            if temperature > 0:
                # verl's actor scores a rollout under the temperature-scaled distribution it was
                # sampled from (as vLLM's processed log-probs); raw logits would differ by 1/T
                logits = logits / temperature
            log_probs = torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(new_tokens)[:, None])[:, 0].tolist()
        return TokenOutput(
            token_ids=new_tokens,
            log_probs=log_probs,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps, "weight_version": self.weight_version},
        )

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list[Any]] = None,
        video_data: Optional[list[Any]] = None,
        **_ignored: Any,
    ) -> TokenOutput:
        if image_data or video_data:
            raise NotImplementedError("the HF CPU rollout serves text-only models")
        async with self._lock:
            return await asyncio.to_thread(self._generate_blocking, prompt_ids, dict(sampling_params))

    async def load_weights(self, state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
        async with self._lock:
            own = self.model.state_dict()
            unexpected = sorted(set(state_dict) - set(own))
            if unexpected:
                raise KeyError(f"pushed weights have names the rollout model lacks: {unexpected[:5]}")
            with torch.no_grad():
                for name, tensor in state_dict.items():
                    own[name].copy_(tensor.to(own[name].dtype))
            self.weight_version += 1
            return {"loaded": len(state_dict), "version": self.weight_version}

    async def get_weight_version(self) -> int:
        return self.weight_version

    async def set_global_steps(self, global_steps: int):
        self.global_steps = global_steps

    # Memory management and request control have nothing to do on a CPU model held in RAM.
    async def wake_up(self, tags: list[str] | None = None):
        return None

    async def sleep(self):
        return None

    async def clear_kv_cache(self):
        return None

    async def release_kv_cache(self):
        return None

    async def resume_kv_cache(self):
        return None

    async def start_profile(self, **kwargs):
        return None

    async def stop_profile(self):
        return None

    async def wait_for_requests_to_drain(self):
        async with self._lock:
            return None

    async def abort_all_requests(self, reset_prefix_cache: bool = True, reject_request: bool = False) -> dict:
        return {}

    async def abort_request(self, request_id: str, reset_prefix_cache: bool = True) -> dict:
        return {}

    async def resume_generation(self):
        return None


class HFReplica(RolloutReplica):
    """One ``HFGenerationServer`` per replica, scheduled without a GPU."""

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self):
        if self.config.tensor_model_parallel_size != 1:
            raise ValueError("the HF CPU rollout supports tensor_model_parallel_size=1 only")
        name = server_name(self.replica_rank, self.name_suffix)
        server = (
            ray.remote(HFGenerationServer)
            .options(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.ready.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = f"hf://{name}"


class HFRolloutAdapter(BaseRollout):
    """The rollout object verl builds inside each hybrid actor worker."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh, *args, **kwargs)
        self._server = None

    def _replica_rank(self) -> int:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        return rank // max(1, self.config.tensor_model_parallel_size)

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(
        self,
        weights: Generator[tuple[str, torch.Tensor], None, None],
        wire_format: str = "named_tensors",
        **kwargs,
    ):
        if wire_format != "named_tensors":
            raise NotImplementedError(f"the HF CPU rollout accepts full named tensors, not {wire_format!r}")
        # Every rank drains the generator: producing each full tensor is a collective FSDP gather.
        state = {name: tensor.detach().to("cpu").clone() for name, tensor in weights}
        if kwargs.get("peft_config") is not None:
            raise NotImplementedError("LoRA adapters must be merged (model.lora.merge=True) for the HF CPU rollout")
        if self._server is None:
            self._server = ray.get_actor(server_name(self._replica_rank()))
        await self._server.load_weights.remote(state)
        if kwargs.get("global_steps") is not None:
            await self._server.set_global_steps.remote(kwargs["global_steps"])
