"""The ``*_tinyv`` reward scored through a SCRIPTED verifier: the three setups, both templates, the
failure policy, the cache, and the verifier evaluation CLI's metrics.

The verifier is the fake server of ``support.fake_openai``: it replies with the text the test embeds
in the question as ``REPLY<<...>>`` or fails on demand (``REPLY<<mode:always500>>``). A real
verifier cannot be made to say "True", "False", garbage or fail with HTTP 5xx on demand, and these
tests check what the reward does with each. The real vLLM server is used in
tests/integration/test_verifier_server.py; the rule check runs in its real worker pool.
"""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fake_openai import FakeOpenAIServer

from verl.utils.reward_score import registry, tinyv

pytestmark = pytest.mark.integration


def _scripted_reply(content: str) -> str:
    """The verifier's reply is the text the test put in the question as ``REPLY<<...>>``."""
    return re.search(r"REPLY<<(.*?)>>", content, re.S).group(1)


@pytest.fixture(scope="module")
def verifier():
    fake = FakeOpenAIServer(reply=_scripted_reply)
    yield fake
    fake.close()


def score(verifier, solution, gt, reply, **options):
    options = {"model": "fake", "url": verifier.base_url, "max_retries": 1, **options}
    info = {"question": f"What is it? REPLY<<{reply}>>", "criteria": "Award 10 points for the right answer."}
    return registry.compute_score("polaris_tinyv", solution, gt, info, tinyv=options)


def test_addon_skips_the_verifier_when_the_rule_says_correct(verifier):
    out = score(verifier, "so \\boxed{4}", "4", "addon-correct", setup="addon")
    assert out["score"] == 1.0 and out["acc"] == 1.0 and out["verifier_called"] == 0.0 and out["rule_correct"] == 1.0
    assert verifier.scripts["addon-correct"] == 0 and math.isnan(out["verifier_ok"])


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
    out = score(verifier, "\\boxed{4}", "4", "mode:always500", setup="tinyv_only", template="rubric", on_failure=policy)
    assert out["verifier_failed"] == 1.0 and out["verifier_ok"] == 0.0 and out["reward_error"] == 0.0
    assert out["score"] == expected and out["acc"] == expected
    assert verifier.scripts["mode:always500"] >= 2  # retried within bounds


DEGENERATE = "\\boxed{9^{9^{9^{9}}}}"  # math-verify runs for minutes on it: the real rule check times out


@pytest.mark.parametrize("policy, expected", [("verifier", 1.0), ("wrong", 0.5)])
def test_rule_failure_is_counted_and_scored_by_policy(verifier, policy, expected):
    out = score(verifier, DEGENERATE, "1", "True", setup="addon", weight=0.5, rule_timeout_s=1,
                on_rule_failure=policy)
    assert out["rule_failed"] == 1.0 and math.isnan(out["rule_correct"]) and out["verifier_called"] == 1.0
    # verifier: its score stands alone (1.0); wrong: the rule counts as wrong and addon gives w·v
    assert out["score"] == expected and out["acc"] == 1.0 and out["reward_error"] == 0.0


@pytest.mark.parametrize("policy, reward_error", [("wrong", 0.0), ("verifier", 1.0)])
def test_rule_and_verifier_both_failing(verifier, policy, reward_error):
    out = score(verifier, DEGENERATE, "1", "mode:always500", setup="addon", rule_timeout_s=1,
                on_rule_failure=policy, on_failure="rule")
    assert out["rule_failed"] == 1.0 and out["verifier_failed"] == 1.0
    assert out["score"] == 0.0 and out["reward_error"] == reward_error


def test_missing_question_is_a_flagged_data_error(verifier):
    out = registry.compute_score("polaris_tinyv", "\\boxed{4}", "4", {}, tinyv={"model": "fake", "url": verifier.base_url})
    assert out["reward_error"] == 1.0 and out["score"] == 0.0


def test_second_step_hits_the_cache(verifier):
    first = score(verifier, "\\boxed{5}", "4", "False # cache", setup="tinyv_only")
    second = score(verifier, "\\boxed{5}", "4", "False # cache", setup="tinyv_only")
    assert first["cache_hit"] == 0.0 and second["cache_hit"] == 1.0
    assert verifier.scripts["False # cache"] == 1


@settings(max_examples=40, deadline=None)
@given(solution=st.text(max_size=120), reply=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40),
       setup=st.sampled_from([s for s in tinyv.SETUPS if s != "hybrid"]),  # hybrid: test_hybrid_scripted_models.py
       template=st.sampled_from(tinyv.TEMPLATES))
def test_reward_never_raises_and_stays_in_range(verifier, solution, reply, setup, template):
    out = score(verifier, solution, "4", reply, setup=setup, template=template, weight=0.5)
    assert 0.0 <= out["score"] <= 1.0 and out["reward_error"] == 0.0


def test_eval_verifier_cli_on_pairs(verifier, tmp_path):
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
    rc = eval_verifier.main(["--pairs", str(pairs), "--url", verifier.base_url, "--model", "fake", "--out", str(out)])
    metrics = json.loads(out.read_text())
    assert rc == 0 and metrics["n_pairs"] == 6 and metrics["n_positive"] == 3 and metrics["n_negative"] == 3
    # positives: True, False, True(fn) -> 2/3 rescued; negatives: False, unparseable, True(tn) -> 2/3
    assert metrics["fn_accuracy"] == pytest.approx(2 / 3) and metrics["tn_accuracy"] == pytest.approx(2 / 3)
    assert metrics["precision"] == pytest.approx(2 / 3) and metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["parse_failure_rate"] == pytest.approx(1 / 6) and metrics["request_failures"] == 0
    assert metrics["latency_p50_s"] > 0 and metrics["throughput_pairs_per_s"] > 0
