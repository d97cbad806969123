"""The verifier reward against a REAL vLLM CPU server (tiny random-init Qwen2: its replies are garbage,
so these tests assert structure and flags, never text)."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time

import pytest

from verlkit.clients.llm import get_client
from verl.utils.reward_score import registry
from verl.utils.reward_score.options import parse_options
from verl.utils.reward_score.tinyv import TinyVOptions, build_messages, parse_verifier_score

pytestmark = pytest.mark.integration

CRITERIA = "2 points: sets up the equation. 8 points: final answer 12."


def row(i: int, answer: str = "12") -> dict:
    return {"solution": f"Step 1: think about problem {i}.\nSo the answer is \\boxed{{{answer}}}",
            "gt": "12", "info": {"question": f"Problem {i}: what is 3 * 4?", "criteria": CRITERIA}}


def score_batch(rows: list[dict], options: dict, data_source: str = "polaris_tinyv") -> list[dict]:
    async def run():
        return await asyncio.gather(*(
            registry.compute_score_async(data_source, r["solution"], r["gt"], r["info"], tinyv=options) for r in rows
        ))

    return asyncio.run(run())


def server_options(server, **kw) -> dict:
    return {"model": server.model_name, "url": server.base_url, "max_retries": 1, "timeout_s": 120, **kw}


@pytest.mark.parametrize("template,max_tokens", [("tinyv", 8), ("rubric", 32)])
def test_rows_scored_through_the_registry(vllm_server, template, max_tokens):
    options = server_options(vllm_server, template=template, setup="tinyv_only", max_tokens=max_tokens)
    rows = [row(i, answer=str(10 + i)) for i in range(4)]
    results = score_batch(rows, options)
    opts = parse_options(TinyVOptions, options)
    client = get_client(opts.client_config())
    for r, out in zip(rows, results):
        assert set(out) == set(registry.result_keys())
        assert out["reward_error"] == 0.0 and out["verifier_called"] == 1.0
        assert out["verifier_ok"] == 1.0 and out["verifier_failed"] == 0.0
        assert 0.0 <= out["score"] <= 1.0 and out["latency_s"] >= 0.0
        # parse_ok reflects what the (garbage-talking) model actually said: ask again, served from cache
        extracted = "12" if r["solution"].endswith("{12}") else r["solution"].rsplit("{", 1)[1].rstrip("}")
        messages = build_messages(opts, r["solution"], r["gt"], r["info"], extracted if template == "tinyv" else None)
        again = asyncio.run(client.chat(messages, max_tokens=max_tokens))
        assert again.ok and again.cache_hit
        expected = parse_verifier_score(opts, again.text)
        assert out["parse_ok"] == float(expected is not None)
        assert out["score"] == pytest.approx(0.0 if expected is None else expected)


def test_addon_calls_the_verifier_only_for_rule_failures(vllm_server):
    options = server_options(vllm_server, template="tinyv", setup="addon")
    right, wrong = score_batch([row(100, "12"), row(101, "13")], options)
    assert right["verifier_called"] == 0.0 and right["score"] == 1.0 and right["rule_correct"] == 1.0
    assert wrong["verifier_called"] == 1.0 and wrong["verifier_ok"] == 1.0 and wrong["rule_correct"] == 0.0


def test_hybrid_sends_each_side_to_its_model(vllm_server):
    """setup=hybrid with both sides on the session server (one served model in two roles): rule-wrong
    rows reach the verifier template, rule-correct rows the rubric template, and each score is what
    the side's reply gives (asked again: served from the cache)."""
    from verl.utils.reward_score.hybrid import HybridOptions

    options = {"setup": "hybrid", **server_options(vllm_server), "verifier": {"max_tokens": 8},
               "rubric": {"max_tokens": 16, "share": 1.0, "weight": 0.5}}
    rows = [row(300, "12"), row(301, "12"), row(302, "13"), row(303, "14")]
    results = score_batch(rows, options)
    opts = parse_options(HybridOptions, options)
    assert [r["sent_to_rubric"] for r in results] == [1.0, 1.0, 0.0, 0.0]
    assert [r["sent_to_verifier"] for r in results] == [0.0, 0.0, 1.0, 1.0]
    for r, out in zip(rows, results):
        assert out["reward_error"] == 0.0 and out["verifier_ok"] == 1.0 and 0.0 <= out["score"] <= 1.0
        right = out["rule_correct"] == 1.0
        side = opts.rubric if right else opts.verifier
        extracted = None if right else r["solution"].rsplit("{", 1)[1].rstrip("}")
        again = asyncio.run(get_client(side.client_config()).chat(
            build_messages(side, r["solution"], r["gt"], r["info"], extracted), max_tokens=side.max_tokens))
        assert again.ok and again.cache_hit
        value = parse_verifier_score(side, again.text)
        if right:
            expected = 1.0 if value is None else 1.0 - 0.5 * (1.0 - value)
        else:
            expected = 0.0 if value is None else value
        assert out["score"] == pytest.approx(expected) and out["parse_ok"] == float(value is not None)


def test_identical_prompts_one_request_then_cache_hits_next_step(vllm_server):
    # rubric + tinyv_only: no rule check before the call, so the 8 calls reach the client together
    options = server_options(vllm_server, template="rubric", setup="tinyv_only", max_tokens=16)
    client = get_client(parse_options(TinyVOptions, options).client_config())
    rows = [row(200)] * 8  # a GRPO group whose 8 samples produced the same response
    before = client.stats()
    step1 = score_batch(rows, options)
    after1 = client.stats()
    assert after1["http_attempts"] - before["http_attempts"] == 1
    assert after1["dedup_hits"] - before["dedup_hits"] == 7
    assert all(r["verifier_ok"] == 1.0 for r in step1)
    assert sum(r["cache_hit"] for r in step1) == 7
    step2 = score_batch(rows, options)
    after2 = client.stats()
    assert after2["http_attempts"] == after1["http_attempts"]
    assert all(r["cache_hit"] == 1.0 and r["verifier_ok"] == 1.0 for r in step2)
    assert [r["score"] for r in step2] == [r["score"] for r in step1]


def test_eval_verifier_cli_against_the_server(vllm_server, tmp_path):
    from verlkit.evaluation import verifier as eval_verifier

    pairs = tmp_path / "hardverify.json"
    pairs.write_text(json.dumps([
        {"question": "What is 1/2 as a decimal?", "ground_truth": "0.5", "fn_output": "\\frac{1}{2}", "tn_output": "0.25"},
        {"question": "Name the smallest prime.", "ground_truth": "2", "fn_output": "two", "tn_output": "1"},
    ]))
    out = tmp_path / "metrics.json"
    rc = eval_verifier.main(["--pairs", str(pairs), "--url", vllm_server.base_url, "--model", vllm_server.model_name,
                             "--out", str(out)])
    metrics = json.loads(out.read_text())
    assert rc == 0 and metrics["n_pairs"] == 4 and metrics["request_failures"] == 0
    assert 0.0 <= metrics["parse_failure_rate"] <= 1.0 and metrics["latency_p50_s"] > 0


@pytest.mark.own_vllm_server
def test_server_killed_mid_batch_flags_every_affected_sample(tiny_model_dir, tmp_path):
    """A second, short-lived server (never the shared one) is SIGKILLed while a batch is in flight."""
    from verlkit.serving import ServerSpec, launch

    server = launch(ServerSpec(model=tiny_model_dir, served_model_name="doomed-verifier", name="doomed-verifier",
                               run_dir=tmp_path, ready_timeout_s=float(os.environ.get("VERLKIT_TEST_SERVER_TIMEOUT", "420"))))
    try:
        options = {"model": server.model_name, "url": server.base_url, "template": "rubric", "setup": "tinyv_only",
                   "max_tokens": 128, "max_concurrency": 2, "max_retries": 1, "timeout_s": 30, "on_failure": "rule"}
        client = get_client(parse_options(TinyVOptions, options).client_config())
        rows = [row(300 + i, answer=str(11 + i % 3)) for i in range(120)]

        async def scenario():
            tasks = [asyncio.ensure_future(registry.compute_score_async(
                "doomed_tinyv", r["solution"], r["gt"], r["info"], tinyv=options)) for r in rows]
            deadline = time.monotonic() + 300
            while client.stats()["ok"] < 2:  # wait (bounded) until the batch is really under way
                assert time.monotonic() < deadline, "no verifier reply within 300 s"
                await asyncio.sleep(0.05)
            os.killpg(server.pgid, signal.SIGKILL)
            return await asyncio.gather(*tasks)

        results = asyncio.run(scenario())
    finally:
        server.stop()
    assert not server.is_alive()
    ok = [r for r in results if r["verifier_ok"] == 1.0]
    failed = [r for r in results if r["verifier_ok"] == 0.0]
    assert len(ok) >= 2 and failed, (len(ok), len(failed))
    assert len(ok) + len(failed) == len(rows)
    for r in failed:
        assert r["verifier_failed"] == 1.0 and r["reward_error"] == 0.0 and r["verifier_called"] == 1.0
        assert not math.isnan(r["rule_correct"]) and r["score"] == r["rule_correct"]  # on_failure=rule
    assert any(r["score"] == 1.0 for r in failed)  # rows with \boxed{12} keep their rule-based credit
    assert all(r["verifier_failed"] == 0.0 for r in ok)
