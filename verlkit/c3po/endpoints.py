"""The served models C3PO talks to and how it asks them: one logical request with bounded re-asks.

- ``Endpoint``: one OpenAI-compatible server (the launcher's vLLM servers, or a hosted API whose key
  comes from the environment) and whether it takes vLLM's structured-output field;
- ``RequestLog``: the append-only resume log of the sampling stage (every reply as it arrives);
- ``RequestCounters``: requests, replays, re-asks and failures, reported per feedback;
- ``Asker``: sends one logical request, parses the reply, re-asks with the problem stated at most
  ``max_reasks`` times, and gives up with None (counted, never raised). The sampling stage asks the
  teacher and the completion model through it; the evaluation asks the judge.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from verlkit.c3po.constraints import Constraint
from verlkit.c3po.parsers import ParseError
from verlkit.c3po.prompts import reask_messages

__all__ = ["CONSTRAIN_CHOICES", "Asker", "Endpoint", "RequestCounters", "RequestLog", "use_constraints"]

logger = logging.getLogger("verlkit.c3po")

CONSTRAIN_CHOICES = ("auto", "on", "off")


def use_constraints(flag: str, url: str) -> bool:
    """Whether to send structured-output constraints to the server at ``url``: ``on``/``off`` as
    given; ``auto`` on loopback servers (the launcher's vLLM), as hosted APIs do not take the field."""
    if flag in ("on", "off"):
        return flag == "on"
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


@dataclass
class Endpoint:
    """One served model: where, which name, and whether it takes vLLM's structured-output field."""

    url: str
    model: str
    api_key_env: str | None = None
    constrained: bool = False
    max_concurrency: int = 32
    timeout_s: float = 300.0
    max_retries: int = 3

    def client(self):
        from verlkit.clients.llm import get_client
        from verlkit.clients.settings import ClientSettings

        settings = ClientSettings(url=self.url, model=self.model, api_key_env=self.api_key_env,
                                  max_concurrency=self.max_concurrency, timeout_s=self.timeout_s,
                                  max_retries=self.max_retries)
        return get_client(settings.client_config())


class RequestLog:
    """Append-only JSONL of ``{"key", "text"}``: every successful reply, written as it arrives.

    A request's key hashes everything that determines it (role, purpose, messages, decoding and the
    re-ask number), so a rerun asks the server only for what is not in the log yet and replays the
    logged replies unchanged: the data of an interrupted run equals that of an uninterrupted one.
    """

    def __init__(self, path: Path):
        self.path = path
        self.replies: dict[str, str] = {}
        self._lock = threading.Lock()
        if path.is_file():
            for i, line in enumerate(path.read_text().splitlines()):
                try:
                    item = json.loads(line)
                    self.replies[item["key"]] = item["text"]
                except (ValueError, KeyError, TypeError):
                    # a line cut by the interruption itself: the request is simply asked again
                    logger.warning("%s: line %d unreadable, ignored", path, i + 1)

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        return self.replies.get(key)

    def put(self, key: str, text: str) -> None:
        with self._lock:
            self.replies[key] = text
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": key, "text": text}, ensure_ascii=False) + "\n")
                f.flush()


@dataclass
class RequestCounters:
    """What happened to the requests of one feedback (written to its ``report.json``)."""

    requests: int = 0
    replayed: int = 0
    reasks: int = 0
    request_failures: int = 0
    parse_failures: int = 0  # gave up after the re-asks
    shortfalls: dict[str, int] = field(default_factory=dict)
    dropped_rows: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, table: str, key: str, n: int = 1) -> None:
        d = getattr(self, table)
        d[key] = d.get(key, 0) + n


class Asker:
    """Sends logical requests with one decoding setting; see the module docstring. With a ``log``,
    replies are replayed from it and appended to it (the sampling stage's resume)."""

    def __init__(self, *, max_reasks: int, temperature: float, top_p: float, log: RequestLog | None = None,
                 request_seeds: bool = False, counts: RequestCounters | None = None):  # fmt: skip
        self.max_reasks = max_reasks
        self.temperature = temperature
        self.top_p = top_p
        self.log = log
        self.request_seeds = request_seeds
        self.counts = counts if counts is not None else RequestCounters()

    async def ask(self, endpoint: Endpoint, role: str, purpose: str, messages: list[dict], max_tokens: int,
                  parse: Callable[[str], Any] | None = None, constraint: Constraint | None = None) -> Any:  # fmt: skip
        """One logical request with bounded re-asks. Returns the parsed value (or the stripped text
        when ``parse`` is None), or None when the request failed or every reply was unusable."""
        extra = None
        if constraint is not None and endpoint.constrained:
            extra = constraint.request_fields()
            # the longest reply the expression allows: anything shorter could cut a reply mid-format
            max_tokens = extra.pop("max_tokens")
        problem = ""
        for attempt in range(self.max_reasks + 1):
            key = RequestLog.key(role, endpoint.model, purpose, messages, self.temperature, self.top_p, max_tokens,
                                 extra, attempt)  # fmt: skip
            text = self.log.get(key) if self.log is not None else None
            if text is not None:
                self.counts.replayed += 1
            else:
                self.counts.requests += 1
                seed = int(key[:8], 16) if self.request_seeds else None
                done = await endpoint.client().chat(messages, max_tokens=max_tokens, temperature=self.temperature,
                                                    top_p=self.top_p, seed=seed, extra_body=extra)  # fmt: skip
                if not done.ok:
                    self.counts.request_failures += 1
                    self.counts.errors.append(f"{purpose}: {done.error}"[:300])
                    return None
                text = done.text
                if self.log is not None:
                    self.log.put(key, text)
            if parse is None:
                if text.strip():
                    return text.strip()
                problem = "the reply was empty"
            else:
                try:
                    return parse(text)
                except ParseError as e:
                    problem = str(e)
            if attempt < self.max_reasks:
                self.counts.reasks += 1
                messages = reask_messages(messages, text, problem)
        self.counts.parse_failures += 1
        self.counts.errors.append(f"{purpose}: unusable after {self.max_reasks} re-ask(s): {problem}"[:300])
        return None
