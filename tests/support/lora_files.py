"""Small PEFT LoRA adapter directories written by hand (random matrices), for the tests of code that
reads, merges or moves adapters without training one."""

from __future__ import annotations

import json
from pathlib import Path

MODULES = ("base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.0.mlp.up_proj")
SHAPES = {MODULES[0]: (6, 5), MODULES[1]: (7, 5)}  # (out, in)


def write_adapter(path: Path, rank: int, alpha: int, seed: int, modules=MODULES):
    """``path/adapter_model.safetensors`` and ``adapter_config.json``; returns (path, tensors, alpha/rank)."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for m in modules:
        out_features, in_features = SHAPES[m]
        tensors[f"{m}.lora_A.weight"] = torch.randn(rank, in_features, generator=g)
        tensors[f"{m}.lora_B.weight"] = torch.randn(out_features, rank, generator=g)
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/m", "r": rank,
                                                          "lora_alpha": alpha, "target_modules": ["q_proj"]}))  # fmt: skip
    return path, tensors, alpha / rank
