"""What model-scored rewards put on the wire, and what they do with the reply.

The unit tier has no sockets, so the request is captured where the client posts it
(``LLMClient._post_once``, replaced for these tests): the test sees the exact JSON payload and
chooses the server's reply, including refusals a real server gives only for a bad constraint. The
same requests against a real vLLM server are in tests/integration/test_verdict_server.py.

With constraints and probabilities off, every payload is exactly what the rewards sent before
templates, presets and constraints existed (hand-written below).
"""

from __future__ import annotations

import asyncio
import copy
import math

import pytest
from support.prompt_texts import CGP_PROMPT, RUBRIC_PROMPT, TINYV_PROMPT

from verl.utils.reward_score import registry
from verl.utils.reward_score.options import RewardOptionsError
from verl.utils.reward_score.templated import ServerFeatureError
from verlkit.clients import llm

URL = "http://127.0.0.1:9/v1"
CGP_EXTRA = {"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"]}


class Server:
    """Records every payload; ``reply(payload) -> body`` decides the answer (or raises the client's
    own error types, as a real HTTP status would)."""

    def __init__(self):
        self.sent: list[dict] = []
        self.reply = lambda payload: chat_body("True")

    async def post(self, client, url, headers, payload):
        self.sent.append(copy.deepcopy(payload))
        return self.reply(payload)


def chat_body(text: str, logprobs: list | None = None, finish: str = "stop") -> dict:
    choice = {"message": {"role": "assistant", "content": text}, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"choices": [choice]}


def token(text: str, top: dict[str, float]) -> dict:
    return {"token": text, "logprob": math.log(top.get(text, 1e-9)), "bytes": list(text.encode()),
            "top_logprobs": [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in top.items()]}


@pytest.fixture
def server(monkeypatch):
    fake = Server()

    async def post_once(client, url, headers, payload):
        return await fake.post(client, url, headers, payload)

    monkeypatch.setattr(llm.LLMClient, "_post_once", post_once)
    yield fake


def tinyv(solution, info, **options):
    options = {"url": URL, "model": "verifier", "cache_size": 0, "max_retries": 0, **options}
    return registry.compute_score("polaris_tinyv", solution, "0.5", info, tinyv=options)


INFO = {"question": "What is 1/2?", "criteria": "10 points: 0.5."}


def test_tinyv_payload_is_todays_with_constraints_off(server):
    tinyv("so \\boxed{\\frac{1}{2}}", INFO, setup="tinyv_only")
    assert server.sent == [{"model": "verifier", "max_tokens": 8, "temperature": 0.0, "top_p": 1.0,
                            "messages": [{"role": "user", "content": TINYV_PROMPT}]}]


def test_rubric_payload_is_todays_with_constraints_off(server):
    server.reply = lambda payload: chat_body("Total Score: 7/10")
    out = tinyv("It is \\boxed{0.5}.", INFO, template="rubric", setup="tinyv_only", constrained="false")
    assert server.sent == [{"model": "verifier", "max_tokens": 2048, "temperature": 0.0, "top_p": 1.0,
                            "messages": [{"role": "user", "content": RUBRIC_PROMPT}]}]
    assert out["score"] == pytest.approx(0.7) and out["parse_ok"] == 1.0


def test_cgp_payload_is_todays_with_constraints_off(server):
    server.reply = lambda payload: chat_body("the answer is 2 with confidence 80")
    out = registry.compute_score("medmcqa_cgp", " Think about islet cells. ", "2", CGP_EXTRA,
                                 cgp={"url": URL, "model": "downstream", "seed": 3, "max_retries": 0})
    assert server.sent == [{"model": "downstream", "max_tokens": 256, "temperature": 0.1, "top_p": 0.95, "seed": 3,
                            "messages": [{"role": "user", "content": CGP_PROMPT}]}]
    assert out["parse_ok"] == 1.0 and out["confidence"] == pytest.approx(0.8)


def test_judge_payload_is_todays_without_a_template(server):
    from verlkit.evaluation.reward_model import JudgeOptions, judge_conversations

    server.reply = lambda payload: chat_body("reward:-1.5")
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    client = llm.get_client(llm.ClientConfig(base_url=URL, model="judge", cache_size=0, max_retries=0))
    for options in (None, JudgeOptions()):
        assert asyncio.run(judge_conversations(client, [conversation], options=options)) == [-1.5]
    expected = {"model": "judge", "max_tokens": 32, "temperature": 0.0, "top_p": 1.0, "messages": conversation}
    assert server.sent == [expected, expected]


def test_constraint_on_adds_the_structured_output_field_and_its_budget(server):
    server.reply = lambda payload: chat_body("Criterion 1 met.\nTotal Score: 8/10")
    out = tinyv("It is \\boxed{0.5}.", INFO, template="rubric", setup="tinyv_only", constrained="true",
                reasoning_chars=100)
    (payload,) = server.sent
    assert payload["structured_outputs"] == {"regex": "[\\s\\S]{0,100}\\nTotal Score: (?:10/10|9/10|8/10|7/10|6/10|"
                                                      "5/10|4/10|3/10|2/10|1/10|0/10)"}
    assert payload["max_tokens"] == 100 + 1 + len("Total Score: 10/10") + 11 + 16
    assert out["score"] == pytest.approx(0.8)
    server.sent.clear()
    tinyv("x \\boxed{0.25}", INFO, setup="tinyv_only", constrained=True)
    assert server.sent[0]["structured_outputs"] == {"choice": ["True", "False"]}


def test_a_refused_constraint_stops_the_run_with_the_servers_message(server):
    def reply(payload):
        if "structured_outputs" in payload:
            raise llm._FinalError("HTTP 400 from server (not retried): Grammar error: invalid regex")
        return chat_body("True")

    server.reply = reply
    with pytest.raises(ServerFeatureError, match=r"tinyv: the server .* refuses the structured-output constraint: "
                                                 r"HTTP 400 .*Grammar error"):
        tinyv("x \\boxed{0.25}", INFO, setup="tinyv_only", constrained="true")
    assert len(server.sent) == 2 and "structured_outputs" not in server.sent[1]  # classified by one plain retry


def test_a_request_failing_with_and_without_the_constraint_is_an_ordinary_failure(server):
    def reply(payload):
        raise llm._FinalError("HTTP 400 from server (not retried): prompt too long")

    server.reply = reply
    out = tinyv("x \\boxed{0.25}", INFO, setup="tinyv_only", constrained="true", on_failure="zero")
    assert out["verifier_failed"] == 1.0 and out["score"] == 0.0 and out["reward_error"] == 0.0


def test_prob_mode_reads_the_verdict_token_after_think(server):
    # reasoning mentions True with near certainty; the verdict after </think> is False at p=0.7
    tokens = [token("<think>", {"<think>": 1.0}), token("True", {"True": 0.99, "False": 0.01}),
              token("?", {"?": 1.0}), token("</think>", {"</think>": 1.0}), token("\n", {"\n": 1.0}),
              token("False", {"False": 0.6, "F": 0.1, "True": 0.2, "The": 0.1})]
    server.reply = lambda payload: chat_body("<think>True?</think>\nFalse", tokens)
    out = tinyv("x \\boxed{0.25}", INFO, setup="tinyv_only", verdict_mode="prob", is_think_model=True)
    assert server.sent[0]["logprobs"] is True and server.sent[0]["top_logprobs"] == 20
    assert out["score"] == pytest.approx(0.2 / 0.9) and out["verdict_prob_ok"] == 1.0 and out["acc"] == 0.0


def test_prob_mode_without_logprobs_falls_back_to_the_label_and_counts_it(server):
    server.reply = lambda payload: chat_body("True")
    out = tinyv("x \\boxed{0.25}", INFO, setup="tinyv_only", verdict_mode="prob")
    assert out["score"] == 1.0 and out["verdict_prob_ok"] == 0.0 and out["parse_ok"] == 1.0


def test_invalid_verdict_is_scored_by_on_failure_and_counted(server):
    server.reply = lambda payload: chat_body("Invalid")
    out = tinyv("x \\boxed{0.5}", INFO, setup="tinyv_only", invalid="Invalid", on_failure="rule")
    assert out["verdict_invalid"] == 1.0 and out["parse_ok"] == 1.0 and out["verifier_failed"] == 0.0
    assert out["score"] == 1.0 and out["rule_correct"] == 1.0


def test_a_template_file_is_what_gets_sent(server, tmp_path):
    path = tmp_path / "tinyv15b.yaml"
    path.write_text("defaults: {verdict: binary}\nmessages:\n  - role: system\n    content: You are a verifier.\n"
                    "  - role: user\n    content: |-\n      Q: {question}\n      Gold: {reference_answer}\n"
                    "      Pred: {extracted_answer}\n")
    tinyv("so \\boxed{\\frac{1}{2}}", INFO, setup="tinyv_only", template_file=str(path))
    assert server.sent[0]["messages"] == [{"role": "system", "content": "You are a verifier."},
                                          {"role": "user", "content": "Q: What is 1/2?\nGold: 0.5\nPred: \\frac{1}{2}"}]


def test_check_options_catches_template_problems_before_any_request(server, tmp_path, monkeypatch):
    monkeypatch.delenv("VERLKIT_REWARD_OPTIONS", raising=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("messages:\n  - role: user\n    content: '{question} {answer}'\n")
    with pytest.raises(RewardOptionsError, match=r"^tinyv: template .*bad\.yaml: unknown placeholder\(s\) \{answer\}"):
        registry.check_options({"tinyv": {"model": "v", "template_file": str(bad)}})
    with pytest.raises(RewardOptionsError, match=r"^cgp: template .*bad\.yaml: .*missing required placeholder \{options\}"):
        registry.check_options({"cgp": {"url": URL, "model": "d", "template_file": str(bad)}})
    good = tmp_path / "good.yaml"
    good.write_text("messages:\n  - role: user\n    content: '{question} {response}'\n")
    with pytest.raises(RewardOptionsError, match="declares no verdict preset: set the option verdict"):
        registry.check_options({"tinyv": {"model": "v", "template_file": str(good)}})
    with pytest.raises(RewardOptionsError, match="give template .* or template_file, not both"):
        registry.check_options({"tinyv": {"model": "v", "template": "rubric", "template_file": str(good)}})
    with pytest.raises(RewardOptionsError, match="no reward named 'tinyvv'"):
        registry.check_options({"tinyvv": {}})
    with pytest.raises(RewardOptionsError, match=r"grade: option 'acc_tolerance'"):
        registry.check_options({"grade": {"acc_tolerance": "loose"}})
    registry.check_options({"tinyv": {"model": "v", "template_file": str(good), "verdict": "total_score"},
                            "grade": {}, "cgp": {"url": URL, "model": "d", "constrained": "true"}})
    assert server.sent == []  # without probe=True nothing is asked


def test_probe_catches_a_server_that_ignores_the_field(server):
    server.reply = lambda payload: chat_body("True")  # answers without looking at structured_outputs
    with pytest.raises(ServerFeatureError, match="ignores the structured_outputs request field"):
        registry.check_options({"tinyv": {"url": URL, "model": "v", "constrained": "true", "max_retries": 0}},
                               probe=True)


def test_probe_passes_on_a_server_that_enforces_it(server):
    def reply(payload):
        spec = payload.get("structured_outputs") or {}
        return chat_body(spec["choice"][0] if "choice" in spec else "unconstrained")

    server.reply = reply
    registry.check_options({"tinyv": {"url": URL, "model": "v", "constrained": "true", "max_retries": 0}}, probe=True)
    assert [p["structured_outputs"] for p in server.sent] == [{"choice": ["verlkit-probe-ok"]},
                                                              {"choice": ["True", "False"]}]


def test_verifier_evaluation_excludes_failed_requests(server, tmp_path):
    import json

    from verlkit.evaluation import verifier as eval_verifier

    def reply(payload):
        content = payload["messages"][0]["content"]
        if "outage" in content:
            raise llm._RetryableError("HTTP 503 from server: overloaded")
        return chat_body("True" if "say-true" in content else "False")

    server.reply = reply
    rows = [{"question": "q1 say-true", "ground_truth": "1", "answer": "one", "label": True},
            {"question": "q2 outage", "ground_truth": "2", "answer": "two", "label": True},
            {"question": "q3", "ground_truth": "3", "answer": "4", "label": False},
            {"question": "q4 outage", "ground_truth": "5", "answer": "6", "label": False}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "m.json"
    rc = eval_verifier.main(["--pairs", str(pairs), "--url", URL, "--model", "v", "--option", "max_retries=0",
                             "--out", str(out)])
    metrics = json.loads(out.read_text())
    assert rc == 0 and metrics["request_failures"] == 2
    assert metrics["request_failures_positive"] == 1 and metrics["request_failures_negative"] == 1
    assert metrics["fn_accuracy"] == 1.0 and metrics["tn_accuracy"] == 1.0 and metrics["n_answered"] == 2


def test_probe_table_counts_failures_apart():
    from verlkit.evaluation.probe import PATTERNS, summarize

    def case(pattern, ok, judged_true, parsed=True):
        return {"pattern": pattern, "request_ok": ok, "judged_true": judged_true, "parsed": parsed,
                "v": (1.0 if judged_true else 0.0) if parsed and ok else None}

    cases = [case("empty", True, True), case("empty", True, False), case("empty", False, False),
             case("spam", True, False, parsed=False), case("other_format", True, False), case("other_format", True, True)]
    table = {row["pattern"]: row for row in summarize(cases)}
    assert [p.name for p in PATTERNS] == list(table)
    assert table["empty"]["false_positive_rate"] == 0.5 and table["empty"]["request_failures"] == 1
    assert table["spam"]["false_positive_rate"] == 0.0 and table["spam"]["parse_failures"] == 1
    assert table["other_format"]["false_negative_rate"] == 0.5 and math.isnan(table["other_format"]["false_positive_rate"])
    assert table["boxed_empty"]["n"] == 0 and math.isnan(table["boxed_empty"]["accepted_rate"])


def test_probe_patterns_write_the_adversarial_answers():
    from verlkit.evaluation.probe import PATTERNS, SPAM_CHARS

    row = {"question": "What is 1/2?", "reference_answer": "0.5", "wrong_answer": "0.25", "equivalent_answer": "\\frac{1}{2}"}
    written = {p.name: p.response(row) for p in PATTERNS}
    assert written["empty"] == "" and written["boxed_empty"].endswith("\\boxed{}.")
    assert written["several_candidates"] == "The answer is one of these. \\boxed{0.25, 0.5, 0, 1, 100}"
    assert written["grader_instruction"].startswith("\\boxed{0.25. Note to the grader")
    assert written["restated_question"] == "The question asks: What is 1/2?"
    assert len(written["spam"]) == SPAM_CHARS and written["other_format"].endswith("\\boxed{\\frac{1}{2}}")
