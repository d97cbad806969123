"""``tinyv`` with ``setup=hybrid`` without a server: its options (two sides on tinyv's per-call
options), which prompts get the flaw check, the flaw and score formulas and their components.
Scoring through two scripted models is in tests/integration/test_hybrid_scripted_models.py, against the
real vLLM server in tests/integration/test_verifier_server.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verl.utils.reward_score import hybrid, registry, tinyv
from verl.utils.reward_score.options import RewardOptionsError, parse_options

URL_A, URL_B = "http://127.0.0.1:9001/v1", "http://127.0.0.1:9002/v1"


def test_top_level_client_settings_are_both_sides_defaults():
    opts = parse_options(hybrid.HybridOptions, {
        "setup": "hybrid", "url": URL_A, "timeout_s": "30", "verifier": {"model": "tinyv-1.5b"},
        "rubric": {"model": "rrm", "url": URL_B, "weight": "0.3", "mode": "penalty"},
    })
    assert (opts.verifier.url, opts.verifier.model, opts.verifier.timeout_s) == (URL_A, "tinyv-1.5b", 30.0)
    assert (opts.rubric.url, opts.rubric.model, opts.rubric.timeout_s) == (URL_B, "rrm", 30.0)
    # each side keeps its own template and weight defaults
    assert (opts.verifier.template, opts.verifier.weight) == ("tinyv", 1.0)
    assert (opts.rubric.template, opts.rubric.weight, opts.rubric.mode, opts.rubric.share) == ("rubric", 0.3, "penalty", 0.5)
    assert opts.verifier.client_config().base_url == URL_A and opts.rubric.client_config().base_url == URL_B


def test_one_model_name_for_both_sides_and_the_env_defaults(monkeypatch):
    monkeypatch.setenv(tinyv.URL_ENV, URL_B)
    monkeypatch.setenv(tinyv.MODEL_ENV, "shared")
    opts = parse_options(hybrid.HybridOptions, {"setup": "hybrid"})
    assert opts.verifier.model == opts.rubric.model == "shared" and opts.rubric.url == URL_B


@pytest.mark.parametrize("options,message", [
    ({"verifier": {"model": "v"}}, "tinyv: rubric: option 'model' is required"),
    ({"model": "m", "weight": 0.5}, "tinyv: weight: set per side"),
    ({"model": "m", "template": "rubric"}, "tinyv: template: set per side"),
    ({"model": "m", "rubric": {"setup": "addon"}}, "tinyv: rubric: setup: not an option of one side"),
    ({"model": "m", "verifier": {"rule_timeout_s": 3}}, "tinyv: verifier: rule_timeout_s: not an option of one side"),
    ({"model": "m", "rubric": {"share": 2}}, "tinyv: rubric: option 'share'=2"),
    ({"model": "m", "rubric": {"mode": "harsh"}}, "tinyv: rubric: option 'mode'='harsh'"),
    ({"model": "m", "verifier": "tinyv-1.5b"}, "tinyv: verifier: must be a mapping"),
])
def test_bad_hybrid_options_name_the_side_and_the_option(options, message):
    with pytest.raises(RewardOptionsError) as err:
        parse_options(hybrid.HybridOptions, {"setup": "hybrid", "url": URL_A, **options})
    assert str(err.value).startswith(message)


def test_sides_are_not_options_of_the_other_setups():
    with pytest.raises(RewardOptionsError, match="unknown option 'verifier'"):
        parse_options(tinyv.TinyVOptions, {"url": URL_A, "model": "m", "setup": "addon", "verifier": {"model": "v"}})


def test_bad_hybrid_options_stop_the_run_through_the_registry():
    with pytest.raises(RewardOptionsError):
        registry.compute_score("polaris_tinyv", "\\boxed{4}", "4", {"question": "q"},
                               tinyv={"setup": "hybrid", "url": URL_A, "model": "m", "weight": 0.5})


def test_flaw_check_is_chosen_per_prompt():
    assert hybrid.flaw_checked("q", "4", 1.0) and not hybrid.flaw_checked("q", "4", 0.0)
    # the same prompt always gets the same answer (every sample of a group, every epoch)
    assert len({hybrid.flaw_checked("What is 2+2?", "4", 0.5) for _ in range(5)}) == 1
    # over many prompts the chosen share is close to `share` (the hash is fixed: no flakiness)
    chosen = sum(hybrid.flaw_checked(f"Problem {i}", str(i % 7), 0.3) for i in range(2000))
    assert 540 <= chosen <= 660
    # and a prompt chosen at a share is chosen at every larger share
    assert all(hybrid.flaw_checked(f"Problem {i}", "1", 0.6) for i in range(300) if hybrid.flaw_checked(f"Problem {i}", "1", 0.3))


def test_flaw_by_mode():
    assert hybrid.flaw(0.7, "weighted", 0.5) == pytest.approx(0.3)
    assert hybrid.flaw(0.7, "penalty", 0.8) == 1.0
    assert hybrid.flaw(0.8, "penalty", 0.8) == 0.0


@pytest.mark.parametrize("rule_correct,v,f,wv,wr,terms,score", [
    # rule-correct, rubric score 0.6 (weighted: flaw 0.4), w_r = 0.5 -> 1 - 0.5·0.4 = 0.8
    (True, 0.0, 0.4, 1.0, 0.5, (1.0, 0.0, 0.6), 0.8),
    # rule-correct, not flaw-checked (flaw 0) -> 1
    (True, 0.0, 0.0, 1.0, 0.5, (1.0, 0.0, 1.0), 1.0),
    # rule-correct, penalty mode flags it (flaw 1), w_r = 0.3 -> 0.7
    (True, 0.0, 1.0, 1.0, 0.3, (1.0, 0.0, 0.0), 0.7),
    # rule-wrong, verifier says True, w_v = 0.8 -> 0.8 (the rescue, as addon)
    (False, 1.0, 0.0, 0.8, 0.5, (0.0, 1.0, 0.0), 0.8),
    # rule-wrong, verifier says False -> 0
    (False, 0.0, 0.0, 1.0, 0.5, (0.0, 0.0, 0.0), 0.0),
])
def test_hybrid_formula_and_components(rule_correct, v, f, wv, wr, terms, score):
    got = hybrid.hybrid_terms(rule_correct, verifier_score=v, flaw_value=f)
    assert (got["rule_term"], got["rescue_term"], got["soundness_term"]) == pytest.approx(terms)
    assert hybrid.hybrid_score(got, wv, wr) == pytest.approx(score)


@settings(max_examples=200, deadline=None)
@given(rule_correct=st.booleans(), v=st.floats(0, 1), f=st.floats(0, 1), wv=st.floats(0, 1), wr=st.floats(0, 1))
def test_hybrid_score_stays_in_range_and_rescue_never_beats_a_sound_correct_answer(rule_correct, v, f, wv, wr):
    score = hybrid.hybrid_score(hybrid.hybrid_terms(rule_correct, v, f), wv, wr)
    assert -1e-9 <= score <= 1.0 + 1e-9
    assert score <= hybrid.hybrid_score(hybrid.hybrid_terms(True), wv, wr) + 1e-9


@pytest.mark.parametrize("setup,rule_correct,v,expected", [
    ("tinyv_only", None, 0.7, {"verifier_term": 0.7}),
    ("addon", True, 0.0, {"rule_term": 1.0, "rescue_term": 0.0}),
    ("addon", False, 1.0, {"rule_term": 0.0, "rescue_term": 1.0}),
    ("mixed", True, 0.0, {"rule_term": 1.0, "verifier_term": 0.0}),
])
def test_tinyv_setup_components(setup, rule_correct, v, expected):
    # and they add up to combine(): addon r = rule + w·rescue, mixed r = (1-w)·rule + w·verifier
    assert tinyv.setup_terms(setup, rule_correct, v) == expected
    w = 0.25
    terms = expected
    total = {"tinyv_only": lambda: terms["verifier_term"],
             "addon": lambda: terms["rule_term"] + w * terms["rescue_term"],
             "mixed": lambda: (1 - w) * terms["rule_term"] + w * terms["verifier_term"]}[setup]()
    assert total == pytest.approx(tinyv.combine(setup, w, v, rule_correct))


def test_hybrid_keys_are_part_of_the_result_schema():
    keys = registry.result_keys()
    for key in ("sent_to_verifier", "sent_to_rubric", "verifier_score", "rubric_score", "rule_term", "rescue_term",
                "soundness_term", "verifier_term"):
        assert key in keys
