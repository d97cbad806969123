"""The C3PO sampling stage's logic without a server (verlkit.c3po.sample, verlkit.c3po.endpoints):
bounded re-asks, the resume log, per-feedback prompt selection, seeded splits, reading a sample back.

The chain against a real served model is tests/integration/test_c3po_sampling.py. Here a scripted
endpoint stands in for the server, to inject malformed and failed replies on demand (a real server
cannot be made to produce them); it is labelled as such.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from verlkit.c3po.constraints import categories_constraint
from verlkit.c3po.endpoints import RequestLog, use_constraints
from verlkit.c3po.feedback import Feedback
from verlkit.c3po.sample import FeedbackSampler, SampleConfig, load_sample, split, split_seed_for, take_round_robin
from verlkit.records import InputError

from support.c3po import ScriptedEndpoint

FEEDBACK = Feedback(content="Be more concise when writing emails to my boss", domain="writing emails to my boss",
                    effect="be more concise", name="concise-boss-emails")  # fmt: skip


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


def test_constraints_are_sent_to_loopback_servers_unless_told_otherwise():
    assert use_constraints("auto", "http://127.0.0.1:8000/v1") and use_constraints("auto", "http://localhost:1/v1")
    assert not use_constraints("auto", "https://api.openai.com/v1")
    assert use_constraints("on", "https://api.openai.com/v1") and not use_constraints("off", "http://127.0.0.1:8000/v1")


def test_a_constrained_endpoint_gets_the_regex_and_its_token_budget(tmp_path):
    s, teacher = sampler(tmp_path, [good_categories(2), good_categories(2)])
    teacher.constrained = True
    asyncio.run(s.categories())
    expected = categories_constraint(2, max_item_chars=100)  # the sampler's default item size
    assert teacher.kwargs[0]["extra_body"] == {"structured_outputs": {"regex": expected.regex}}
    assert teacher.kwargs[0]["max_tokens"] == expected.max_tokens != s.config.teacher_max_tokens
    teacher.constrained = False  # a server without structured outputs: a plain request
    (tmp_path / "plain").mkdir()
    again, _ = sampler(tmp_path / "plain", [])
    again.teacher = teacher
    asyncio.run(again.categories())
    assert teacher.kwargs[1]["extra_body"] is None and teacher.kwargs[1]["max_tokens"] == s.config.teacher_max_tokens


def write_sample(tmp_path: Path) -> Path:
    d = tmp_path / FEEDBACK.slug
    d.mkdir()
    (d / "feedback.json").write_text(json.dumps(FEEDBACK.to_dict()))
    (d / "categories.json").write_text(json.dumps(["Work"]))
    for name in ("in_scope", "near_scope", "out_of_scope"):
        (d / f"{name}.json").write_text(json.dumps({"train": [{"prompt": f"{name} 0"}], "test": []}))
    return d


def test_load_sample_reads_back_what_sampling_wrote(tmp_path):
    sample = load_sample(write_sample(tmp_path))
    assert sample["feedback"] == FEEDBACK and sample["categories"] == ["Work"]
    assert sample["sets"]["near_scope"] == {"train": [{"prompt": "near_scope 0"}], "test": []}


def test_load_sample_errors_name_the_file(tmp_path):
    d = write_sample(tmp_path)
    (d / "out_of_scope.json").unlink()
    with pytest.raises(InputError, match=r"out_of_scope.json: no such file \(did sampling finish"):
        load_sample(d)
    (d / "out_of_scope.json").write_text('{"train": [], "test": ')
    with pytest.raises(InputError, match=r"out_of_scope.json: not valid JSON"):
        load_sample(d)
    (d / "out_of_scope.json").write_text('{"train": {}, "test": []}')
    with pytest.raises(InputError, match=r"out_of_scope.json: train: expected a list of rows"):
        load_sample(d)
    (d / "feedback.json").write_text(json.dumps({**FEEDBACK.to_dict(), "scope": "nowhere"}))
    with pytest.raises(InputError, match=r"feedback.json: scope: must be one of"):
        load_sample(d)

