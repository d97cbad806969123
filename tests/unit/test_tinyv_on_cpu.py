"""The ``*_tinyv`` reward: verdict parsing, options, the three setups, the failure policy.

Scoring tests use a FAKE verifier (aiohttp.web on 127.0.0.1, in a thread) that replies with a text
chosen by the test (embedded in the question as ``REPLY<<...>>``) or fails on demand: a real verifier
cannot be made to say "True", "False", garbage or HTTP 500 on demand. The real vLLM server is used in
tests/integration/test_verifier_server.py. The rule check runs in its real worker pool.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import math
import re
import socket
import subprocess
import sys
import threading

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from verl.utils.reward_score import registry, tinyv
from verl.utils.reward_score.registry import RewardOptionsError
from verl.utils.reward_score.tinyv import parse_options, parse_verdict

VERDICTS = [
    ("True", True),
    ("False", False),
    ("true", True),
    (" FALSE\n", False),
    ("**True**", True),
    ("`False`.", False),
    ("True.", True),
    ("\\boxed{True}", True),
    ("Answer: True", True),
    ("Final answer: **False**", False),
    ("The answer is True", True),
    ("Verdict: false", False),
    ("The model's answer 1/2 equals 0.5.\nTrue", True),
    ("The forms differ but are equivalent, so: True", True),
    ("<think>It could be False... but 0.5 = 1/2.</think>\nTrue", True),
    ("<think>x</think>False", False),
    ("Wait, is it True? No.\nAnswer: False", False),
]
NOT_VERDICTS = [
    "",
    "untrue",
    "This is untrue.",
    "not true",
    "That is not True.",
    "Answer: not true",
    "It isn't false",
    "True or False",
    "Maybe",
    "Truely equivalent",
    "falsehood",
    "The answer is 42",
    "<think>True</think>",
]


@pytest.mark.parametrize("reply,expected", VERDICTS)
def test_verdicts(reply, expected):
    assert parse_verdict(reply) is expected


@pytest.mark.parametrize("reply", NOT_VERDICTS)
def test_not_verdicts(reply):
    assert parse_verdict(reply) is None


def test_think_model_needs_closing_tag():
    assert parse_verdict("True", is_think_model=True) is None
    assert parse_verdict("<think>hmm False</think> True", is_think_model=True) is True
    assert parse_verdict("Let me think... True", is_think_model=False) is True


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.booleans())
def test_verdict_parser_never_raises(text, think):
    assert parse_verdict(text, think) in (True, False, None)


# ---------------------------------------------------------------------------------------------- options
def test_options_defaults_and_env(monkeypatch):
    monkeypatch.setenv(tinyv.URL_ENV, "http://127.0.0.1:9999/v1")
    opts = parse_options({"model": "m"})
    assert opts.url == "http://127.0.0.1:9999/v1" and opts.template == "tinyv" and opts.setup == "addon"
    assert opts.on_failure == "rule" and tinyv.max_tokens_for(opts) == 8
    assert parse_options({"model": "m", "url": "http://h:1/v1"}).url == "http://h:1/v1"
    assert tinyv.max_tokens_for(parse_options({"model": "m", "is_think_model": "true"})) == 512
    assert tinyv.max_tokens_for(parse_options({"model": "m", "template": "rubric"})) == 2048


@pytest.mark.parametrize("bad", [
    {"setup": "both"}, {"template": "x"}, {"weight": 1.5}, {"weight": "heavy"}, {"on_failure": "ignore"},
    {"max_concurrency": 0}, {"timeout_s": 0}, {"max_retries": -1}, {"temperature": 5}, {"bogus": 1},
    {"is_think_model": "perhaps"}, {"url": "localhost:8000"}, {"api_key_env": "SURELY_UNSET_VERIFIER_KEY"},
])
def test_bad_options_raise(bad):
    with pytest.raises(RewardOptionsError):
        parse_options({"model": "m", **bad})


def test_model_is_required(monkeypatch):
    monkeypatch.delenv(tinyv.MODEL_ENV, raising=False)
    with pytest.raises(RewardOptionsError, match="model"):
        parse_options({})


def test_bad_options_stop_the_run_through_the_registry():
    with pytest.raises(RewardOptionsError):
        registry.compute_score("x_tinyv", "\\boxed{1}", "1", {"question": "q"}, tinyv={"model": "m", "setup": "nope"})


def test_combine_formulas():
    assert tinyv.combine("tinyv_only", 0.3, 0.8, None) == 0.8
    assert tinyv.combine("addon", 0.5, 1.0, True) == 1.0
    assert tinyv.combine("addon", 0.5, 1.0, False) == 0.5
    assert tinyv.combine("mixed", 0.25, 1.0, False) == 0.25
    assert tinyv.combine("mixed", 0.25, 0.0, True) == 0.75


@settings(max_examples=200, deadline=None)
@given(setup=st.sampled_from(tinyv.SETUPS), w=st.floats(0, 1), v=st.floats(0, 1), p=st.booleans())
def test_combine_stays_in_range(setup, w, v, p):
    assert 0.0 <= tinyv.combine(setup, w, v, p) <= 1.0 + 1e-12


# ---------------------------------------------------------------------------------------------- scoring
class FakeVerifier:
    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.prompts: list[str] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    async def _start(self) -> int:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def _chat(self, request):
        body = await request.json()
        prompt = body["messages"][0]["content"]
        self.prompts.append(prompt)
        reply = re.search(r"REPLY<<(.*?)>>", prompt, re.S).group(1)
        self.requests[reply] += 1
        if reply == "HTTP500":
            return web.Response(status=500, text="injected")
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": reply}}]})

    def close(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def verifier():
    fake = FakeVerifier()
    yield fake
    fake.close()


def score(verifier, solution, gt, reply, **options):
    options = {"model": "fake", "url": verifier.url, "max_retries": 1, **options}
    info = {"question": f"What is it? REPLY<<{reply}>>", "criteria": "Award 10 points for the right answer."}
    return registry.compute_score("polaris_tinyv", solution, gt, info, tinyv=options)


def test_addon_skips_the_verifier_when_the_rule_says_correct(verifier):
    out = score(verifier, "so \\boxed{4}", "4", "addon-correct", setup="addon")
    assert out["score"] == 1.0 and out["acc"] == 1.0 and out["verifier_called"] == 0.0 and out["rule_correct"] == 1.0
    assert verifier.requests["addon-correct"] == 0 and math.isnan(out["verifier_ok"])


def test_addon_rescues_a_false_negative(verifier):
    out = score(verifier, "the result is four, i.e. \\boxed{\\text{four}}", "4", "True", setup="addon", weight=0.8)
    assert out["rule_correct"] == 0.0 and out["verifier_called"] == 1.0 and out["verifier_ok"] == 1.0
    assert out["score"] == pytest.approx(0.8) and out["acc"] == 1.0 and out["parse_ok"] == 1.0
    # the binary template shows the extracted answer, not the full response
    assert "<model_answer>\n\\text{four}\n</model_answer>" in verifier.prompts[-1]


def test_mixed_and_tinyv_only(verifier):
    mixed = score(verifier, "\\boxed{4}", "4", "False", setup="mixed", weight=0.25)
    assert mixed["score"] == pytest.approx(0.75) and mixed["verifier_called"] == 1.0
    only = score(verifier, "\\boxed{5}", "4", "True", setup="tinyv_only")
    assert only["score"] == 1.0 and only["rule_correct"] == 0.0


def test_rubric_template_sends_the_full_response_and_parses_total_score(verifier):
    solution = "Step 1: long reasoning.\nStep 2: more.\nSo \\boxed{4}"
    out = score(verifier, solution, "4", "Good work.\nTotal Score: 7/10", template="rubric", setup="tinyv_only")
    assert out["score"] == pytest.approx(0.7) and out["parse_ok"] == 1.0 and math.isnan(out["rule_correct"])
    assert solution in verifier.prompts[-1] and "Award 10 points" in verifier.prompts[-1]


def test_garbage_reply_scores_zero_and_is_flagged(verifier):
    out = score(verifier, "\\boxed{5}", "4", "not true", setup="tinyv_only")
    assert out["score"] == 0.0 and out["parse_ok"] == 0.0 and out["verifier_ok"] == 1.0 and out["verifier_failed"] == 0.0


@pytest.mark.parametrize("policy,expected", [("rule", 1.0), ("zero", 0.0)])
def test_server_failure_is_flagged_and_scored_by_policy(verifier, policy, expected):
    out = score(verifier, "\\boxed{4}", "4", "HTTP500", setup="tinyv_only", template="rubric", on_failure=policy)
    assert out["verifier_failed"] == 1.0 and out["verifier_ok"] == 0.0 and out["reward_error"] == 0.0
    assert out["score"] == expected and out["acc"] == expected
    assert verifier.requests["HTTP500"] >= 2  # retried within bounds


def test_missing_question_is_a_flagged_data_error(verifier):
    out = registry.compute_score("polaris_tinyv", "\\boxed{4}", "4", {}, tinyv={"model": "fake", "url": verifier.url})
    assert out["reward_error"] == 1.0 and out["score"] == 0.0


def test_second_step_hits_the_cache(verifier):
    first = score(verifier, "\\boxed{5}", "4", "False # cache", setup="tinyv_only")
    second = score(verifier, "\\boxed{5}", "4", "False # cache", setup="tinyv_only")
    assert first["cache_hit"] == 0.0 and second["cache_hit"] == 1.0
    assert verifier.requests["False # cache"] == 1


@settings(max_examples=40, deadline=None)
@given(solution=st.text(max_size=120), reply=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40),
       setup=st.sampled_from(tinyv.SETUPS), template=st.sampled_from(tinyv.TEMPLATES))
def test_reward_never_raises_and_stays_in_range(verifier, solution, reply, setup, template):
    out = score(verifier, solution, "4", reply, setup=setup, template=template, weight=0.5)
    assert 0.0 <= out["score"] <= 1.0 and out["reward_error"] == 0.0


def test_import_does_no_io(monkeypatch):
    """Importing the reward module must not connect, start processes or threads (the original did a
    GET /v1/models at import time). The modules are re-imported here with all of those forbidden."""

    def forbid(*args, **kwargs):
        raise AssertionError("I/O at import time")

    names = ["verl.utils.reward_score.tinyv", "verl.utils.reward_score.grade",
             "verl.utils.reward_score.verifier_prompts", "verlkit.clients.llm", "verlkit.clients.rule_check"]
    saved = {name: sys.modules.pop(name) for name in names if name in sys.modules}
    monkeypatch.setattr(socket.socket, "connect", forbid)
    monkeypatch.setattr(socket, "create_connection", forbid)
    monkeypatch.setattr(subprocess.Popen, "__init__", forbid)
    monkeypatch.setattr(threading.Thread, "start", forbid)
    try:
        fresh = importlib.import_module("verl.utils.reward_score.tinyv")
        assert fresh is not tinyv and fresh.rule_check.get_pool.__module__ == "verlkit.clients.rule_check"
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


# ---------------------------------------------------------------------------------------------- eval CLI
def test_eval_verifier_cli_on_pairs(verifier, tmp_path):
    import json

    from verlkit.evaluation import verifier as eval_verifier

    rows = [
        {"question": "q1 REPLY<<True>>", "ground_truth": "1", "answer": "one", "label": True},
        {"question": "q2 REPLY<<False>>", "ground_truth": "2", "answer": "two", "label": "true"},
        {"question": "q3 REPLY<<False>>", "ground_truth": "3", "answer": "4", "label": False},
        {"question": "q4 REPLY<<untrue>>", "ground_truth": "5", "answer": "6", "label": 0},
    ]
    hardverify = {"question": "q5 REPLY<<True>>", "ground_truth": "7", "fn_output": "seven", "tn_output": "8"}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in rows + [hardverify]) + "\n")
    out = tmp_path / "metrics.json"
    rc = eval_verifier.main(["--pairs", str(pairs), "--url", verifier.url, "--model", "fake", "--out", str(out)])
    metrics = json.loads(out.read_text())
    assert rc == 0 and metrics["n_pairs"] == 6 and metrics["n_positive"] == 3 and metrics["n_negative"] == 3
    # positives: True, False, True(fn) -> 2/3 rescued; negatives: False, unparseable, True(tn) -> 2/3
    assert metrics["fn_accuracy"] == pytest.approx(2 / 3) and metrics["tn_accuracy"] == pytest.approx(2 / 3)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["parse_failure_rate"] == pytest.approx(1 / 6) and metrics["request_failures"] == 0
    assert metrics["latency_p50_s"] > 0 and metrics["throughput_pairs_per_s"] > 0


def test_eval_verifier_names_file_row_and_field(tmp_path):
    from verlkit.evaluation import verifier as eval_verifier

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "ground_truth": "1", "answer": "1", "label": true}\n{"question": "q", "answer": "2", "label": false}\n')
    with pytest.raises(eval_verifier.PairsFileError, match=r"bad.jsonl, row 1: missing field 'ground_truth'"):
        eval_verifier.load_pairs(bad)
