"""Calibration rewards: Prompt4Trust (cgp, downstream model answers) and RLCR (policy answers).

Pure parts only (prompt building, parsing, scoring) plus the registry routing; the downstream call
is exercised against a real vLLM server in tests/integration/test_calibration_server.py.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verl.utils.reward_score import calibration as cgp
from verl.utils.reward_score import registry, rlcr
from verl.utils.reward_score.options import parse_options

OPTIONS = ["Liver", "Pancreas", "Spleen", "Kidney"]
EXTRA = {"question": "Which organ produces insulin?", "options": OPTIONS}


# ---------------------------------------------------------------------------------------------
# Prompt4Trust: prompts
# ---------------------------------------------------------------------------------------------
def test_downstream_prompt_structure_and_baseline():
    with_hint = cgp.build_downstream_prompt(EXTRA["question"], OPTIONS, "  Think about islet cells. ")
    baseline = cgp.build_downstream_prompt(EXTRA["question"], OPTIONS, None)
    assert "the answer is N with confidence C" in with_hint
    for i, opt in enumerate(OPTIONS, start=1):
        assert f"({i}) {opt}" in with_hint
    assert with_hint.index("Question:") < with_hint.index("Options:") < with_hint.index("Hint:") < with_hint.index("Answer:")
    assert "Hint: Think about islet cells." in with_hint
    assert "Hint:" not in baseline and baseline.rstrip().endswith("Answer:")


def test_policy_prompt_has_question_options_and_no_gold():
    prompt = cgp.build_policy_prompt(EXTRA["question"], OPTIONS)
    assert "(4) Kidney" in prompt and EXTRA["question"] in prompt
    assert prompt.rstrip().endswith("Hint:")
    assert "Do not say which option is correct" in prompt


# ---------------------------------------------------------------------------------------------
# Prompt4Trust: parsing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, answer, confidence", [
    ("In conclusion, the answer is 2 with confidence 80", 2, 0.80),
    ("THE ANSWER IS (3) WITH CONFIDENCE (95%).", 3, 0.95),
    ("the answer is 1 with confidence 72.5%", 1, 0.725),
    ("the answer is 2.0 with confidence 60", 2, 0.60),  # seed bug: "2.0" stayed a string
    ("The answer is option 4, with a confidence of 30.", 4, 0.30),
    ("the answer is 2 with confidence 150", 2, 1.0),  # clamped to 100
    ("the answer is 4 with confidence 0", 4, 0.0),
    # LAST sentence wins, not an earlier one or an earlier "confidence 9" in the reasoning
    ("I have confidence 9 in nothing. the answer is 1 with confidence 10. Actually, "
     "the answer is 3 with confidence 70", 3, 0.70),
])
def test_parse_final_answer(text, answer, confidence):
    parsed = cgp.parse_final_answer(text, 4)
    assert parsed is not None
    assert parsed.answer == answer
    assert parsed.confidence == pytest.approx(confidence)


@pytest.mark.parametrize("text, answer, confidence", [
    # the original searched "answer is N" and "confidence C" separately (reference-methods §2.3)
    ("Insulin comes from islet cells, so the answer is 2. My confidence is 80", 2, 0.80),
    ("The answer is (3). Confidence: 65%", 3, 0.65),
    ("the answer is 1 and I have confidence 90 in it", 1, 0.90),
    ("Confidence level 40. In conclusion, the answer is 4", 4, 0.40),
    ("answer is 2\nconfidence (55)", 2, 0.55),
    # the last of each counts: the reply's conclusion, not the reasoning before it
    ("I had confidence 10 at first. the answer is 3. On reflection the answer is 2. My confidence is 85", 2, 0.85),
])
def test_parse_accepts_answer_and_confidence_stated_apart(text, answer, confidence):
    parsed = cgp.parse_final_answer(text, 4)
    assert parsed is not None
    assert (parsed.answer, parsed.confidence) == (answer, pytest.approx(confidence))


@pytest.mark.parametrize("text", [
    "the answer is 2. I am quite sure.",  # no confidence stated
    "My confidence is 80, it is the pancreas",  # no answer stated
    "the answer is 2. My confidence is high",
    "", "I think it is the pancreas.", "the answer is 2", "confidence 80",
    "the answer is 5 with confidence 80",  # not an option
    "the answer is 0 with confidence 80",
    "the answer is 2.5 with confidence 80",
    "the answer is 2 with confidence -5",
    "the answer is B with confidence 80",
])
def test_parse_final_answer_rejects(text):
    assert cgp.parse_final_answer(text, 4) is None


# ---------------------------------------------------------------------------------------------
# Prompt4Trust: scoring (worked examples of reference-methods §2.4)
# ---------------------------------------------------------------------------------------------
def _score(text, variant, gold=2):
    return cgp.score_reply(cgp.parse_final_answer(text, 4), gold, variant)


def test_v2_log_penalized_worked_examples():
    assert _score("the answer is 2 with confidence 80", "log_penalized") == pytest.approx(-0.223, abs=1e-3)
    assert _score("the answer is 1 with confidence 80", "log_penalized") == pytest.approx(-2.609, abs=1e-3)
    assert _score("the answer is 1 with confidence 0", "log_penalized") == pytest.approx(-1.0)
    assert _score("the answer is 2 with confidence 0", "log_penalized") == pytest.approx(-23.026, abs=1e-3)
    assert _score("the answer is 1 with confidence 100", "log_penalized") == pytest.approx(-24.026, abs=1e-3)
    assert _score("the answer is 2 with confidence 300", "log_penalized") == pytest.approx(0.0)
    assert _score("no final sentence", "log_penalized") == cgp.UNPARSEABLE_LOG_SCORE
    assert cgp.UNPARSEABLE_LOG_SCORE == pytest.approx(-27.631, abs=1e-3)


def test_v1_log_worked_examples():
    assert _score("the answer is 2 with confidence 80", "log") == pytest.approx(-0.223, abs=1e-3)
    assert _score("the answer is 1 with confidence 80", "log") == pytest.approx(-1.609, abs=1e-3)
    assert _score("the answer is 1 with confidence 0", "log") == pytest.approx(0.0)
    assert _score("the answer is 2 with confidence 0", "log") == pytest.approx(-23.026, abs=1e-3)
    assert _score("garbage", "log") == pytest.approx(-27.631, abs=1e-3)


def test_brier_values():
    assert _score("the answer is 2 with confidence 100", "brier") == pytest.approx(1.0)
    assert _score("the answer is 2 with confidence 80", "brier") == pytest.approx(1 - 0.04)
    assert _score("the answer is 1 with confidence 80", "brier") == pytest.approx(-0.64)
    assert _score("the answer is 1 with confidence 0", "brier") == pytest.approx(0.0)
    assert _score("the answer is 1 with confidence 100", "brier") == pytest.approx(-1.0)
    assert _score("garbage", "brier") == cgp.UNPARSEABLE_BRIER_SCORE == -1.0


@pytest.mark.parametrize("text,variant,accuracy_term,calibration_term", [
    # right at 0.8: ln 0.8 = -0.22314; brier -(0.8 - 1)^2 = -0.04
    ("the answer is 2 with confidence 80", "log", 1.0, -0.22314),
    ("the answer is 2 with confidence 80", "log_penalized", 1.0, -0.22314),
    ("the answer is 2 with confidence 80", "brier", 1.0, -0.04),
    # wrong at 0.8: ln 0.2 = -1.60944 (log_penalized's extra -1 belongs to the accuracy part)
    ("the answer is 1 with confidence 80", "log", 0.0, -1.60944),
    ("the answer is 1 with confidence 80", "log_penalized", 0.0, -1.60944),
    ("the answer is 1 with confidence 80", "brier", 0.0, -0.64),
    # unparseable: the whole sentinel is calibration (log_penalized: -27.631 = 1·0 + c - 1 -> c = -26.631)
    ("garbage", "log", 0.0, -27.631),
    ("garbage", "log_penalized", 0.0, -26.631),
    ("garbage", "brier", 0.0, -1.0),
])
def test_cgp_score_components(text, variant, accuracy_term, calibration_term):
    result = cgp.result_for(cgp.parse_final_answer(text, 4), 2, variant)
    assert result["accuracy_term"] == accuracy_term
    assert result["calibration_term"] == pytest.approx(calibration_term, abs=1e-4)


def test_neutral_failure_components_are_chance_accuracy_and_the_expected_calibration():
    # neutral (log_penalized, K=4) = 1/4·ln(1/4) + 3/4·(ln(3/4) - 1); at chance accuracy 1/4 the
    # calibration part is 1/4·ln(1/4) + 3/4·ln(3/4) = -0.346574 - 0.215762 = -0.562335
    terms = cgp.score_terms(cgp.neutral_score("log_penalized", 4), 0.25, "log_penalized")
    assert terms == pytest.approx({"accuracy_term": 0.25, "calibration_term": -0.562335}, abs=1e-5)


def test_neutral_failure_score_lies_strictly_inside_the_range():
    for variant, lo, hi in (("log", cgp.UNPARSEABLE_LOG_SCORE, 0.0),
                            ("log_penalized", cgp.UNPARSEABLE_LOG_SCORE, 0.0), ("brier", -1.0, 1.0)):
        value = cgp.neutral_score(variant, 4)
        assert lo < value < hi
    # calibrated know-nothing: 1/4·ln(1/4) + 3/4·ln(3/4)
    assert cgp.neutral_score("log", 4) == pytest.approx(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert cgp.failure_score("unparseable", "log", 4) == cgp.UNPARSEABLE_LOG_SCORE
    assert cgp.failure_score(-3.5, "log", 4) == -3.5


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200), gold=st.integers(1, 4), variant=st.sampled_from(cgp.VARIANTS))
def test_cgp_scoring_never_raises_and_stays_in_range(text, gold, variant):
    result = cgp.result_for(cgp.parse_final_answer(text, 4), gold, variant)
    lo = -1.0 if variant == "brier" else cgp.UNPARSEABLE_LOG_SCORE
    hi = 1.0 if variant == "brier" else 0.0
    assert lo <= result["score"] <= hi


@settings(max_examples=300, deadline=None)
@given(answer=st.integers(1, 4), conf=st.floats(0, 1000, allow_nan=False), gold=st.integers(1, 4),
       variant=st.sampled_from(cgp.VARIANTS))
def test_cgp_parseable_reply_beats_unparseable(answer, conf, gold, variant):
    text = f"Reasoning... the answer is {answer} with confidence {conf:.3f}"
    parsed = cgp.parse_final_answer(text, 4)
    assert parsed is not None and parsed.answer == answer and 0 <= parsed.confidence <= 1
    assert cgp.score_reply(parsed, gold, variant) >= cgp.score_reply(None, gold, variant)


def test_cgp_options_are_checked():
    def parse(options):
        return parse_options(cgp.CGPOptions, options)

    with pytest.raises(registry.RewardOptionsError, match="cgp: option 'url' is required"):
        parse({"model": "m"})
    with pytest.raises(registry.RewardOptionsError, match="cgp: option 'variant'='nope'"):
        parse({"url": "http://127.0.0.1:1/v1", "model": "m", "variant": "nope"})
    with pytest.raises(registry.RewardOptionsError, match="cgp: option 'on_failure'='ignore'"):
        parse({"url": "http://127.0.0.1:1/v1", "model": "m", "on_failure": "ignore"})
    with pytest.raises(registry.RewardOptionsError, match="cgp: unknown option 'temprature'"):
        parse({"url": "http://127.0.0.1:1/v1", "model": "m", "temprature": 0.5})
    with pytest.raises(registry.RewardOptionsError, match="cgp: option 'url'='127.0.0.1:1': must be an http"):
        parse({"url": "127.0.0.1:1", "model": "m"})
    opts = parse({"url": "http://127.0.0.1:1/v1", "model": "m"})
    assert opts.temperature == 0.1 and opts.max_tokens == 256 and opts.variant == "log_penalized"
    assert opts.on_failure == "neutral" and opts.seed is None
    # a number on_failure, also as a string from the env JSON
    assert parse({"url": "http://127.0.0.1:1/v1", "model": "m", "on_failure": "-0.5"}).on_failure == -0.5


def test_cgp_validate_row_hook():
    good = {"extra_info": EXTRA, "reward_model": {"ground_truth": "2"}}
    assert cgp.validate_row(good) == []
    assert "ground_truth" in cgp.validate_row({"extra_info": EXTRA, "reward_model": {"ground_truth": "5"}})[0]
    assert "extra_info.options" in cgp.validate_row({"extra_info": {"question": "q"}, "reward_model": {}})[0]


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------
def test_routing():
    assert registry.resolve("medmcqa_cgp").name == "cgp"
    assert registry.resolve("pmcvqa_cgp").name == "cgp"
    assert registry.resolve("medmcqa_rlcr").name == "rlcr"
    assert registry.resolve("hotpot_rlcr").name == "rlcr"
    keys = registry.result_keys()
    for key in ("parse_ok", "confidence", "downstream_ok", "cache_hit", "latency_s", "format_ok", "brier"):
        assert key in keys


# ---------------------------------------------------------------------------------------------
# RLCR
# ---------------------------------------------------------------------------------------------
def _rlcr(answer="2", conf="0.8", think="<think>islets</think>", tail=""):
    return f"{think} <answer>{answer}</answer> <analysis>could be liver</analysis> <confidence>{conf}</confidence>{tail}"


def test_rlcr_worked_examples():
    right = rlcr.score_response(_rlcr("2", "0.8"), "2", EXTRA)
    assert right == pytest.approx({"score": 0.5 + 0.5 + 0.5 * (1 - 0.04), "acc": 1.0, "format_ok": 1.0,
                                   "confidence": 0.8, "brier": 0.04, "rule_failed": math.nan,
                                   "format_term": 1.0, "accuracy_term": 1.0, "brier_term": 0.96}, nan_ok=True)
    wrong = rlcr.score_response(_rlcr("3", "0.8"), "2", EXTRA)
    assert wrong["score"] == pytest.approx(0.5 + 0 + 0.5 * (1 - 0.64))
    assert wrong["acc"] == 0.0 and wrong["brier"] == pytest.approx(0.64)
    assert rlcr.score_response(_rlcr("2", "1"), "2", EXTRA)["score"] == pytest.approx(1.5)
    assert rlcr.score_response(_rlcr("1", "1.0"), "2", EXTRA)["score"] == pytest.approx(0.5)


@pytest.mark.parametrize("text", [
    _rlcr(tail=" extra text"),  # something after </confidence>
    _rlcr(conf="80%"), _rlcr(conf="1.2"), _rlcr(conf="-0.1"), _rlcr(conf="nan"), _rlcr(conf="high"),
    _rlcr(answer=""),
    "<think>x</think> <answer>2</answer> <confidence>0.8</confidence>",  # no analysis
    "<answer>2</answer> <analysis>a</analysis> <confidence>0.8</confidence>",  # no </think>
    "<think>x</think> <analysis>a</analysis> <answer>2</answer> <confidence>0.8</confidence>",  # order
    "the answer is 2",
])
def test_rlcr_malformed_scores_zero(text):
    result = rlcr.score_response(text, "2", EXTRA)
    assert result["score"] == 0.0 and result["format_ok"] == 0.0 and result["acc"] == 0.0
    assert (result["format_term"], result["accuracy_term"], result["brier_term"]) == (0.0, 0.0, 0.0)
    assert math.isnan(result["confidence"])


def test_rlcr_last_confidence_and_opening_think_optional():
    # the opening <think> may come from the prompt; the last <confidence> is the one used
    text = "reasoning</think> <answer>2</answer> <analysis>a <confidence>0.1</confidence></analysis> <confidence>0.9</confidence>"
    assert rlcr.score_response(text, "2", EXTRA)["confidence"] == pytest.approx(0.9)
    assert rlcr.score_response(_rlcr() + "\n\n", "2", EXTRA)["format_ok"] == 1.0


@pytest.mark.parametrize("answer, correct", [
    ("2", True), ("(2)", True), ("Option 2", True), ("option (2)", True), ("2.", True), ("B", True),
    ("(b)", True), ("Pancreas", True), ("pancreas.", True), ("2) Pancreas", True), ("**2**", True),
    ("The answer is 2", True),
    ("1", False), ("Liver", False), ("2) Liver", False), ("5", False), ("2.5", False), ("A", False),
    ("Pancreas or liver", False),
])
def test_rlcr_multiple_choice_accuracy(answer, correct):
    assert rlcr.score_response(_rlcr(answer), "2", EXTRA)["acc"] == float(correct)


def test_rlcr_math_accuracy_uses_math_verify():
    math_info = {"answer_type": "math"}
    assert rlcr.score_response(_rlcr("\\frac{1}{2}"), "0.5", math_info)["acc"] == 1.0
    assert rlcr.score_response(_rlcr("\\boxed{4}"), "4", math_info)["acc"] == 1.0
    assert rlcr.score_response(_rlcr("2+2"), "4", math_info)["acc"] == 1.0
    assert rlcr.score_response(_rlcr("5"), "4", math_info)["acc"] == 0.0


def test_rlcr_free_text_exact_match():
    assert rlcr.score_response(_rlcr("The Eiffel Tower!"), "eiffel tower", {})["acc"] == 1.0
    assert rlcr.score_response(_rlcr("Big Ben"), "eiffel tower", {})["acc"] == 0.0


def test_rlcr_through_registry_and_options_rejected():
    result = registry.compute_score("medmcqa_rlcr", _rlcr("2", "0.8"), "2", EXTRA)
    assert result["score"] == pytest.approx(1.48) and result["format_ok"] == 1.0
    assert math.isnan(result["downstream_ok"])  # a cgp key, not applicable here
    with pytest.raises(registry.RewardOptionsError):
        registry.compute_score("medmcqa_rlcr", "x", "2", EXTRA, rlcr={"weight": 1})


_tag_text = st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), gt=st.sampled_from(["1", "2", "3", "4"]))
def test_rlcr_never_raises_and_in_range(text, gt):
    result = rlcr.score_response(text, gt, EXTRA)
    assert 0.0 <= result["score"] <= 1.5


@settings(max_examples=300, deadline=None)
@given(think=_tag_text, answer=_tag_text, analysis=_tag_text, conf=st.floats(0, 1),
       garbage=st.text(max_size=60), gt=st.sampled_from(["1", "2", "3", "4"]),
       math_mode=st.booleans())
def test_rlcr_malformed_always_below_well_formed(think, answer, analysis, conf, garbage, gt, math_mode):
    info = {"answer_type": "math"} if math_mode else EXTRA
    good = (f"<think>{think}</think> <answer>{answer.strip() or 'x'}</answer> <analysis>{analysis}</analysis> "
            f"<confidence>{conf!r}</confidence>")
    good_result = rlcr.score_response(good, gt, info)
    assert good_result["format_ok"] == 1.0
    assert 0.5 <= good_result["score"] <= 1.5
    # malformations: trailing text, missing section, non-numeric confidence
    bad_variants = [
        good + " x" + garbage,
        good.replace("<analysis>", "<analyses>"),
        good.replace(f"<confidence>{conf!r}", "<confidence>sure" + garbage.replace("<", "")),
    ]
    for bad in bad_variants:
        bad_result = rlcr.score_response(bad, gt, info)
        assert bad_result["score"] < good_result["score"]


def test_rlcr_format_check_agrees_with_the_one_regex_it_replaced():
    # The original single regex (four lazy groups) as the oracle: same answer on random tag soups.
    import random
    import re

    from verl.utils.reward_score.rlcr import well_formed

    oracle = re.compile(r"^\s*(?:<think>)?(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*"
                        r"<analysis>(?P<analysis>.*?)</analysis>\s*<confidence>(?P<confidence>.*?)</confidence>\s*$",
                        re.DOTALL)  # fmt: skip
    parts = ["<think>", "</think>", "<answer>", "</answer>", "<analysis>", "</analysis>", "<confidence>",
             "</confidence>", " ", "\n", "x", "0.5"]  # fmt: skip
    rng = random.Random(7)

    def soup(n: int) -> str:
        return "".join(rng.choice(parts) for _ in range(rng.randint(0, n)))

    texts = [soup(14) for _ in range(10_000)]  # mostly malformed
    sections = ("</think>", "<answer>", "</answer>", "<analysis>", "</analysis>", "<confidence>", "</confidence>")
    texts += [rng.choice(("", "<think>", " ")) + "".join(soup(2) + tag for tag in sections) + soup(2)
              for _ in range(10_000)]  # mostly well-formed, with tags inside sections and junk after
    texts += ["<think>a</think> <answer>2</answer>\n<analysis>b</analysis><confidence>0.5</confidence>\n"]
    assert sum(oracle.match(t) is not None for t in texts) > 10  # the sample holds well-formed replies
    assert [well_formed(t) for t in texts] == [oracle.match(t) is not None for t in texts]


def test_rlcr_math_answer_check_is_bounded_on_a_tower_of_powers():
    # math-verify in-process never returns on this answer; the bounded rule check counts it as wrong
    from verl.utils.reward_score import rlcr

    text = "<think>t</think><answer>9^{9^{9^{9}}}</answer><analysis>a</analysis><confidence>0.9</confidence>"
    out = rlcr.compute_score("medmcqa_rlcr", text, "3", {"answer_type": "math"})
    assert out["format_ok"] == 1.0 and out["acc"] == 0.0 and out["score"] == pytest.approx(0.5 + 0.5 * (1 - 0.81))
