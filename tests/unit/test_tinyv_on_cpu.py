"""The ``*_tinyv`` reward without a server: verdict parsing, options, the setups' formulas, the row
check, and the verifier evaluation's input errors. Scoring through a (scripted) verifier is in
tests/integration/test_tinyv_scripted_verifier.py, against the real vLLM server in
tests/integration/test_verifier_server.py.
"""

from __future__ import annotations

import importlib
import socket
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verl.utils.reward_score import registry, tinyv
from verl.utils.reward_score.options import parse_options as parse
from verl.utils.reward_score.registry import RewardOptionsError
from verl.utils.reward_score.tinyv import TinyVOptions, parse_verdict
from verlkit.records import InputError


def parse_options(options: dict) -> TinyVOptions:
    return parse(TinyVOptions, options)

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
    monkeypatch.delenv(tinyv.URL_ENV, raising=False)
    assert parse_options({"model": "m"}).url == "http://127.0.0.1:8000/v1"
    monkeypatch.setenv(tinyv.URL_ENV, "http://127.0.0.1:9999/v1")
    monkeypatch.setenv(tinyv.MODEL_ENV, "from-env")
    opts = parse_options({"model": "m"})
    assert opts.url == "http://127.0.0.1:9999/v1" and opts.template == "tinyv" and opts.setup == "addon"
    assert parse_options({"url": ""}).model == "from-env"  # an empty option falls back to the env too
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
    with pytest.raises(RewardOptionsError, match=r"tinyv: option 'model' is required \(or set \$VERLKIT_VERIFIER_MODEL\)"):
        parse_options({})


def test_row_check_needs_the_question():
    assert tinyv.validate_row({"extra_info": {"question": "What is 2+2?"}}) == []
    assert tinyv.validate_row({"extra_info": {"question": "  "}}) == [
        "extra_info.question: missing or empty (the verifier prompt needs the question)"]
    assert tinyv.validate_row({}) == ["extra_info.question: missing or empty (the verifier prompt needs the question)"]


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


def test_import_does_no_io(monkeypatch):
    """Importing the reward module must not connect, start processes or threads (the original did a
    GET /v1/models at import time). The modules are re-imported here with all of those forbidden."""

    def forbid(*args, **kwargs):
        raise AssertionError("I/O at import time")

    names = ["verl.utils.reward_score.tinyv", "verl.utils.reward_score.grade",
             "verl.utils.reward_score.verifier_prompts", "verl.utils.reward_score.options", "verlkit.clients.llm",
             "verlkit.clients.settings", "verlkit.clients.rule_check"]
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
@pytest.mark.parametrize("lines, expected", [
    (['{"question": "q", "ground_truth": "1", "answer": "1", "label": true}', '{"question": "q", "answer": "2", "label": false}'],
     (1, "ground_truth", "missing or empty")),
    (['{"question": "q", "ground_truth": "1", "answer": "1", "label": "maybe"}'], (0, "label", "must be true/false, got 'maybe'")),
    (['{"question": "q", "ground_truth": "1", "answer": "1", "label": true}', "{not json"], ("line 2", None, "not valid JSON")),
])
def test_eval_verifier_names_file_entry_and_field(tmp_path, lines, expected):
    from verlkit.evaluation import verifier as eval_verifier

    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as raised:
        eval_verifier.load_pairs(bad)
    entry, field, reason = expected
    assert raised.value.file == str(bad) and raised.value.field == field and raised.value.reason.startswith(reason)
    assert raised.value.entry == (f"record {entry}" if isinstance(entry, int) else entry)
    assert str(raised.value).startswith(f"{bad}: {raised.value.entry}: ")


def test_eval_verifier_rubric_template_needs_criteria(tmp_path):
    from verlkit.evaluation import verifier as eval_verifier

    pairs = tmp_path / "pairs.json"
    pairs.write_text('[{"question": "q", "ground_truth": "1", "answer": "1", "label": true}]')
    assert len(eval_verifier.load_pairs(pairs)) == 1
    with pytest.raises(InputError, match=r"pairs\.json: record 0: criteria: missing or empty"):
        eval_verifier.load_pairs(pairs, needs_criteria=True)


def test_negated_verdict_check_agrees_with_the_per_word_check_it_replaced():
    # oracle: the earlier per-word test (is the text before each verdict word a negation?)
    import random

    rng = random.Random(3)
    parts = ["True", "False", "true", "not", "no", "never", "isn't", " ", "  ", "*", "**", "`", '"', "x", "nottrue", "."]
    lines = ["".join(rng.choice(parts) for _ in range(rng.randint(1, 10))) for _ in range(20_000)]
    from verl.utils.reward_score import verdict_parsers as vp

    word_re, _, negated_re = vp._word_patterns(("true", "false"))
    per_word = [any(vp._NEGATION_BEFORE.search(line[: w.start()]) for w in word_re.finditer(line)) for line in lines]
    assert 300 < sum(per_word) < 19_000  # both outcomes are well represented
    assert [bool(negated_re.search(line)) for line in lines] == per_word


# ------------------------------------------------------------------ verifier evaluation: failed requests
def test_eval_metrics_exclude_failed_requests_and_count_them():
    from verlkit.evaluation.verifier import compute_metrics

    labels = [True, True, True, False, False, False]
    verdicts = [True, None, False, False, None, True]
    failed = [False, True, False, False, True, False]  # pair 1 (label True) and pair 4 (label False) failed
    m = compute_metrics(labels, verdicts, [0.1, 0.2], failed, wall_s=2.0, scores=[1.0, None, 0.0, 0.0, None, 1.0],
                        invalid=[False] * 6)
    # answered positives: True, False -> 1/2 rescued; answered negatives: False, True -> 1/2
    assert m["fn_accuracy"] == 0.5 and m["tn_accuracy"] == 0.5
    assert m["n_pairs"] == 6 and m["n_answered"] == 4 and m["n_positive"] == 2 and m["n_negative"] == 2
    assert m["request_failures"] == 2 and m["request_failures_positive"] == 1 and m["request_failures_negative"] == 1
    assert m["parse_failure_rate"] == 0.0 and m["accuracy"] == 0.5
    assert m["mean_score_positive"] == 0.5 and m["mean_score_negative"] == 0.5
    # before the fix, a failed request was a "False" verdict: tn_accuracy would read 2/3 and fn_accuracy 1/3


def test_eval_metrics_when_every_request_failed():
    import math

    from verlkit.evaluation.verifier import compute_metrics

    m = compute_metrics([True, False], [None, None], [], [True, True], wall_s=1.0)
    assert math.isnan(m["fn_accuracy"]) and math.isnan(m["tn_accuracy"]) and m["request_failures"] == 2
