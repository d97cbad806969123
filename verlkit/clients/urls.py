"""OpenAI-compatible server addresses: ``http://host:port/v1`` (what clients are given) and its root."""

from __future__ import annotations


def normalize_base_url(url: str) -> str:
    """``url`` with no trailing slash, ending in ``/v1``."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def server_root(base_url: str) -> str:
    """``http://host:port`` of an OpenAI-style base URL ``http://host:port/v1`` (vLLM's non-OpenAI routes
    such as ``/classify`` and ``/v1/load_lora_adapter`` hang off it)."""
    url = normalize_base_url(base_url)
    return url[: -len("/v1")]
