"""The call sites of verl 0.9.1 that assume an accelerator, and what the CPU profile does about each.

Every patch is small, keeps upstream's behaviour for every other input, and is armed through
``on_import`` so it runs right after its target module is imported.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.distributed

logger = logging.getLogger("verlkit.cpu_profile")


def _collapse_backend(backend):
    """verl builds ``f"cpu:gloo,{device}:{backend}"``, i.e. ``cpu:gloo,cpu:gloo`` here, which torch
    rejects as a duplicate device type. Collapse any spec whose every entry is gloo to ``gloo``."""
    if not isinstance(backend, str) or "," not in backend:
        return backend
    entries = [part.split(":")[-1] for part in backend.split(",")]
    return "gloo" if all(e == "gloo" for e in entries) else backend


def patch_process_group() -> None:
    original = torch.distributed.init_process_group
    if getattr(original, "_verlkit_cpu", False):
        return

    @functools.wraps(original)
    def init_process_group(*args, **kwargs):
        if "backend" in kwargs:
            kwargs["backend"] = _collapse_backend(kwargs["backend"])
        elif args:
            args = (_collapse_backend(args[0]), *args[1:])
        return original(*args, **kwargs)

    init_process_group._verlkit_cpu = True
    torch.distributed.init_process_group = init_process_group


def _patch_fsdp_engine(module) -> None:
    """FSDP2 CPU offload of the reference model pins host memory, which needs an accelerator."""
    policy_cls = getattr(module, "CPUOffloadPolicy", None)
    if policy_cls is None or getattr(policy_cls, "_verlkit_cpu", False):
        return

    def unpinned_policy(*args, **kwargs):
        kwargs["pin_memory"] = False
        return policy_cls(*args, **kwargs)

    unpinned_policy._verlkit_cpu = True
    module.CPUOffloadPolicy = unpinned_policy


def _patch_valuehead_loader(module) -> None:
    """The critic loader hard-codes flash-attention 2 and ignores override_config: load the value
    head with sdpa first, falling back to upstream's loader for models without a
    token-classification head."""
    original = module.load_valuehead_model
    if getattr(original, "_verlkit_cpu", False):
        return

    def load_valuehead_model(local_path, torch_dtype, model_config, trust_remote_code):
        from transformers import AutoModelForTokenClassification

        try:
            return AutoModelForTokenClassification.from_pretrained(
                local_path,
                torch_dtype=torch_dtype,
                config=model_config,
                attn_implementation="sdpa",
                trust_remote_code=trust_remote_code,
            )
        except (ValueError, KeyError) as exc:
            logger.warning("sdpa value-head load failed (%s); using verl's loader", exc)
            return original(local_path, torch_dtype, model_config, trust_remote_code)

    load_valuehead_model._verlkit_cpu = True
    module.load_valuehead_model = load_valuehead_model


def _register_rollout_adapter(module) -> None:
    module._ROLLOUT_REGISTRY.setdefault(("hf", "async"), "verlkit.cpu_profile.hf_rollout.HFRolloutAdapter")


def _register_rollout_replica(module) -> None:
    def load_hf_replica():
        from verlkit.cpu_profile.hf_rollout import HFReplica

        return HFReplica

    def load_frozen_vllm_replica():
        from verlkit.cpu_profile.frozen_vllm import FrozenVLLMReplica

        return FrozenVLLMReplica

    module.RolloutReplicaRegistry.register("hf", load_hf_replica)
    # frozen served models (verifier, judge, downstream LLM, reward model) for verl's RewardModelManager
    module.RolloutReplicaRegistry.register("vllm_cpu", load_frozen_vllm_replica)


def arm(on_import) -> None:
    patch_process_group()
    on_import("verl.workers.engine.fsdp.transformer_impl", _patch_fsdp_engine)
    on_import("verl.utils.model", _patch_valuehead_loader)
    on_import("verl.workers.rollout.base", _register_rollout_adapter)
    on_import("verl.workers.rollout.replica", _register_rollout_replica)
