"""C3PO's evaluation rules (verlkit.c3po.evaluate): the judge's order correction and thresholds, the
per-set summary, and the judge's bounded re-asks (a scripted judge injects the unusable verdicts)."""

from __future__ import annotations

import asyncio

from verlkit.c3po.evaluate import (Evaluator, build_parser, check_args, order_corrected, outcome_from_score,
                                   summarize_set, tie_reason)
from verlkit.c3po.feedback import Feedback

from support.c3po import ScriptedEndpoint

FEEDBACK = Feedback(content="Be more concise when writing emails to my boss", domain="writing emails to my boss",
                    effect="be more concise", name="concise-boss-emails")  # fmt: skip


def test_judge_scores_are_order_corrected_and_thresholded_symmetrically():
    # evaluated response second: 5 = it is much better; first: 1 = it is much better
    assert order_corrected(5, 1) == 5.0 and order_corrected(3, 3) == 3.0 and order_corrected(4, 4) == 3.0
    assert [outcome_from_score(s, 4.0) for s in (5.0, 4.0, 3.5, 3.0, 2.5, 2.0, 1.0)] == [
        "better", "better", "tie", "tie", "tie", "worse", "worse"]


def test_set_summary_reports_ties_apart_and_excludes_failures():
    records = [{"outcome": "better", "baseline_metric": 10, "evaluated_metric": 5},
               {"outcome": "tie", "baseline_metric": 5, "evaluated_metric": 5},
               {"outcome": None}]  # fmt: skip
    s = summarize_set(records, quantitative=True)
    assert s["n_judged"] == 2 and s["failures"] == 1
    assert s["applied_rate"] == 0.5 and s["tie_rate"] == 0.5 and s["worse_rate"] == 0.0
    assert s["mean_baseline_metric"] == 7.5 and s["mean_evaluated_metric"] == 5.0
    assert summarize_set([{"outcome": None}], quantitative=False)["applied_rate"] is None


def test_every_tie_says_what_it_is_made_of():
    assert tie_reason({"evaluated": "Hi.\n", "baseline": "Hi.", "score_forward": 4, "score_swapped": 4}) == "identical_responses"
    assert tie_reason({"evaluated": "a", "baseline": "b", "score_forward": 5, "score_swapped": 5}) == "judge_position_bias"
    assert tie_reason({"evaluated": "a", "baseline": "b", "score_forward": 3, "score_swapped": 3}) == "judged_equal"
    assert tie_reason({"evaluated": "a", "baseline": "b", "score_forward": 4, "score_swapped": 3}) == "weak_preference"
    assert tie_reason({"evaluated": "a", "baseline": "b", "baseline_metric": 3, "evaluated_metric": 3}) == "metric_unchanged"
    m = {"baseline_metric": 1, "evaluated_metric": 1}
    records = [{"outcome": "tie", "tie_reason": "metric_unchanged", **m}, {"outcome": "tie", "tie_reason": "metric_unchanged", **m},
               {"outcome": "tie", "tie_reason": "identical_responses", **m}, {"outcome": "better", **m}, {"outcome": None}]
    assert summarize_set(records, quantitative=True)["tie_reasons"] == {"identical_responses": 1, "metric_unchanged": 2}


def test_a_judged_tie_records_its_reason():
    ev, _ = evaluator(["EXPLANATION: x\nBETTER_RESPONSE: 2", "EXPLANATION: x\nBETTER_RESPONSE: 2"])
    record = asyncio.run(ev.compare_row({"prompt": "Email Jared"}, "short", "long"))
    assert (record["outcome"], record["tie_reason"]) == ("tie", "judge_position_bias")


def evaluator(judge_replies, max_reasks: int = 1) -> tuple[Evaluator, ScriptedEndpoint]:
    args = build_parser().parse_args(["--sample-dir", "unused", "--out", "unused", "--method", "in_context",
                                      "--judge-url", "http://127.0.0.1:1/v1", "--judge-model", "judge",
                                      "--max-reasks", str(max_reasks)])  # fmt: skip
    assert check_args(args, FEEDBACK) is None and args.baseline == "stored"
    ev = Evaluator({"feedback": FEEDBACK, "sets": {}}, args)
    assert ev.judge.constrained  # loopback judge: constrained by default
    ev.judge = ScriptedEndpoint(judge_replies)
    return ev, ev.judge


def test_an_unusable_verdict_is_re_asked_then_the_prompt_counts_as_a_failure():
    ev, judge = evaluator(["EXPLANATION: x\nBETTER_RESPONSE: 7", "EXPLANATION: x\nBETTER_RESPONSE: 4",
                           "no verdict", "still none"])  # fmt: skip
    assert asyncio.run(ev.judge_once("Email Jared", "long", "short")) == 4
    assert "BETTER_RESPONSE: must be" in judge.calls[1][-1]["content"]  # the re-ask says what was wrong
    assert asyncio.run(ev.judge_once("Email Jared", "short", "long")) is None  # one re-ask, then given up
    counts = ev.judge_asker.counts
    assert (counts.requests, counts.reasks, counts.parse_failures, counts.request_failures) == (4, 2, 1, 0)


def test_a_row_whose_judge_fails_is_excluded_not_scored():
    ev, _ = evaluator([None, "EXPLANATION: x\nBETTER_RESPONSE: 5"], max_reasks=0)
    record = asyncio.run(ev.compare_row({"prompt": "Email Jared"}, "short", "long"))
    assert record["outcome"] is None and record["error"] == "judge failed or unparseable"
    assert ev.judge_asker.counts.request_failures == 1
