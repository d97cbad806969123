"""LLMClient retry / dedupe / cache / backoff / timeout behaviour.

These tests use the FAKE OpenAI server of ``support.fake_openai`` because they inject faults a real
vLLM server cannot produce on demand: HTTP 500s for the first N requests, replies that never come,
garbage bodies, 4xx. Behaviour against a real vLLM server is covered by
tests/integration/test_verifier_server.py.

The fake server reads its behaviour from the first message's content (``mode:...``) and counts the
requests it received per content.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from support.fake_openai import FakeOpenAIServer as FakeServer

from verlkit.clients import llm as llm_client
from verlkit.clients.loop import run_sync
from verlkit.clients.llm import ClientConfig, LLMClient, get_client


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def make(server: FakeServer, **kw) -> LLMClient:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return LLMClient(ClientConfig(base_url=server.base_url, model="fake", **kw))


def chat(client: LLMClient, content: str, **kw):
    kw.setdefault("max_tokens", 8)
    return run_sync(client.chat([{"role": "user", "content": content}], **kw), timeout=30)


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def test_ok_reply_and_stats(server):
    client = make(server)
    out = chat(client, "hello")
    assert out.ok and out.error is None and out.text.startswith("echo hello")
    assert out.attempts == 1 and not out.cache_hit and out.latency_s > 0
    stats = client.stats()
    assert stats["requests"] == 1 and stats["ok"] == 1 and stats["failed"] == 0 and stats["http_attempts"] == 1


def test_5xx_retried_then_succeeds(server):
    client = make(server, max_retries=3)
    out = chat(client, "mode:fail500x2")
    assert out.ok and out.attempts == 3
    assert server.counts["mode:fail500x2"] == 3
    assert client.stats()["retries"] == 2


def test_5xx_gives_up_after_bounded_retries_without_raising(server):
    client = make(server, max_retries=2)
    out = chat(client, "mode:always500")
    assert not out.ok and out.text is None
    assert out.attempts == 3 and server.counts["mode:always500"] == 3
    assert "503" in out.error and "gave up" in out.error
    assert client.stats()["failed"] == 1


def test_4xx_is_not_retried(server):
    client = make(server, max_retries=3)
    out = chat(client, "mode:bad400")
    assert not out.ok and out.attempts == 1 and server.counts["mode:bad400"] == 1
    assert "400" in out.error and "not retried" in out.error


def test_garbage_body_is_a_failure_not_an_exception(server):
    client = make(server, max_retries=3)
    out = chat(client, "mode:garbage")
    assert not out.ok and "not JSON" in out.error and out.attempts == 1


def test_timeout_per_attempt_then_retry(server):
    client = make(server, timeout_s=0.2, max_retries=1)
    start = time.monotonic()
    out = chat(client, "mode:hang")
    assert not out.ok and "timeout" in out.error
    assert out.attempts == 2 and server.counts["mode:hang"] == 2
    assert time.monotonic() - start < 5  # bounded: 2 x 0.2 s + backoff, not the server's "never"


def test_connection_refused_is_retried_and_reported():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = LLMClient(ClientConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=2, backoff_s=0.01))
    out = run_sync(client.chat([{"role": "user", "content": "x"}], max_tokens=4), timeout=30)
    assert not out.ok and out.attempts == 3 and "transport error" in out.error


def test_backoff_is_exponential_with_jitter(server, monkeypatch):
    delays: list[float] = []

    async def record(delay):
        delays.append(delay)

    monkeypatch.setattr(llm_client, "_sleep", record)
    client = make(server, max_retries=3, backoff_s=1.0)
    out = chat(client, "mode:always500")
    assert not out.ok and len(delays) == 3
    for i, delay in enumerate(delays):  # nominal 1, 2, 4 s, each jittered into [0.5x, 1.5x]
        assert 0.5 * 2**i <= delay <= 1.5 * 2**i


def _record_sleeps(monkeypatch) -> list[float]:
    delays: list[float] = []

    async def record(delay):
        delays.append(delay)

    monkeypatch.setattr(llm_client, "_sleep", record)
    return delays


def test_429_with_retry_after_seconds_waits_what_the_server_asks(server, monkeypatch):
    delays = _record_sleeps(monkeypatch)
    client = make(server, max_retries=3, backoff_s=0.01, timeout_s=10.0)
    out = chat(client, "mode:ratelimit429x2:7")
    assert out.ok and out.attempts == 3 and delays == [7.0, 7.0]
    assert server.counts["mode:ratelimit429x2:7"] == 3


def test_429_with_an_http_date_waits_until_that_date(server, monkeypatch):
    delays = _record_sleeps(monkeypatch)
    client = make(server, max_retries=1, timeout_s=30.0)
    out = chat(client, "mode:ratelimit429datex1:20")
    assert out.ok and out.attempts == 2 and len(delays) == 1
    assert 18.0 <= delays[0] <= 21.0  # the date has whole seconds and the reply took a moment


def test_429_without_retry_after_uses_the_normal_backoff(server, monkeypatch):
    delays = _record_sleeps(monkeypatch)
    client = make(server, max_retries=2, backoff_s=1.0)
    out = chat(client, "mode:ratelimit429x1")
    assert out.ok and out.attempts == 2 and len(delays) == 1 and 0.5 <= delays[0] <= 1.5


def test_429_asking_past_the_deadline_fails_at_once_and_says_why(server, monkeypatch):
    delays = _record_sleeps(monkeypatch)
    client = make(server, max_retries=2, timeout_s=5.0)  # deadline: 3 x 5 s = 15 s
    out = chat(client, "mode:ratelimit429x9:120")
    assert not out.ok and out.attempts == 1 and delays == []
    assert "429" in out.error and "Retry-After 120s is past this request's deadline" in out.error


def test_429_retries_stay_within_the_retry_budget(server, monkeypatch):
    delays = _record_sleeps(monkeypatch)
    client = make(server, max_retries=2, timeout_s=10.0)
    out = chat(client, "mode:ratelimit429x9:1")
    assert not out.ok and out.attempts == 3 and delays == [1.0, 1.0] and "gave up after 3 attempt(s)" in out.error


def test_identical_requests_in_flight_share_one_http_request(server):
    client = make(server)

    async def scenario():
        calls = [asyncio.ensure_future(client.chat([{"role": "user", "content": "mode:hold"}], max_tokens=8))
                 for _ in range(10)]
        await wait_until(lambda: client.stats()["dedup_hits"] == 9)
        server.release_all()
        return await asyncio.gather(*calls)

    results = asyncio.run(scenario())
    assert server.counts["mode:hold"] == 1
    assert all(r.ok and r.text == results[0].text for r in results)
    assert sum(r.deduped for r in results) == 9 and sum(r.attempts for r in results) == 1


def test_cache_across_calls_only_for_deterministic_requests(server):
    client = make(server)
    first = chat(client, "cached")
    second = chat(client, "cached")
    assert second.ok and second.cache_hit and second.attempts == 0 and second.text == first.text
    assert server.counts["cached"] == 1
    # A different sampling parameter is a different request.
    chat(client, "cached", max_tokens=9)
    assert server.counts["cached"] == 2
    # Sampled requests are independent draws: never cached or shared...
    chat(client, "sampled", temperature=0.7)
    chat(client, "sampled", temperature=0.7)
    assert server.counts["sampled"] == 2
    # ...unless seeded.
    chat(client, "seeded", temperature=0.7, seed=3)
    assert chat(client, "seeded", temperature=0.7, seed=3).cache_hit
    assert server.counts["seeded"] == 1
    assert client.stats()["cache_hits"] == 2


def test_failures_are_not_cached(server):
    client = make(server, max_retries=0)
    assert not chat(client, "mode:fail500x1").ok
    again = chat(client, "mode:fail500x1")
    assert again.ok and not again.cache_hit and server.counts["mode:fail500x1"] == 2


def test_cache_is_bounded_lru(server):
    client = make(server, cache_size=2)
    for content in ("a", "b", "a", "c"):  # "a" was used recently, so "b" is evicted
        chat(client, content)
    assert chat(client, "a").cache_hit
    assert not chat(client, "b").cache_hit
    assert client.stats()["cache_entries"] == 2


def test_concurrency_is_bounded(server):
    client = make(server, max_concurrency=3)

    async def scenario():
        calls = [asyncio.ensure_future(client.chat([{"role": "user", "content": f"mode:hold {i}"}], max_tokens=8))
                 for i in range(8)]
        await wait_until(lambda: client.stats()["in_flight"] == 3)
        assert sum(server.counts.values()) <= 3
        server.release_all()
        return await asyncio.gather(*calls)

    assert all(r.ok for r in asyncio.run(scenario()))
    assert sum(server.counts.values()) == 8


def test_completions_endpoint(server):
    client = make(server)
    out = run_sync(client.complete("abc", max_tokens=4), timeout=30)
    assert out.ok and out.text == "completion of abc"


def test_api_key_from_environment_only(server, monkeypatch):
    monkeypatch.setenv("FAKE_VERIFIER_KEY", "sekret")
    client = make(server, api_key_env="FAKE_VERIFIER_KEY")
    assert chat(client, "auth").ok
    assert server.auth[-1] == "Bearer sekret"
    assert "sekret" not in repr(client.config)
    monkeypatch.delenv("FAKE_VERIFIER_KEY")
    with pytest.raises(ValueError, match="FAKE_VERIFIER_KEY"):
        make(server, api_key_env="FAKE_VERIFIER_KEY")


def test_get_client_is_one_per_config():
    a = get_client(ClientConfig(base_url="http://127.0.0.1:1/v1", model="m"))
    b = get_client(ClientConfig(base_url="http://127.0.0.1:1/v1", model="m"))
    c = get_client(ClientConfig(base_url="http://127.0.0.1:1/v1", model="m", timeout_s=5))
    assert a is b and a is not c


@pytest.mark.parametrize("bad", [dict(base_url="localhost:8000"), dict(model=""), dict(max_concurrency=0),
                                 dict(timeout_s=0), dict(max_retries=-1), dict(rate_limit_rps=0)])
def test_config_validation(bad):
    kw = dict(base_url="http://127.0.0.1:8000/v1", model="m") | bad
    with pytest.raises(ValueError):
        ClientConfig(**kw)


def test_async_callers_on_their_own_loops_share_the_client(server):
    client = make(server)

    def in_thread(results):
        results.append(asyncio.run(client.chat([{"role": "user", "content": "shared"}], max_tokens=8)))

    results: list = []
    threads = [threading.Thread(target=in_thread, args=(results,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 3 and all(r.ok for r in results)
    assert server.counts["shared"] == 1  # deduped or cached: one client state across loops


def test_a_request_keeps_its_id_across_retries_and_the_ledger_has_one_line_per_call(server, monkeypatch, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(llm_client.LEDGER_ENV, str(ledger))
    client = make(server, max_retries=2)
    failed = chat(client, "mode:fail500x1 id")  # one 500, then the reply
    again = chat(client, "mode:fail500x1 id")  # the same deterministic request: a cache hit
    broken = chat(client, "mode:always500")
    ids = server.request_ids
    assert failed.ok and failed.request_id and ids[:2] == [failed.request_id, failed.request_id]
    assert again.cache_hit and again.request_id is None
    assert not broken.ok and ids[2:] == [broken.request_id] * 3 and broken.request_id != failed.request_id
    import json

    lines = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(e["request_id"], e["ok"], e["attempts"], e["cache_hit"]) for e in lines] == [
        (failed.request_id, True, 2, False), (None, True, 0, True), (broken.request_id, False, 3, False)]
    assert "HTTP 503" in lines[2]["error"] and all(e["wall_s"] >= 0 for e in lines)


def test_worst_case_bound_by_hand():
    # 3 attempts of 2 s; retries wait at most 1.5 x 0.5 s and 1.5 x 1 s
    config = ClientConfig(base_url="http://127.0.0.1:1/v1", model="m", timeout_s=2.0, max_retries=2, backoff_s=0.5)
    assert llm_client.worst_case_s(config) == pytest.approx(6.0 + 0.75 + 1.5)
    # a Retry-After of 1 s lengthens the first wait only (the second is 1.5 s anyway)
    assert llm_client.worst_case_s(config, retry_after_s=1.0) == pytest.approx(6.0 + 1.0 + 1.5)
    assert llm_client.worst_case_s(ClientConfig(base_url="http://127.0.0.1:1/v1", model="m", timeout_s=5.0,
                                                max_retries=0)) == pytest.approx(5.0)
