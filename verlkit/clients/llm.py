"""The one async HTTP client for every model-scored reward (verifier, RRM, judge, teacher, ...).

Talks to any OpenAI-compatible server (vLLM by default): ``/v1/chat/completions`` and
``/v1/completions``. What it guarantees:

- **One aiohttp session per process**, created lazily on the process's background event loop
  (``verlkit.clients.loop``), so sync callers (``run_sync``) and async callers on any loop
  share it. Nothing happens at import time.
- **Bounded concurrency** per client (a semaphore of ``max_concurrency``) and an optional request
  rate limit (``rate_limit_rps``). Both hold per client, i.e. per config per PROCESS: every process
  that scores (in a verl run each of the ``reward.num_workers`` reward-loop workers, default 8, plus
  the driver's validation if it scores itself) has its own client, so a run sends up to
  ``processes x rate_limit_rps`` requests/s. To stay under a provider's limit R, set
  ``rate_limit_rps = R / reward.num_workers`` (the recipes' CPU profile runs 1 worker).
- **A timeout per HTTP attempt** (``timeout_s``), measured from when the attempt starts, not from
  when the caller queued (waiting for a concurrency slot is not counted).
- **Bounded retries** (``max_retries``) with exponential backoff and jitter, for transport errors
  (connection refused/reset, timeouts, truncated bodies), HTTP 5xx and HTTP 429 (rate limited). A 429
  with ``Retry-After`` (seconds or an HTTP date) waits what the server asks instead of the backoff,
  unless that wait would end past the request's deadline, ``(max_retries + 1) x timeout_s`` from its
  first attempt: then it fails at once, saying so. Other 4xx (bad request, unknown model) and
  well-formed-but-unusable replies are not retried: resending the same request would get the same answer.
- **Traceable requests**: each request carries an ``X-Request-Id`` header (the same on its retries,
  ``Completion.request_id``), recorded per call by ``verlkit.clients.ledger`` when it is enabled.
- **Deduplication and caching** of deterministic requests (temperature 0, or an explicit seed):
  identical requests in flight share one HTTP request; finished successful replies are kept in an
  LRU cache (``cache_size`` entries) keyed by the full request (model, messages/prompt, every
  sampling parameter), so a later step asking the same question costs nothing. Sampled requests
  (temperature > 0 without a seed) are never shared or cached: each must be an independent draw.
- **Never raises for server or transport failures**: the caller gets ``Completion(ok=False,
  error=...)`` and decides (reward functions flag the row and apply their failure policy).

Use ``get_client(settings.client_config())`` with a ``verlkit.clients.settings.ClientSettings`` (how
rewards and CLIs spell the settings): one client per distinct config per process.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime
import email.utils
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from verlkit.clients.ledger import LEDGER_ENV, record_call
from verlkit.clients.loop import get_loop, run_async
from verlkit.clients.urls import server_root

logger = logging.getLogger("verlkit.llm_client")

_MAX_BACKOFF_S = 30.0
_JITTER_MAX = 1.5  # a retry waits the nominal delay times a factor drawn from [0.5, 1.5)
_sleep = asyncio.sleep  # the backoff wait; a module attribute so tests can record the delays
_ERROR_BODY_CHARS = 300


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to call one served model. Hashable: it is the key of ``get_client``."""

    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    api_key_env: str | None = None  # name of the env var holding the key; the key itself never appears here
    max_concurrency: int = 64
    timeout_s: float = 60.0  # per HTTP attempt
    max_retries: int = 3  # extra attempts after the first, for transport errors and 5xx only
    backoff_s: float = 0.5  # first retry waits ~backoff_s, then doubling, with jitter
    cache_size: int = 100_000  # 0 disables the cross-step cache (in-flight dedupe stays on)
    rate_limit_rps: float | None = None

    def __post_init__(self) -> None:
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"ClientConfig.base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise ValueError("ClientConfig.model must be a non-empty model name")
        if self.max_concurrency < 1:
            raise ValueError(f"ClientConfig.max_concurrency must be >= 1, got {self.max_concurrency}")
        if not self.timeout_s > 0:
            raise ValueError(f"ClientConfig.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"ClientConfig.max_retries must be >= 0, got {self.max_retries}")
        if self.backoff_s < 0:
            raise ValueError(f"ClientConfig.backoff_s must be >= 0, got {self.backoff_s}")
        if self.cache_size < 0:
            raise ValueError(f"ClientConfig.cache_size must be >= 0, got {self.cache_size}")
        if self.rate_limit_rps is not None and not self.rate_limit_rps > 0:
            raise ValueError(f"ClientConfig.rate_limit_rps must be > 0 or None, got {self.rate_limit_rps}")


@dataclass
class Completion:
    """The outcome of one logical request. ``text`` is None exactly when ``ok`` is False."""

    text: str | None
    ok: bool
    error: str | None
    cache_hit: bool  # served without an HTTP request of its own (LRU cache or a shared in-flight request)
    latency_s: float  # wall time of this call as the caller saw it (0 for a cache hit)
    attempts: int  # HTTP attempts made for this call (0 when served from cache or a shared request)
    deduped: bool = False  # True when it shared another caller's in-flight request
    raw: dict | None = field(default=None, repr=False)  # the parsed JSON reply, when there was one
    value: float | None = None  # classify(): the reward model's output
    request_id: str | None = None  # the X-Request-Id of the HTTP request that answered (None: cache hit)


class _RetryableError(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s  # the server's Retry-After, when it sent one


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110 §10.2.3),
    relative to ``now`` (epoch seconds, default the current time); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT by definition
            when = when.replace(tzinfo=datetime.timezone.utc)
        return max(0.0, when.timestamp() - (time.time() if now is None else now))
    return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None


class _FinalError(Exception):
    pass


def worst_case_s(config: ClientConfig, retry_after_s: float = 0.0) -> float:
    """The longest one call can take once it holds a concurrency slot: every attempt runs into its
    timeout, and every retry waits its longest backoff or a server's ``Retry-After`` of up to
    ``retry_after_s`` (a wait past the request's deadline, ``(max_retries + 1) x timeout_s``, is never
    made): ``timeout_s * (max_retries + 1) + backoff``."""
    longest_retry_after = min(retry_after_s, config.timeout_s * (config.max_retries + 1))
    backoff = sum(
        max(min(_MAX_BACKOFF_S, config.backoff_s * 2 ** (k - 1)) * _JITTER_MAX, longest_retry_after)
        for k in range(1, config.max_retries + 1)
    )
    return config.timeout_s * (config.max_retries + 1) + backoff


# One session per process, bound to the background loop. Recreated after a fork.
_session: Any = None
_session_pid: int | None = None


async def _get_session():
    """Runs on the background loop only."""
    global _session, _session_pid
    import aiohttp  # deferred: importing the reward module must stay cheap and I/O-free

    if _session is None or _session_pid != os.getpid() or _session.closed:
        # limit=0: per-client semaphores bound concurrency; the connector must not add a second cap.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        _session = aiohttp.ClientSession(connector=connector)
        if _session_pid is None:
            atexit.register(close_session)
        _session_pid = os.getpid()
    return _session


class LLMClient:
    """See the module docstring. Build it with ``get_client``."""

    def __init__(self, config: ClientConfig):
        self.config = config
        self._api_key: str | None = None
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise ValueError(
                    f"ClientConfig.api_key_env={config.api_key_env!r} but that environment variable is not set"
                )
            self._api_key = key
        # Loop-bound primitives are created on first use on the background loop.
        self._sem: asyncio.Semaphore | None = None
        self._rate_lock: asyncio.Lock | None = None
        self._next_slot = 0.0
        self._inflight: dict[str, asyncio.Future] = {}
        self._cache: OrderedDict[str, tuple[str, dict | None]] = OrderedDict()
        self._counters = dict.fromkeys(
            ("requests", "http_attempts", "ok", "failed", "retries", "cache_hits", "dedup_hits", "in_flight"), 0
        )
        self._latency_total = 0.0
        self._counter_lock = threading.Lock()

    # ------------------------------------------------------------------ public API
    async def chat(
        self,
        messages: list[dict],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        extra_body: dict | None = None,
    ) -> Completion:
        """One ``/chat/completions`` call; returns the first choice's message content."""
        payload = self._payload(max_tokens, temperature, top_p, seed, stop, extra_body)
        payload["messages"] = messages
        return await run_async(self._call("/chat/completions", payload, _chat_text))

    async def complete(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        extra_body: dict | None = None,
    ) -> Completion:
        """One ``/completions`` call; returns the first choice's text."""
        payload = self._payload(max_tokens, temperature, top_p, seed, stop, extra_body)
        payload["prompt"] = prompt
        return await run_async(self._call("/completions", payload, _completion_text))

    async def classify(self, input_ids: list[int] | str) -> Completion:
        """One vLLM ``/classify`` call (a served ``*ForSequenceClassification`` reward model) on a
        token-id list (exact: what the model was trained on) or a text. The head's raw output, no
        activation, as ``Completion.value``; ``text`` holds the same number printed exactly."""
        payload = {"model": self.config.model, "input": list(input_ids) if not isinstance(input_ids, str) else input_ids,
                   "use_activation": False}
        done = await run_async(self._call("/classify", payload, _classify_value, deterministic=True, root=True))
        if done.ok:
            done.value = float(done.text)
        return done

    def stats(self) -> dict:
        """Counters since creation: requests (logical calls), http_attempts, ok, failed, retries,
        cache_hits, dedup_hits, in_flight, cache_entries, mean_latency_s (over calls that made a request)."""
        with self._counter_lock:
            out: dict[str, float] = dict(self._counters)
        made = out["requests"] - out["cache_hits"] - out["dedup_hits"]
        out["cache_entries"] = len(self._cache)
        out["mean_latency_s"] = self._latency_total / made if made > 0 else 0.0
        return out

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ internals
    def _payload(self, max_tokens, temperature, top_p, seed, stop, extra_body) -> dict:
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
        payload: dict[str, Any] = {
            "model": self.config.model,
            "max_tokens": max_tokens,
            "temperature": float(temperature),
            "top_p": float(top_p),
        }
        if seed is not None:
            payload["seed"] = int(seed)
        if stop is not None:
            payload["stop"] = stop
        if extra_body:
            payload.update(extra_body)
        return payload

    def _count(self, **deltas: float) -> None:
        with self._counter_lock:
            for key, delta in deltas.items():
                self._counters[key] += delta

    async def _call(self, path: str, payload: dict, extract, deterministic: bool | None = None, root: bool = False) -> Completion:
        """Runs on the background loop: cache, dedupe, then the HTTP request; the outcome goes to the
        ledger when one is set."""
        started = time.monotonic()
        done = await self._call_unlogged(path, payload, extract, deterministic, root)
        ledger = os.environ.get(LEDGER_ENV)
        return record_call(done, ledger, started) if ledger else done

    async def _call_unlogged(self, path: str, payload: dict, extract, deterministic: bool | None, root: bool) -> Completion:
        """Cache, dedupe, then the HTTP request. ``root``: the path hangs off the server root
        (``/classify``), not off the ``/v1`` base URL."""
        self._count(requests=1)
        if deterministic is None:
            deterministic = payload["temperature"] == 0.0 or "seed" in payload
        if not deterministic:
            return await self._send(path, payload, extract, root)
        key = path + "\x00" + json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            self._count(cache_hits=1)
            return Completion(text=cached[0], ok=True, error=None, cache_hit=True, latency_s=0.0, attempts=0,
                              raw=cached[1])
        shared = self._inflight.get(key)
        if shared is not None:
            self._count(dedup_hits=1)
            start = time.monotonic()
            leader: Completion = await asyncio.shield(shared)
            return Completion(text=leader.text, ok=leader.ok, error=leader.error, cache_hit=True,
                              latency_s=time.monotonic() - start, attempts=0, deduped=True, raw=leader.raw,
                              request_id=leader.request_id)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._send(path, payload, extract, root)
        except BaseException as exc:  # cancellation of the leader: followers must not hang
            result = Completion(text=None, ok=False, error=f"cancelled: {exc!r}", cache_hit=False,
                                latency_s=0.0, attempts=0)
            future.set_result(result)
            raise
        finally:
            self._inflight.pop(key, None)
        if not future.done():
            future.set_result(result)
        if result.ok and self.config.cache_size > 0:
            self._cache[key] = (result.text, result.raw)
            if len(self._cache) > self.config.cache_size:
                self._cache.popitem(last=False)
        return result

    def _primitives(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.config.max_concurrency)
            self._rate_lock = asyncio.Lock()
        return self._sem

    async def _wait_rate_slot(self) -> None:
        if self.config.rate_limit_rps is None:
            return
        assert self._rate_lock is not None
        async with self._rate_lock:
            now = time.monotonic()
            wait = self._next_slot - now
            self._next_slot = max(now, self._next_slot) + 1.0 / self.config.rate_limit_rps
        if wait > 0:
            await asyncio.sleep(wait)

    async def _send(self, path: str, payload: dict, extract, root: bool = False) -> Completion:
        cfg = self.config
        url = (server_root(cfg.base_url) if root else cfg.base_url.rstrip("/")) + path
        request_id = uuid.uuid4().hex
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        sem = self._primitives()
        attempts, last_error = 0, "no attempt made"
        total_latency = 0.0
        deadline = time.monotonic() + (cfg.max_retries + 1) * cfg.timeout_s
        retry_after: float | None = None
        for attempt in range(cfg.max_retries + 1):
            if attempt and retry_after is not None:  # the server said when: wait that, within the deadline
                left = deadline - time.monotonic()
                if retry_after > left:
                    return self._failed(f"{last_error}; not retried: Retry-After {retry_after:.0f}s is past this "
                                        f"request's deadline ({max(left, 0.0):.0f}s left of (max_retries + 1) x "
                                        "timeout_s)", total_latency, attempts, request_id)
                self._count(retries=1)
                await _sleep(retry_after)
            elif attempt:
                self._count(retries=1)
                delay = min(_MAX_BACKOFF_S, cfg.backoff_s * (2 ** (attempt - 1)))
                await _sleep(delay * (0.5 + random.random()))  # full jitter around the nominal delay
            async with sem:
                await self._wait_rate_slot()
                attempts += 1
                self._count(http_attempts=1, in_flight=1)
                start = time.monotonic()
                try:
                    body = await self._post_once(url, headers, payload)
                    text = extract(body)
                    total_latency += time.monotonic() - start
                    self._count(ok=1)
                    self._latency_total += total_latency
                    return Completion(text=text, ok=True, error=None, cache_hit=False,
                                      latency_s=total_latency, attempts=attempts, raw=body, request_id=request_id)
                except _RetryableError as exc:
                    last_error, retry_after = str(exc), exc.retry_after_s
                except _FinalError as exc:
                    total_latency += time.monotonic() - start
                    return self._failed(str(exc), total_latency, attempts, request_id)
                finally:
                    self._count(in_flight=-1)
                total_latency += time.monotonic() - start
        return self._failed(f"gave up after {attempts} attempt(s): {last_error}", total_latency, attempts, request_id)

    def _failed(self, error: str, latency: float, attempts: int, request_id: str | None = None) -> Completion:
        self._count(failed=1)
        self._latency_total += latency
        logger.debug("LLM request to %s failed: %s", self.config.base_url, error)
        return Completion(text=None, ok=False, error=error, cache_hit=False, latency_s=latency, attempts=attempts,
                          request_id=request_id)

    async def _post_once(self, url: str, headers: dict, payload: dict) -> dict:
        import aiohttp

        session = await _get_session()
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with session.post(url, json=payload, headers=headers, timeout=timeout) as resp:
                raw = await resp.read()
                status = resp.status
                retry_after_header = resp.headers.get("Retry-After")
        except asyncio.TimeoutError as exc:
            raise _RetryableError(f"timeout after {self.config.timeout_s}s ({url})") from exc
        except aiohttp.ClientError as exc:  # refused, reset, truncated payload, ...
            raise _RetryableError(f"transport error ({url}): {type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise _RetryableError(f"transport error ({url}): {exc!r}") from exc
        snippet = raw[:_ERROR_BODY_CHARS].decode("utf-8", "replace")
        if status >= 500:
            raise _RetryableError(f"HTTP {status} from {url}: {snippet}")
        if status == 429:  # rate limited: retried, after the server's Retry-After when it gives one
            raise _RetryableError(f"HTTP 429 from {url}: {snippet}", parse_retry_after(retry_after_header))
        if status >= 400:
            raise _FinalError(f"HTTP {status} from {url} (not retried): {snippet}")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _FinalError(f"reply from {url} is not JSON: {snippet!r}") from exc
        if not isinstance(body, dict):
            raise _FinalError(f"reply from {url} is not a JSON object: {snippet!r}")
        return body


def _first_choice(body: dict) -> dict:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _FinalError(f"reply has no choices: {json.dumps(body)[:_ERROR_BODY_CHARS]}")
    return choices[0]


def _chat_text(body: dict) -> str:
    message = _first_choice(body).get("message")
    if not isinstance(message, dict):
        raise _FinalError(f"reply choice has no message: {json.dumps(body)[:_ERROR_BODY_CHARS]}")
    content = message.get("content")
    return content if isinstance(content, str) else ""  # None = the model produced no visible text


def _classify_value(body: dict) -> str:
    try:
        value = float(body["data"][0]["probs"][0])
    except (TypeError, KeyError, IndexError, ValueError):
        raise _FinalError(f"reply has no classification: {json.dumps(body)[:_ERROR_BODY_CHARS]}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise _FinalError(f"classification is not finite: {value}")
    return repr(value)


def _completion_text(body: dict) -> str:
    text = _first_choice(body).get("text")
    if not isinstance(text, str):
        raise _FinalError(f"reply choice has no text: {json.dumps(body)[:_ERROR_BODY_CHARS]}")
    return text


_clients: dict[ClientConfig, LLMClient] = {}
_clients_pid: int | None = None
_clients_lock = threading.Lock()


def get_client(config: ClientConfig) -> LLMClient:
    """The process's client for ``config`` (created on first use; no I/O until the first request)."""
    global _clients_pid
    with _clients_lock:
        if _clients_pid != os.getpid():  # after a fork, never reuse the parent's loop-bound state
            _clients.clear()
            _clients_pid = os.getpid()
        client = _clients.get(config)
        if client is None:
            client = _clients[config] = LLMClient(config)
        return client


async def _close_session() -> None:
    global _session
    if _session is not None and not _session.closed and _session_pid == os.getpid():
        await _session.close()
    _session = None


def close_session(timeout: float = 5.0) -> None:
    """Close the shared session (tests, clean shutdown). Safe to call when none exists."""
    if _session is None:
        return
    try:
        asyncio.run_coroutine_threadsafe(_close_session(), get_loop()).result(timeout)
    except Exception:  # shutdown path: nothing useful to do with a close failure
        logger.debug("closing the shared aiohttp session failed", exc_info=True)
