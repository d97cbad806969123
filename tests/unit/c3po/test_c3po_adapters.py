"""verlkit.c3po.adapters: two LoRA adapters concatenated into one whose update is exactly the weighted sum
of theirs (checked against the updates computed directly from each adapter's own matrices)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from verlkit.c3po.adapters import concatenate_adapters, main

MODULES = ("base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.0.mlp.up_proj")
SHAPES = {MODULES[0]: (6, 5), MODULES[1]: (7, 5)}  # (out, in)


def adapter(path, rank, alpha, seed, modules=MODULES):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for m in modules:
        out_features, in_features = SHAPES[m]
        tensors[f"{m}.lora_A.weight"] = torch.randn(rank, in_features, generator=g)
        tensors[f"{m}.lora_B.weight"] = torch.randn(out_features, rank, generator=g)
    path.mkdir()
    save_file(tensors, str(path / "adapter_model.safetensors"))
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/m", "r": rank,
                                                          "lora_alpha": alpha, "target_modules": ["q_proj"]}))  # fmt: skip
    return path, tensors, alpha / rank


def test_the_merged_update_is_the_weighted_sum_of_the_two_updates(tmp_path):
    a, ta, sa = adapter(tmp_path / "a", rank=4, alpha=8, seed=1)  # scale 2
    b, tb, sb = adapter(tmp_path / "b", rank=2, alpha=2, seed=2)  # scale 1
    out = concatenate_adapters([a, b], tmp_path / "ab", weights=[1.0, 0.5])
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["target_modules"]) == (6, 6, ["q_proj"])
    merged = load_file(str(out / "adapter_model.safetensors"))
    for m in MODULES:
        A, B = merged[f"{m}.lora_A.weight"], merged[f"{m}.lora_B.weight"]
        assert A.shape == (6, 5) and B.shape == (SHAPES[m][0], 6)
        expected = 1.0 * sa * ta[f"{m}.lora_B.weight"] @ ta[f"{m}.lora_A.weight"] \
            + 0.5 * sb * tb[f"{m}.lora_B.weight"] @ tb[f"{m}.lora_A.weight"]
        assert torch.allclose(B @ A, expected, atol=1e-5)  # scale of the merged adapter: 6/6 = 1
        # averaging the matrices instead would not give the sum of the updates
        naive = (ta[f"{m}.lora_B.weight"][:, :2] + tb[f"{m}.lora_B.weight"]) @ (ta[f"{m}.lora_A.weight"][:2] + tb[f"{m}.lora_A.weight"])
        assert not torch.allclose(naive, expected, atol=1e-3)


def test_adapters_of_other_modules_are_refused(tmp_path, capsys):
    a, _, _ = adapter(tmp_path / "a", rank=2, alpha=4, seed=1)
    b, _, _ = adapter(tmp_path / "b", rank=2, alpha=4, seed=2, modules=MODULES[:1])
    with pytest.raises(ValueError, match="other adapted modules"):
        concatenate_adapters([a, b], tmp_path / "ab")
    assert main([str(a), str(b), "--out", str(tmp_path / "cli")]) == 2
    assert "other adapted modules" in capsys.readouterr().err
    assert main([str(a), str(a), "--out", str(tmp_path / "aa")]) == 0
