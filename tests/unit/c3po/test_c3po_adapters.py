"""verlkit.c3po.adapters: two LoRA adapters concatenated into one whose update is exactly the weighted sum
of theirs (checked against the updates computed directly from each adapter's own matrices)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from support.lora_files import MODULES, SHAPES
from support.lora_files import write_adapter as adapter

from verlkit.c3po.adapters import concatenate_adapters, main


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


def test_the_merge_agrees_with_peft_cat_combination_on_the_tiny_model(tmp_path, tiny_model_dir):
    """Two real PEFT adapters of the tiny model (random B, so that they change the output): the logits
    with our concatenated adapter equal those with PEFT's own ``add_weighted_adapter(..., "cat")``."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    def base():
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, torch_dtype=torch.float32)

    for name, rank, alpha, seed in (("a", 4, 8, 1), ("b", 2, 8, 2)):
        torch.manual_seed(seed)
        model = get_peft_model(base(), LoraConfig(r=rank, lora_alpha=alpha, target_modules=["q_proj", "v_proj"]))
        for key, p in model.named_parameters():
            if "lora_B" in key:
                torch.nn.init.normal_(p, std=0.5)
        model.save_pretrained(tmp_path / name)
    merged = concatenate_adapters([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad():
        ours = PeftModel.from_pretrained(base(), merged)(ids).logits
        reference = PeftModel.from_pretrained(base(), tmp_path / "a", adapter_name="a")
        reference.load_adapter(tmp_path / "b", adapter_name="b")
        reference.add_weighted_adapter(["a", "b"], [1.0, 1.0], "ab", combination_type="cat")
        reference.set_adapter("ab")
        expected = reference(ids).logits
        plain = base()(ids).logits
    assert not torch.allclose(expected, plain, atol=1e-3)  # the adapters do change the output
    assert torch.allclose(ours, expected, atol=1e-4)
