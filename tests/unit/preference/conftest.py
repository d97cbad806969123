from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    """The tiny local Qwen2's tokenizer (ChatML template)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)
