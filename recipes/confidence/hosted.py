"""Hosted downstream models for Prompt4Trust (cgp) by name, as the original offers them beside open models.

``bash run_confidence.sh <policy> cgp gpt-4o-mini-2024-07-18`` names a preset as the downstream model:
the preset fills in the provider's OpenAI-compatible API base URL, the model name requests use, the NAME
of the environment variable that holds the key and a default request rate. Every value the user set
(``DOWNSTREAM_URL``, ``DOWNSTREAM_API_KEY_ENV``, ``DOWNSTREAM_RATE_LIMIT_RPS`` or the matching
``recipe.downstream.*`` override) wins over the preset's; with ``DOWNSTREAM_URL`` set, no preset applies
(the name is then just the hosted API's model name). Any other downstream model (a model directory,
``local:<name>``) is served by us, as before: the default.

The key is checked before anything starts (no data preparation, no server, no training): a run whose
key variable is unset stops with a message naming the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from recipes.compose import quoted


@dataclass(frozen=True)
class HostedModel:
    url: str  # the provider's OpenAI-compatible API base URL (the client appends /chat/completions)
    served_name: str  # the model name requests carry
    api_key_env: str  # the NAME of the environment variable holding the key
    rate_limit_rps: float  # requests per second per reward worker


# Default rates stay under the provider's entry-level limits, so that a first run is not refused with
# 429s: OpenAI's usage tier 1 allows gpt-4o-mini 500 requests/min (8/s would be 480/min); the Gemini
# API's free tier allows gemini-2.0-flash 15 requests/min (0.25/s). A paid tier raises them:
# DOWNSTREAM_RATE_LIMIT_RPS.
HOSTED_DOWNSTREAMS: dict[str, HostedModel] = {
    "gpt-4o-mini-2024-07-18": HostedModel(
        url="https://api.openai.com/v1", served_name="gpt-4o-mini-2024-07-18", api_key_env="OPENAI_API_KEY",
        rate_limit_rps=8.0),  # fmt: skip
    "gemini-2.0-flash-001": HostedModel(
        url="https://generativelanguage.googleapis.com/v1beta/openai", served_name="gemini-2.0-flash-001",
        api_key_env="GEMINI_API_KEY", rate_limit_rps=0.25),  # fmt: skip
}


def preset_overrides(downstream) -> list[str]:
    """The ``recipe.downstream.*`` overrides a preset adds for the composed ``recipe.downstream`` section
    (nothing when its model is not a preset's name or a URL is set). Values the user set are kept."""
    preset = HOSTED_DOWNSTREAMS.get(str(downstream.model or ""))
    if preset is None or downstream.url:
        return []
    out = [f"recipe.downstream.url={quoted(preset.url)}"]
    if not downstream.api_key_env:
        out.append(f"recipe.downstream.api_key_env={quoted(preset.api_key_env)}")
    if downstream.rate_limit_rps is None:
        out.append(f"recipe.downstream.rate_limit_rps={preset.rate_limit_rps}")
    out.append(f"recipe.downstream.served_name={quoted(preset.served_name)}")
    return out


def missing_key(downstream, environ=os.environ) -> str | None:
    """A message naming the key's variable when a hosted downstream model's key is not in the
    environment; None when there is nothing to check or the key is there."""
    name = downstream.api_key_env
    if not downstream.url or not name or environ.get(name):
        return None
    preset = HOSTED_DOWNSTREAMS.get(str(downstream.model or ""))
    which = f"the hosted downstream model {downstream.model}" if preset else f"the downstream API {downstream.url}"
    return (f"{which} needs its API key in the environment variable {name}, which is empty or unset: "
            f"export {name}=... (or name another variable with DOWNSTREAM_API_KEY_ENV)")
