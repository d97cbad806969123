"""A fault-injecting reverse proxy for an OpenAI-compatible server, on 127.0.0.1, with a per-request
ledger. Used by the fault soak (``benchmarks/soak_rewards.py``) in front of a real vLLM verifier.

Requests that carry the client's ``X-Request-Id`` (``verlkit.clients.llm``) are *logical requests*:
the first time an id is seen it gets the next index, and the :class:`FaultPlan` may assign it a
request-level fault that then hits every attempt of that id (so the client's retries cannot get
past it and the request must end up failed and flagged):

* ``http_5xx``   HTTP 503 (assigned to a burst of consecutive new requests);
* ``http_429``   HTTP 429 with ``Retry-After: 1``;
* ``garbage``    HTTP 200 whose body is not JSON;
* ``truncated``  HTTP 200 whose body stops half way (the connection closes early);
* ``latency``    the upstream reply held back until 10x the upstream's own latency has passed.

Server-level faults (``server_kill``: the server SIGKILLed and restarted; ``server_freeze``: the
server SIGSTOPped for longer than the client's timeout) are done by the soak to the real server; the
proxy only learns their time windows (:meth:`FaultProxy.window`) to attribute failed attempts.

The ledger is exact by construction: an attempt is either *delivered* (a complete, valid reply sent
with at least ``margin_s`` left before the client's deadline ``timeout_s``) or *failed* (a fault
reply, an upstream error answered 502, or a reply held until ``margin_s`` past the client's deadline,
so the client has certainly timed out). A logical request failed iff none of its attempts was
delivered. Requests without the header (readiness probes) pass through untouched and unrecorded.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

REQUEST_KINDS = ("http_5xx", "http_429", "garbage", "truncated", "latency")
SERVER_KINDS = ("server_kill", "server_freeze")
KINDS = REQUEST_KINDS + SERVER_KINDS
LATENCY_FACTOR = 10.0
BURST = 3  # new requests in one burst of 5xx


@dataclass
class FaultPlan:
    """Which new-request index gets which fault; server events fire when their index is reached.

    ``requests`` is how many logical requests the run is expected to make; faults are placed at
    seeded random indices in its first 80 % so that they happen even if the run makes fewer.
    ``per_kind`` request-level faults (bursts for 5xx) and ``server_events`` of each server kind.
    """

    seed: int
    requests: int
    per_kind: int = 2
    server_events: int = 1
    by_index: dict[int, str] = field(default_factory=dict)
    events: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        span = max(20, int(self.requests * 0.8))
        free = list(range(5, span))  # the first few requests warm the server up
        rng.shuffle(free)
        taken: set[int] = set()

        def take(width: int) -> int:
            for i, start in enumerate(free):
                block = range(start, start + width)
                if not taken & set(block) and start + width <= span:
                    free.pop(i)
                    taken.update(block)
                    return start
            raise ValueError(f"no room for {width} more faults in {span} requests: lower the fault counts")

        for kind in REQUEST_KINDS:
            for _ in range(self.per_kind):
                width = BURST if kind == "http_5xx" else 1
                start = take(width)
                for j in range(start, start + width):
                    self.by_index[j] = kind
        for kind in SERVER_KINDS:
            for _ in range(self.server_events):
                self.events[take(1)] = kind


@dataclass
class Attempt:
    arrival: float
    end: float = 0.0
    delivered: bool = False
    kind: str | None = None  # the fault that failed it ("unexplained" if none), None if delivered
    status: int = 0
    detail: str | None = None  # for a server fault or an unexplained one: "upstream" error or "slow"


@dataclass
class Request:
    index: int
    planned: str | None  # request-level fault assigned to it
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.attempts) and not any(a.delivered for a in self.attempts)

    @property
    def cause(self) -> str | None:
        """The fault a failed request is attributed to: what failed its last attempt."""
        return self.attempts[-1].kind if self.failed else None


class FaultProxy:
    """``FaultProxy(upstream, plan, timeout_s).start()`` -> ``.base_url``; ``on_event`` is called (in
    the proxy's thread; it must not block) when a server event's index is reached."""

    def __init__(self, upstream_root: str, plan: FaultPlan, timeout_s: float, margin_s: float = 1.0,
                 on_event=None):  # fmt: skip
        self.upstream_root = upstream_root.rstrip("/")  # http://127.0.0.1:PORT (no /v1)
        self.plan, self.timeout_s, self.margin_s, self.on_event = plan, timeout_s, margin_s, on_event
        self.requests: dict[str, Request] = {}
        self.windows: list[tuple[str, float, float]] = []  # (kind, start, end); end=inf while open
        self.passthrough = 0
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fault-proxy", daemon=True)
        self.base_url = ""

    # -- lifecycle

    def start(self) -> FaultProxy:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(30)
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def _serve(self) -> int:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        async def stop():
            await self.runner.cleanup()
            await self.session.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # -- server fault windows (called by the soak from its own thread)

    def window(self, kind: str, start: float, end: float = float("inf")) -> int:
        with self._lock:
            self.windows.append((kind, start, end))
            return len(self.windows) - 1

    def close_window(self, handle: int, end: float) -> None:
        with self._lock:
            kind, start, _ = self.windows[handle]
            self.windows[handle] = (kind, start, end)

    def _server_fault_during(self, start: float, end: float) -> str | None:
        with self._lock:
            for kind, w_start, w_end in self.windows:
                if w_start <= end and start <= w_end:
                    return kind
        return None

    # -- the handler

    def _register(self, rid: str) -> Request:
        with self._lock:
            req = self.requests.get(rid)
            if req is None:
                index = len(self.requests)
                req = self.requests[rid] = Request(index, self.plan.by_index.get(index))
                event = self.plan.events.get(index)
                if event and self.on_event:
                    self.on_event(event)
            return req

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrival = time.monotonic()
        body = await request.read()
        rid = request.headers.get("X-Request-Id")
        if rid is None or request.method != "POST":
            self.passthrough += 1
            status, headers, data = await self._upstream(request, body)
            return web.Response(status=status, body=data, content_type=headers.get("Content-Type", "application/json"))
        req = self._register(rid)
        attempt = Attempt(arrival)
        req.attempts.append(attempt)
        try:
            return await self._attempt(request, body, req.planned, attempt)
        finally:
            attempt.end = time.monotonic()
            if not attempt.delivered and attempt.kind in (None, "upstream", "slow"):
                # not a request-level fault: a server fault around it, or a failure nobody injected
                attempt.detail = attempt.kind
                attempt.kind = self._server_fault_during(attempt.arrival, attempt.end) or "unexplained"

    async def _attempt(self, request, body: bytes, planned: str | None, attempt: Attempt) -> web.StreamResponse:
        deliver_by = attempt.arrival + self.timeout_s - self.margin_s
        if planned == "http_5xx":
            return self._fail(attempt, planned, web.Response(status=503, text="overloaded (injected)"))
        if planned == "http_429":
            return self._fail(attempt, planned, web.Response(status=429, text="rate limited (injected)",
                                                             headers={"Retry-After": "1"}))  # fmt: skip
        if planned == "garbage":
            return self._fail(attempt, planned, web.Response(status=200, body=b"\x00\xff<html>not json{",
                                                             content_type="application/json"))  # fmt: skip
        try:
            status, headers, data = await asyncio.wait_for(self._upstream(request, body),
                                                           max(0.0, deliver_by - time.monotonic()))  # fmt: skip
        except asyncio.TimeoutError:
            return await self._hold_past_deadline(attempt, planned or "slow")
        except (aiohttp.ClientError, OSError):
            return self._fail(attempt, planned or "upstream", web.Response(status=502, text="upstream unreachable"))
        if planned == "truncated":
            attempt.kind, attempt.status = planned, 200
            resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            request.transport.close()  # the rest never comes: the client sees a broken payload
            return resp
        if planned == "latency":
            target = attempt.arrival + LATENCY_FACTOR * (time.monotonic() - attempt.arrival)
            if target > deliver_by:
                return await self._hold_past_deadline(attempt, planned)
            await asyncio.sleep(target - time.monotonic())
        if status != 200:  # the real server refused it: not ours to count as delivered
            return self._fail(attempt, planned or "upstream", web.Response(status=status, body=data))
        if time.monotonic() > deliver_by:
            return await self._hold_past_deadline(attempt, planned or "slow")
        attempt.delivered, attempt.status = True, 200
        return web.Response(status=200, body=data, content_type="application/json")

    def _fail(self, attempt: Attempt, kind: str, response: web.Response) -> web.Response:
        attempt.kind, attempt.status = kind, response.status
        return response

    async def _hold_past_deadline(self, attempt: Attempt, kind: str) -> web.Response:
        """Answer only after the client's own timeout has certainly fired."""
        attempt.kind, attempt.status = kind, 504
        await asyncio.sleep(max(0.0, attempt.arrival + self.timeout_s + self.margin_s - time.monotonic()))
        return web.Response(status=504, text="too late (injected)")

    async def _upstream(self, request: web.Request, body: bytes) -> tuple[int, dict, bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self.session.request(request.method, self.upstream_root + request.rel_url.path_qs, data=body or None,
                                        headers=headers) as resp:  # fmt: skip
            return resp.status, dict(resp.headers), await resp.read()

    # -- the ledger

    def summary(self) -> dict:
        """Per fault kind: attempts it failed, logical requests it touched, requests that failed on it."""
        with self._lock:
            requests = list(self.requests.values())
        attempts, touched, failed = Counter(), Counter(), Counter()
        for req in requests:
            kinds = {a.kind for a in req.attempts if not a.delivered}
            for a in req.attempts:
                if not a.delivered:
                    attempts[a.kind] += 1
            for kind in kinds:
                touched[kind] += 1
            if req.failed:
                failed[req.cause] += 1
        return {"requests": len(requests), "failed": sum(failed.values()), "attempts": dict(attempts),
                "touched": dict(touched), "failed_by_kind": dict(failed)}  # fmt: skip

    def dump(self, path) -> None:
        """The ledger as JSON lines: one per logical request, its attempts relative to the first."""
        import json

        with self._lock, open(path, "w") as f:
            for rid, req in self.requests.items():
                t0 = req.attempts[0].arrival if req.attempts else 0.0
                f.write(json.dumps({"request_id": rid, "index": req.index, "planned": req.planned,
                                    "failed": req.failed, "cause": req.cause,
                                    "attempts": [{"start": round(a.arrival - t0, 3), "end": round(a.end - t0, 3),
                                                  "delivered": a.delivered, "kind": a.kind, "detail": a.detail,
                                                  "status": a.status} for a in req.attempts]}) + "\n")  # fmt: skip

    def failed_ids(self) -> dict[str, str]:
        """request id -> the fault its failure is attributed to."""
        with self._lock:
            return {rid: req.cause for rid, req in self.requests.items() if req.failed}
