"""The ``grade`` reward (RRM training): Total Score parsing on real-world formats, reward shape, routing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verl.utils.reward_score import registry
from verl.utils.reward_score.grade import compute_score, parse_total_score

PARSED = [
    ("Total Score: 7/10", 7.0),
    ("Total Score: 7", 7.0),
    ("**Total Score:** 7.5 points", 7.5),
    ("**Total Score: 8/10**", 8.0),
    ("Total Score: [8]", 8.0),
    ("Total Score: [[8]]", 8.0),
    ("Total Score = 8", 8.0),
    ("Total Score: 7 out of 10", 7.0),
    ("Total Score: 3 points out of 10", 3.0),
    ("Total Score: 8/10.", 8.0),
    ("Total Score: 8.", 8.0),
    ("Total Score: 7 / 10 points", 7.0),
    ("Total Score: **6** / 10", 6.0),
    ("| **Total Score** | **8/10** |", 8.0),
    ("| Criterion | Points |\n|---|---|\n| A | 3 |\n| Total Score | 9 |", 9.0),
    ("Total score is 6", 6.0),
    ("TOTAL SCORE: 10/10", 10.0),
    ("### Total Score: 5/10\n\nThe student made an arithmetic slip.", 5.0),
    ("Total Score: 8\nThe solution is good overall.", 8.0),
    ("Total Score:\n\n7/10", 7.0),
    ("Total Score: $\\boxed{9}$", 9.0),
    ("Total Score: \\boxed{9/10}", 9.0),
    ("Total Score: \\frac{7}{10}", 7.0),
    ("Total Score for the solution: 5", 5.0),
    ("Total Score: 7.5/10", 7.5),
    ("Total Score: 0", 0.0),
    ("Total score: 7,5", 7.5),
    # denominators other than 10 are rescaled to 10 points
    ("Total Score: 4/5", 8.0),
    ("Total Score (out of 5): 4", 8.0),
    ("Total Score: 15/20", 7.5),
    # clamped to [0, 10]
    ("Total Score: -3/10", 0.0),
    ("Total Score: 12", 10.0),
    ("Total Score: 11/10", 10.0),
    # the last Total Score wins; a trailing mention without a number does not lose the score
    ("Draft Total Score: 3/10\n...on reflection...\nTotal Score: 6/10", 6.0),
    ("Criterion 1: 2 points\nTotal Score: 9/10\nSee the Total Score breakdown above.", 9.0),
    # no marker: a bare score, or a final "n out of d" line
    ("8", 8.0),
    ("8/10", 8.0),
    ("**7**", 7.0),
    ("The reasoning is sound.\nFinal grade: 7 out of 10", 7.0),
]

UNPARSED = [
    "",
    "no score here",
    "Total Score: N/A",
    "Total Score: 1e9",
    "Total Score: x/10",
    "Total Score: 5/0",
    "The answer is 42 and step 3 is wrong.",
    "Total Score:",
]


@pytest.mark.parametrize("text,expected", PARSED)
def test_parses_real_world_formats(text, expected):
    assert parse_total_score(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", UNPARSED)
def test_unparseable_is_none(text):
    assert parse_total_score(text) is None


def test_reward_shape_and_fields():
    out = compute_score("grade", "Total Score: 7/10", "0.7")
    assert out == {"score": pytest.approx(1.0), "acc": 1.0, "parse_ok": 1.0, "grade_pred": pytest.approx(0.7)}
    off = compute_score("grade", "Total Score: 2/10", 0.7)
    assert off["score"] == pytest.approx(0.25) and off["acc"] == 0.0
    # the original's bug: a negative score earned a positive reward again (1 - 1.2)^2; clamped now
    assert compute_score("grade", "Total Score: -2/10", 1.0)["score"] == pytest.approx(0.0)
    # monotone in the error
    scores = [compute_score("grade", f"Total Score: {s}/10", 1.0)["score"] for s in range(11)]
    assert scores == sorted(scores)


def test_unparseable_scores_zero_and_is_flagged():
    out = compute_score("grade", "I would give it a good mark.", 0.5)
    assert out["score"] == 0.0 and out["parse_ok"] == 0.0 and math.isnan(out["grade_pred"])


@pytest.mark.parametrize("gt", ["7", "abc", -0.1, 1.5, float("nan"), None])
def test_bad_ground_truth_is_a_data_error(gt):
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("grade", "Total Score: 7/10", gt)


def test_registry_routes_grade_and_flags_bad_rows():
    out = registry.compute_score("grade", "**Total Score:** 9/10", "0.9")
    assert out["score"] == pytest.approx(1.0) and out["parse_ok"] == 1.0 and out["reward_error"] == 0.0
    assert set(out) == set(registry.result_keys())
    bad = registry.compute_score("grade", "Total Score: 9/10", "9")  # gt on the wrong scale
    assert bad["reward_error"] == 1.0 and bad["score"] == 0.0


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), gt=st.floats(min_value=0.0, max_value=1.0))
def test_never_raises_and_stays_in_range(text, gt):
    out = compute_score("grade", text, gt)
    assert 0.0 <= out["score"] <= 1.0 and out["parse_ok"] in (0.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(prefix=st.text(max_size=80), num=st.floats(min_value=-50, max_value=50, allow_nan=False),
       den=st.sampled_from(["", "/10", "/5", " out of 10", " points"]), suffix=st.text(max_size=40))
def test_marker_with_any_number_stays_in_range(prefix, num, den, suffix):
    value = parse_total_score(f"{prefix}\nTotal Score: {num:.2f}{den}\n{suffix}")
    assert value is None or 0.0 <= value <= 10.0
