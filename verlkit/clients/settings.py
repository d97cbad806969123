"""Where and how to reach one served model, as users spell it: the settings every model-scored reward
(``reward_kwargs.<reward>.url=...``) and every evaluation CLI (``--url``, ``--timeout-s``, ...) share.

:meth:`ClientSettings.client_config` is the one place that turns them into the client's
:class:`~verlkit.clients.llm.ClientConfig`. Sampling parameters (``max_tokens``, ``temperature``)
are not settings of the client: they go with each request and their defaults differ per use, so
rewards and CLIs declare them next to these.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

from verlkit.clients.llm import ClientConfig


class ClientSettings(BaseModel):
    """A served OpenAI-compatible model and the client's limits for it. Values from hydra or env JSON
    may be strings (``"64"``); pydantic converts them."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    url: str  # OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1
    model: str = Field(min_length=1)  # served model name
    api_key_env: str | None = None  # NAME of the env variable holding the key; the key never appears here
    max_concurrency: int = Field(64, ge=1)
    timeout_s: float = Field(60.0, gt=0)  # per HTTP attempt
    max_retries: int = Field(3, ge=0)  # extra attempts, transport errors and 5xx only
    backoff_s: float = Field(0.5, ge=0)
    cache_size: int = Field(100_000, ge=0)  # 0: no cross-call cache (in-flight dedupe stays on)
    rate_limit_rps: float | None = Field(None, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as http://127.0.0.1:8000/v1")
        return url

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _empty_is_none(cls, name):
        return None if name == "" else name

    @field_validator("api_key_env")
    @classmethod
    def _key_is_set(cls, name: str | None) -> str | None:
        # Checked here so that a missing key stops a run before its first request, not on every row.
        if name and not os.environ.get(name):
            raise ValueError(f"the environment variable {name} is not set")
        return name

    def client_config(self) -> ClientConfig:
        """The client's configuration for these settings (``get_client(settings.client_config())``)."""
        return ClientConfig(base_url=self.url, model=self.model, api_key_env=self.api_key_env,
                            max_concurrency=self.max_concurrency, timeout_s=self.timeout_s,
                            max_retries=self.max_retries, backoff_s=self.backoff_s, cache_size=self.cache_size,
                            rate_limit_rps=self.rate_limit_rps)
