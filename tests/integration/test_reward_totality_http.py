"""Totality over the real wire (slow tier): the properties of tests/unit/test_reward_totality_on_cpu.py
on a smaller sample (``VERLKIT_TOTALITY_HTTP_N``, default 1,000 rows per model-scored module), with
the real HTTP client, the real rule-check worker pool, and the FAKE OpenAI server of
``support.fake_openai`` answering each request with a seeded choice of a plain verdict, a hostile
text, a malformed classification, or a fault (HTTP 500 once then a reply, HTTP 503 always, a
garbage body, HTTP 400): faults a real vLLM server cannot produce on demand.

Beyond never raising and staying in range, the flags are counted against the client's own ledger
(``VERLKIT_CLIENT_LEDGER``): every call that failed is exactly one flagged row.
"""

from __future__ import annotations

import json
import math
import os
import random
import zlib

import pytest
from support import adversarial as adv
from support.fake_openai import FakeOpenAIServer

from verl.utils.reward_score import registry
from verlkit.clients import llm as llm_client

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = int(os.environ.get("VERLKIT_TOTALITY_HTTP_N", "1000"))
FAULTS = ("mode:fail500x1", "mode:always500", "mode:garbage", "mode:bad400")
FLAG = {"tinyv": ("verifier_failed", 1.0), "cgp": ("downstream_ok", 0.0), "scalar_rm": ("rm_failed", 1.0)}
SOURCE = {"tinyv": "polaris_tinyv", "cgp": "medmcqa_cgp", "scalar_rm": "ultrafeedback"}
RANGE = {"tinyv": (0.0, 1.0), "cgp": (math.log(1e-12), 1.0), "scalar_rm": (-1e6, 1e6)}


def script(content: str) -> str:
    """The server's answer to a request, decided by a hash of its content (the same request always
    gets the same answer, so a retry meets the same fault)."""
    r = random.Random(zlib.crc32(content.encode("utf-8", "surrogatepass")))
    roll = r.random()
    if roll < 0.2:
        return r.choice(FAULTS)
    return r.choice(("True", "False", "the answer is 2 with confidence 70", "3.25", "-1", "nan", adv.text(r)[:3000]))


@pytest.fixture(scope="module")
def server():
    fake = FakeOpenAIServer(reply=script)
    yield fake
    fake.close()


def row(module: str, rng: random.Random, server, tokenizer: str):
    common = {"url": server.base_url, "model": "fake", "max_retries": 1, "backoff_s": 0.01, "timeout_s": 30,
              "cache_size": 0}  # fmt: skip
    solution = adv.value(rng, ("\\boxed{4}", "Use the mechanism."))
    if module == "tinyv":
        info = adv.extra_info(rng, {"question": ("What is 2+2?",), "criteria": ("10 points for 4.",)})
        opts = {"template": rng.choice(("tinyv", "rubric")), "setup": rng.choice(("tinyv_only", "addon", "mixed"))}
        return solution, adv.value(rng, ("4",)), info, {"tinyv": {**common, **opts}}
    if module == "cgp":
        info = adv.extra_info(rng, {"question": ("Which drug?",)})
        if isinstance(info, dict):
            info["options"] = adv.options(rng)
        opts = {"variant": rng.choice(("log", "brier")), "on_failure": rng.choice(("neutral", "raise"))}
        return solution, adv.value(rng, ("1", "2")), info, {"cgp": {**common, **opts}}
    messages = rng.choice(([{"role": "user", "content": adv.text(rng)[:500]}], [], None))
    opts = {"tokenizer": tokenizer, "on_failure": rng.choice((0.0, "raise"))}
    sol = solution[:500] if isinstance(solution, str) else solution
    return sol, None, {"prompt_messages": messages}, {"scalar_rm": {**common, **opts}}


@pytest.mark.parametrize("module", sorted(FLAG))
def test_model_scored_reward_is_total_over_http(module, server, tiny_model_dir, tmp_path, monkeypatch):
    ledger = tmp_path / "ledger.jsonl"
    monkeypatch.setenv(llm_client.LEDGER_ENV, str(ledger))
    rng = random.Random(f"http-{module}")
    broken, flagged, raised_to_registry = [], 0, 0
    for i in range(N):
        solution, gt, info, options = row(module, rng, server, str(tiny_model_dir))
        try:
            out = registry.compute_score(SOURCE[module], solution, gt, info, **options)
        except Exception as e:  # the property under test
            broken.append((i, f"raised {e!r}"[:200]))
            continue
        lo, hi = RANGE[module]
        if not (math.isfinite(out["score"]) and lo - 1e-9 <= out["score"] <= hi + 1e-9):
            broken.append((i, f"score {out['score']}"))
        key, value = FLAG[module]
        flagged += out[key] == value
        raised_to_registry += out["reward_error"] == 1.0
    assert not broken, broken[:5]
    calls = [json.loads(line) for line in ledger.read_text().splitlines()]
    failed_calls = sum(not c["ok"] for c in calls)
    assert failed_calls >= max(3, N // 100) and len(calls) > failed_calls, "the sample met too few faults, or only faults"
    # every failed call is one flagged row, or (on_failure=raise) one reward_error row
    assert failed_calls <= flagged + raised_to_registry
    assert flagged <= failed_calls
    if module == "tinyv":  # its failure policies never raise: one flag per failed call, exactly
        assert flagged == failed_calls
