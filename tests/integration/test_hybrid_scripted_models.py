"""``tinyv`` with ``setup=hybrid`` through TWO SCRIPTED models, one per side, each on its own server.

Each side is a fake server of ``support.fake_openai`` that replies with the text the test embeds in
the question (``VERIFIER<<...>>`` for the binary verifier, ``RUBRIC<<...>>`` for the rubric model) or
fails on demand (``mode:always500``). Real models cannot be made to say "True", "Total Score: 6/10",
garbage or fail on demand, and these tests check what the reward does with each, and which server
each sample reaches. The real vLLM server is used in tests/integration/test_verifier_server.py; the
rule check runs in its real worker pool.
"""

from __future__ import annotations

import asyncio
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fake_openai import FakeOpenAIServer

from verl.utils.reward_score import registry
from verlkit.plugin.step_metrics import summarize

pytestmark = pytest.mark.integration

CRITERIA = "10 points: the final answer 4 with a correct justification."


def _script(tag: str):
    return lambda content: re.search(tag + r"<<(.*?)>>", content, re.S).group(1)


@pytest.fixture(scope="module")
def sides():
    verifier, rubric = FakeOpenAIServer(reply=_script("VERIFIER")), FakeOpenAIServer(reply=_script("RUBRIC"))
    yield verifier, rubric
    verifier.close()
    rubric.close()


def options(sides, **rubric_options) -> dict:
    verifier, rubric = sides
    return {"setup": "hybrid", "max_retries": 1, "cache_size": 0,
            "verifier": {"url": verifier.base_url, "model": "tinyv", "weight": 0.8},
            "rubric": {"url": rubric.base_url, "model": "rrm", "weight": 0.5, "share": 1.0, **rubric_options}}


def info(tag: str, verifier_reply: str = "False", rubric_reply: str = "Total Score: 10/10") -> dict:
    return {"question": f"[{tag}] What is 2+2? VERIFIER<<{verifier_reply}>> RUBRIC<<{rubric_reply}>>",
            "criteria": CRITERIA}


def score_rows(rows: list[tuple[str, dict]], opts: dict) -> list[dict]:
    async def run():
        return await asyncio.gather(*(registry.compute_score_async("polaris_tinyv", solution, "4", extra, tinyv=opts)
                                      for solution, extra in rows))

    return asyncio.run(run())


def test_each_side_gets_only_its_samples_and_the_scores_follow_the_formula(sides):
    verifier, rubric = sides
    v0, r0 = len(verifier.prompts), len(rubric.prompts)
    rows = [
        ("Two and two make four. \\boxed{4}", info("a", rubric_reply="Sound.\nTotal Score: 10/10")),
        ("By a lucky guess, \\boxed{4}", info("b", rubric_reply="Unjustified.\nTotal Score: 4/10")),
        ("It is \\boxed{\\text{four}}", info("c", verifier_reply="True")),
        ("It is \\boxed{5}", info("d", verifier_reply="False")),
    ]
    a, b, c, d = score_rows(rows, options(sides))
    # rule-correct -> rubric model only: weighted flaw 1 - s, r = 1 - 0.5·(1 - s)
    assert (a["rule_correct"], a["sent_to_rubric"], a["sent_to_verifier"]) == (1.0, 1.0, 0.0)
    assert a["score"] == 1.0 and a["rubric_score"] == 1.0 and a["acc"] == 1.0
    assert b["score"] == pytest.approx(0.7) and b["rubric_score"] == pytest.approx(0.4)
    assert (b["rule_term"], b["rescue_term"], b["soundness_term"]) == pytest.approx((1.0, 0.0, 0.4))
    # rule-wrong -> verifier only: r = 0.8·v
    assert (c["rule_correct"], c["sent_to_verifier"], c["sent_to_rubric"]) == (0.0, 1.0, 0.0)
    assert c["score"] == pytest.approx(0.8) and c["verifier_score"] == 1.0 and c["acc"] == 1.0
    assert d["score"] == 0.0 and d["acc"] == 0.0 and math.isnan(d["rubric_score"])
    # two requests on each server; the rubric model saw the full response, the verifier the extracted answer
    new_v, new_r = verifier.prompts[v0:], rubric.prompts[r0:]
    assert len(new_v) == 2 and len(new_r) == 2
    assert any("By a lucky guess" in p for p in new_r) and all("Scoring Criteria" in p for p in new_r)
    assert any("<model_answer>\n\\text{four}\n</model_answer>" in p for p in new_v)
    # the step metrics report the share of the batch sent to each model
    columns = {k: [r[k] for r in (a, b, c, d)] for k in ("sent_to_verifier", "sent_to_rubric")}
    metrics = summarize(columns)
    assert metrics["reward/sent_to_verifier/mean"] == 0.5 and metrics["reward/sent_to_rubric/mean"] == 0.5
    assert metrics["reward/sent_to_verifier/count"] == 2.0


def test_prompts_not_picked_for_the_flaw_check_never_reach_the_rubric_model(sides):
    verifier, rubric = sides
    r0 = len(rubric.prompts)
    rows = [(f"so \\boxed{{4}} ({i})", info(f"share0-{i}", rubric_reply="Total Score: 0/10")) for i in range(6)]
    rows.append(("so \\boxed{7}", info("share0-wrong", verifier_reply="False")))
    results = score_rows(rows, options(sides, share=0.0))
    assert len(rubric.prompts) == r0
    assert [r["score"] for r in results[:6]] == [1.0] * 6 and all(r["sent_to_rubric"] == 0.0 for r in results)
    # the models' load: the verifier's share is the rule-wrong share, the rubric's 0: far below 1x
    load = sum(r["sent_to_verifier"] + r["sent_to_rubric"] for r in results) / len(results)
    rule_accuracy = sum(r["rule_correct"] for r in results) / len(results)
    assert load == pytest.approx(1 - rule_accuracy) == pytest.approx(1 / 7)


def test_penalty_mode_and_an_unparseable_rubric_reply(sides):
    flagged, unreadable = score_rows([
        ("so \\boxed{4}", info("pen-a", rubric_reply="Total Score: 6/10")),
        ("hence \\boxed{4}", info("pen-b", rubric_reply="Looks fine to me.")),
    ], options(sides, mode="penalty", flaw_threshold=0.7, weight=0.4))
    assert flagged["score"] == pytest.approx(0.6) and flagged["parse_ok"] == 1.0
    # no score in the reply: the side falls back to the rule's verdict (no penalty), flagged
    assert unreadable["score"] == 1.0 and unreadable["parse_ok"] == 0.0 and unreadable["verifier_failed"] == 0.0


@pytest.mark.parametrize("policy,correct_score", [("rule", 1.0), ("zero", 0.0)])
def test_a_failing_model_is_flagged_and_scored_by_its_sides_policy(sides, policy, correct_score):
    opts = options(sides)
    opts["rubric"]["on_failure"] = policy
    opts["verifier"]["on_failure"] = policy
    right, wrong = score_rows([
        ("so \\boxed{4}", info(f"fail-{policy}", rubric_reply="mode:always500")),
        ("so \\boxed{9}", info(f"fail-{policy}", verifier_reply="mode:always500")),
    ], opts)
    for out in (right, wrong):
        assert out["verifier_failed"] == 1.0 and out["verifier_ok"] == 0.0 and out["reward_error"] == 0.0
    assert right["score"] == correct_score and right["sent_to_rubric"] == 1.0
    assert wrong["score"] == 0.0 and wrong["sent_to_verifier"] == 1.0


@settings(max_examples=30, deadline=None)
@given(solution=st.text(max_size=80), reply=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=30),
       mode=st.sampled_from(["weighted", "penalty"]), share=st.sampled_from([0.0, 0.5, 1.0]))
def test_hybrid_never_raises_and_stays_in_range(sides, solution, reply, mode, share):
    extra = {"question": f"Q VERIFIER<<{reply}>> RUBRIC<<{reply}>>", "criteria": CRITERIA}
    out = registry.compute_score("polaris_tinyv", solution, "4", extra, tinyv=options(sides, mode=mode, share=share))
    assert 0.0 <= out["score"] <= 1.0 and out["reward_error"] == 0.0
    assert out["sent_to_verifier"] + out["sent_to_rubric"] <= 1.0
