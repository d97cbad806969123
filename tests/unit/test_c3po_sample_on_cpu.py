"""The C3PO sampling stage's logic without a server: bounded re-asks, the resume log, per-feedback
prompt selection, seeded splits, the training parquet and the evaluation's scoring rules.

The chain against a real served model is tests/integration/test_c3po_sampling.py. Here a scripted
endpoint stands in for the server, to inject malformed and failed replies on demand (a real server
cannot be made to produce them); it is labelled as such.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pandas as pd
import pytest

from verlkit.c3po.dataset import preference_rows, write_preference_parquet
from verlkit.c3po.evaluate import order_corrected, outcome_from_score, summarize_set
from verlkit.c3po.feedback import Feedback
from verlkit.c3po.sample import (
    Endpoint,
    FeedbackSampler,
    RequestLog,
    SampleConfig,
    split,
    split_seed_for,
    take_round_robin,
)
from verlkit.clients.llm import Completion

FEEDBACK = Feedback(content="Be more concise when writing emails to my boss", domain="writing emails to my boss",
                    effect="be more concise", name="concise-boss-emails")  # fmt: skip


class ScriptedEndpoint(Endpoint):
    """FAULT INJECTION, not a model: replies from a script (text, or None for a failed request)."""

    def __init__(self, replies):
        super().__init__(url="http://127.0.0.1:1/v1", model="scripted")
        self.replies = list(replies)
        self.calls: list[list[dict]] = []

    def client(self):
        return self

    async def chat(self, messages, **kw):
        self.calls.append(messages)
        text = self.replies.pop(0)
        if text is None:
            return Completion(text=None, ok=False, error="HTTP 503", cache_hit=False, latency_s=0.0, attempts=4)
        return Completion(text=text, ok=True, error=None, cache_hit=False, latency_s=0.0, attempts=1)


def sampler(tmp_path: Path, teacher_replies, max_reasks: int = 2) -> tuple[FeedbackSampler, ScriptedEndpoint]:
    teacher = ScriptedEndpoint(teacher_replies)
    config = SampleConfig(num_in_scope=4, num_near_scope=4, num_out_of_scope=4, prompts_per_category=2,
                          max_reasks=max_reasks)  # fmt: skip
    return FeedbackSampler(FEEDBACK, teacher, ScriptedEndpoint([]), config, RequestLog(tmp_path / "log.jsonl")), teacher


def good_categories(k: int) -> str:
    items = "\n".join(f"{i + 1}. Category number {i + 1}" for i in range(k))
    return f"THOUGHTS: fine\nCATEGORIES:\n{items}\nREVISED_CATEGORIES:\n{items}\n"


def test_a_malformed_reply_is_re_asked_with_the_problem_stated(tmp_path):
    s, teacher = sampler(tmp_path, ["I cannot help with that.", good_categories(2)])
    assert asyncio.run(s.categories()) == ["Category number 1", "Category number 2"]
    assert s.counts.reasks == 1 and s.counts.requests == 2 and s.counts.parse_failures == 0
    # the re-ask carries the bad reply and a user turn saying what was wrong
    assert teacher.calls[1][-2] == {"role": "assistant", "content": "I cannot help with that."}
    assert teacher.calls[1][-1]["role"] == "user"


def test_re_asks_are_bounded_and_then_counted_not_raised_for_prompt_lists(tmp_path):
    s, teacher = sampler(tmp_path, ["nothing", "still nothing", "no"], max_reasks=2)
    (category, got), = asyncio.run(s.prompt_lists(["Work emails"], near=False))
    assert (category, got) == ("Work emails", [])
    assert s.counts.parse_failures == 1 and s.counts.reasks == 2 and len(teacher.calls) == 3
    assert s.counts.shortfalls == {"in_scope": 2}


def test_a_failed_request_is_counted_and_the_feedback_fails_without_categories(tmp_path):
    s, _ = sampler(tmp_path, [None])
    with pytest.raises(RuntimeError, match="no usable list"):
        asyncio.run(s.categories())
    assert s.counts.request_failures == 1 and "HTTP 503" in s.counts.errors[0]


def test_the_request_log_replays_an_interrupted_run_without_asking_again(tmp_path):
    s, _ = sampler(tmp_path, ["garbage", good_categories(2)])
    first = asyncio.run(s.categories())
    again, teacher = sampler(tmp_path, [])  # same log file; the script is empty: any request would fail
    assert asyncio.run(again.categories()) == first
    assert again.counts.requests == 0 and again.counts.replayed == 2 and not teacher.calls
    # a line cut off by the interruption is ignored, the rest still replays
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"key": "abc", "te')
    assert len(RequestLog(tmp_path / "log.jsonl").replies) == 2


def test_round_robin_keeps_every_category_and_drops_duplicates_and_excluded_prompts():
    lists = [("A", ["a1", "a2", "a3"]), ("B", ["b1", "A1"]), ("C", [])]
    got = take_round_robin(lists, 4, exclude={"b1"})
    assert [r["prompt"] for r in got] == ["a1", "a2", "a3"]  # "A1" duplicates "a1", b1 is excluded
    assert [r["category"] for r in take_round_robin([("A", ["x", "y"]), ("B", ["z"])], 2)] == ["A", "B"]


def test_splits_are_seeded_per_feedback_and_keep_a_training_row():
    rows = [{"prompt": str(i)} for i in range(20)]
    seed = split_seed_for(42, FEEDBACK)
    a, b = split(rows, 0.25, seed), split(rows, 0.25, seed)
    assert a == b and len(a["test"]) == 5 and len(a["train"]) == 15
    other = Feedback(content="Use emojis when texting friends", domain="texting friends", effect="use emojis")
    assert split(rows, 0.25, split_seed_for(42, other)) != a
    assert {r["prompt"] for r in a["train"]} | {r["prompt"] for r in a["test"]} == {str(i) for i in range(20)}
    assert split([{"prompt": "only"}, {"prompt": "two"}], 0.9, 1)["train"]


def sample_dir(tmp_path: Path, n_in=3, n_near=2, n_out=4) -> Path:
    d = tmp_path / FEEDBACK.slug
    d.mkdir()
    row = lambda p, c: {"prompt": p, "category": c, "baseline_response": f"base {p}", "revised_response": f"rev {p}",
                        "in_context_response": f"ic {p}", "cot_response": None}  # noqa: E731
    (d / "feedback.json").write_text(json.dumps(FEEDBACK.to_dict()))
    (d / "categories.json").write_text(json.dumps(["Work"]))
    for name, n in (("in_scope", n_in), ("near_scope", n_near), ("out_of_scope", n_out)):
        rows = [row(f"{name} {i}", None if name == "out_of_scope" else "Work") for i in range(n)]
        (d / f"{name}.json").write_text(json.dumps({"train": rows, "test": rows[:1]}))
    return d


def test_training_rows_pair_revised_over_baseline_and_constrain_with_baselines(tmp_path):
    from verlkit.c3po.sample import load_sample

    rows = preference_rows(load_sample(sample_dir(tmp_path)))
    kinds = [r["kind"] for r in rows]
    assert kinds == ["pair", "pair", "near_scope", "near_scope", "out_of_scope", "out_of_scope"]  # balanced to 2
    pair = rows[0]
    assert pair["prompt"] == [{"role": "user", "content": "in_scope 0"}]
    assert pair["chosen"] == "rev in_scope 0" and pair["rejected"] == "base in_scope 0"
    assert rows[2]["response"] == "base near_scope 0" and rows[4]["category"] is None
    assert all(r["feedback_id"] == FEEDBACK.id for r in rows)


def test_the_training_parquet_loads_in_the_preference_dataset(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from verlkit.preference.data import PreferenceDataset

    out = tmp_path / "train.parquet"
    counts = write_preference_parquet(sample_dir(tmp_path), out, balance=False)
    assert counts == {"pair": 3, "near_scope": 2, "out_of_scope": 4}
    ds = PreferenceDataset(str(out), AutoTokenizer.from_pretrained(tiny_model_dir), {"max_length": 256})
    assert len(ds) == 9 and len(pd.read_parquet(out)) == 9


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
