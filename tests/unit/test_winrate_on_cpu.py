"""Win-rate statistics: tie band boundaries, the bootstrap CI, failed scoring, length ratios, the plot."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from verlkit.evaluation.winrate_stats import bootstrap_ci, plot, reward_differences, summarize, win_tie_loss


def record(prompt_id, model_reward, reference_reward, model_tokens=10, reference_tokens=10,
           model_text="a b", reference_text="a b"):
    return {"prompt_id": prompt_id, "model_reward": model_reward, "reference_reward": reference_reward,
            "model_tokens": model_tokens, "reference_tokens": reference_tokens,
            "model_text": model_text, "reference_text": reference_text}


# ---------------------------------------------------------------------------------------------
# win / tie / loss
# ---------------------------------------------------------------------------------------------
def test_differences_exactly_on_the_tie_band_are_ties() -> None:
    model = [1.5, 0.5, 1.0, 1.50001, 0.49999, 3.0]
    reference = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    result = win_tie_loss(model, reference, tie_band=0.5)
    # +0.5 and -0.5 (on the band) and 0 are ties; just outside the band wins/loses.
    assert result == {"n": 6, "wins": 2, "ties": 3, "losses": 1,
                      "win_rate": 2 / 6, "tie_rate": 3 / 6, "loss_rate": 1 / 6}


def test_boundary_survives_float_rounding() -> None:
    # 1.1 - 1.0 == 0.10000000000000009 in floating point: still "exactly" on a 0.1 band.
    assert 1.1 - 1.0 > 0.1
    result = win_tie_loss([1.1, 0.9, 1.2], [1.0, 1.0, 1.0], tie_band=0.1)
    assert (result["wins"], result["ties"], result["losses"]) == (1, 2, 0)


def test_zero_tie_band_only_equal_scores_tie() -> None:
    result = win_tie_loss([2.0, 2.0, 1.0], [2.0, 1.0, 2.0], tie_band=0.0)
    assert (result["wins"], result["ties"], result["losses"]) == (1, 1, 1)


def test_win_tie_loss_validates_input() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        win_tie_loss([1.0, 2.0], [1.0], 0.1)
    with pytest.raises(ValueError, match=r"model_scores\[1\]: not a finite number"):
        win_tie_loss([1.0, math.nan], [1.0, 1.0], 0.1)
    with pytest.raises(ValueError, match=r"reference_scores\[0\]"):
        win_tie_loss([1.0], [math.inf], 0.1)
    with pytest.raises(ValueError, match="tie_band"):
        win_tie_loss([1.0], [1.0], -0.1)
    with pytest.raises(TypeError, match=r"model_scores\[0\]: expected a number"):
        win_tie_loss([None], [1.0], 0.1)
    empty = win_tie_loss([], [], 0.1)
    assert empty["n"] == 0 and math.isnan(empty["win_rate"])


# ---------------------------------------------------------------------------------------------
# bootstrap CI
# ---------------------------------------------------------------------------------------------
def test_bootstrap_ci_contains_the_mean_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(7)
    small = rng.normal(1.0, 2.0, size=25).tolist()
    large = rng.normal(1.0, 2.0, size=1600).tolist()
    low_small, high_small = bootstrap_ci(small)
    low_large, high_large = bootstrap_ci(large)
    assert low_small < np.mean(small) < high_small
    assert low_large < np.mean(large) < high_large
    # The width of a mean's CI goes like 1/sqrt(n): 64x the data, about 1/8 the width.
    assert (high_large - low_large) < 0.25 * (high_small - low_small)


def test_bootstrap_ci_is_reproducible_by_seed() -> None:
    values = [0.3, -1.2, 2.5, 0.0, 1.1, -0.4, 0.9]
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)
    # A higher confidence gives a wider interval.
    low90, high90 = bootstrap_ci(values, confidence=0.9, seed=3)
    low99, high99 = bootstrap_ci(values, confidence=0.99, seed=3)
    assert low99 <= low90 and high90 <= high99


def test_bootstrap_ci_matches_exact_enumeration_on_a_tiny_example() -> None:
    # With 3 values there are 27 equally likely resamples: the bootstrap distribution of the mean is
    # known exactly, so its quantiles are too (the smallest mean whose CDF reaches the level).
    values = [0.0, 1.0, 3.0]
    confidence = 0.8
    means = sorted(float(np.mean(draw)) for draw in itertools.product(values, repeat=3))
    support = sorted(set(means))
    cdf = [sum(m <= x + 1e-12 for m in means) / len(means) for x in support]
    levels = ((1 - confidence) / 2, (1 + confidence) / 2)
    # The levels are far from every jump of the CDF, so sampling noise cannot move the answer.
    assert min(abs(c - level) for c in cdf for level in levels) > 0.04
    exact = [next(x for x, c in zip(support, cdf) if c >= level) for level in levels]
    assert exact == pytest.approx([1 / 3, 7 / 3])
    assert bootstrap_ci(values, confidence=confidence, n_resamples=20000, seed=1) == pytest.approx(exact)


def test_bootstrap_ci_edge_cases() -> None:
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    assert bootstrap_ci([4.0, 4.0, 4.0]) == (4.0, 4.0)
    with pytest.raises(ValueError, match="no values"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0, 2.0], confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ci([1.0, 2.0], n_resamples=0)
    with pytest.raises(ValueError, match=r"values\[1\]: not a finite number"):
        bootstrap_ci([1.0, math.nan])


def test_bootstrap_in_blocks_equals_one_draw(monkeypatch) -> None:
    # Drawing in blocks (bounded memory) must consume the generator exactly like one big draw.
    from verlkit.evaluation import winrate_stats as winrate

    values = [0.1 * i for i in range(51)]  # odd: 7 rows of 51 is an odd number of draws per block
    one_draw = bootstrap_ci(values, n_resamples=300, seed=5)
    monkeypatch.setattr(winrate, "_BOOTSTRAP_BLOCK", 51 * 7)
    assert bootstrap_ci(values, n_resamples=300, seed=5) == one_draw


# ---------------------------------------------------------------------------------------------
# summarize
# ---------------------------------------------------------------------------------------------
def test_failed_scoring_is_excluded_and_counted_never_zero() -> None:
    records = [
        record("a", 1.0, 0.5),
        record("b", 0.2, 0.6),
        record("c", None, 0.5),       # the model's reply could not be scored
        record("d", 0.3, None),       # the reference's could not
        record("e", math.nan, 0.1),   # a NaN from the scorer is a failure too
        record("f", 0.8, 0.8),
    ]
    summary = summarize(records, tie_band=0.1)
    assert (summary["n_prompts"], summary["n_compared"], summary["scoring_failures"]) == (6, 3, 3)
    assert (summary["model_scoring_failures"], summary["reference_scoring_failures"]) == (2, 1)
    assert (summary["wins"], summary["ties"], summary["losses"]) == (1, 1, 1)
    assert summary["win_rate"] == pytest.approx(1 / 3)
    # Scoring "d"'s failed reference as 0.0 (the original's rule) would have made it a win.
    assert summary["mean_reference_reward"] == pytest.approx((0.5 + 0.6 + 0.8) / 3)
    assert summary["mean_model_reward"] == pytest.approx((1.0 + 0.2 + 0.8) / 3)
    assert summary["mean_reward_difference"] == pytest.approx((0.5 - 0.4 + 0.0) / 3)
    low, high = summary["ci"]
    assert low <= summary["mean_reward_difference"] <= high
    assert summary["confidence"] == 0.95 and summary["tie_band"] == 0.1
    assert reward_differences(records) == pytest.approx([0.5, -0.4, 0.0])


def test_summary_equals_summary_of_the_scored_records_only() -> None:
    rng = np.random.default_rng(0)
    records = [record(str(i), float(rng.normal()), float(rng.normal())) for i in range(40)]
    failed = [record(f"x{i}", None, 1.0) for i in range(5)]
    with_failures = summarize(records + failed, seed=2)
    clean = summarize(records, seed=2)
    for key in ("wins", "ties", "losses", "win_rate", "mean_reward_difference", "ci", "length_ratio_tokens"):
        assert with_failures[key] == clean[key]
    assert with_failures["scoring_failures"] == 5 and clean["scoring_failures"] == 0


def test_length_ratios_in_tokens_and_words() -> None:
    records = [
        record("a", 1.0, 0.0, model_tokens=30, reference_tokens=10, model_text="one two three four", reference_text="one two"),
        record("b", 1.0, 0.0, model_tokens=10, reference_tokens=10, model_text="one  two\nthree", reference_text="one"),
        # No token counts: left out of the token ratio, still in the word ratio.
        record("c", 1.0, 0.0, model_tokens=None, reference_tokens=7, model_text="x", reference_text="y z"),
        # Failed scoring: left out of both, whatever its lengths.
        record("d", None, 0.0, model_tokens=1000, reference_tokens=1, model_text="w " * 500, reference_text="w"),
    ]
    summary = summarize(records)
    assert summary["n_with_tokens"] == 2
    assert summary["mean_model_tokens"] == 20.0 and summary["mean_reference_tokens"] == 10.0
    assert summary["length_ratio_tokens"] == pytest.approx(2.0)
    assert summary["mean_model_words"] == pytest.approx((4 + 3 + 1) / 3)
    assert summary["mean_reference_words"] == pytest.approx((2 + 1 + 2) / 3)
    assert summary["length_ratio_words"] == pytest.approx(8 / 5)


def test_nothing_compared_gives_nan_not_zero() -> None:
    summary = summarize([record("a", None, 1.0), record("b", 1.0, None)])
    assert (summary["n_compared"], summary["scoring_failures"]) == (0, 2)
    for key in ("win_rate", "mean_model_reward", "mean_reward_difference", "length_ratio_tokens"):
        assert math.isnan(summary[key]), key
    assert all(math.isnan(x) for x in summary["ci"])


def test_summarize_rejects_bad_records() -> None:
    with pytest.raises(ValueError, match=r"records\[1\].prompt_id: 'a' already used by records\[0\]"):
        summarize([record("a", 1.0, 0.0), record("a", 0.5, 0.0)])
    with pytest.raises(TypeError, match=r"records\[0\].model_reward: expected a number or None"):
        summarize([record("a", "1.0", 0.0)])
    with pytest.raises(ValueError, match=r"records\[0\].reference_tokens"):
        summarize([record("a", 1.0, 0.0, reference_tokens=-3)])
    with pytest.raises(ValueError, match="tie_band"):
        summarize([record("a", 1.0, 0.0)], tie_band=-1)


# ---------------------------------------------------------------------------------------------
# plot
# ---------------------------------------------------------------------------------------------
def test_plot_writes_a_png(tmp_path) -> None:
    rng = np.random.default_rng(1)
    records = [record(str(i), float(rng.normal(0.3)), float(rng.normal())) for i in range(30)]
    records.append(record("failed", None, 0.0))
    summary = summarize(records, n_resamples=200)
    path = plot(summary, reward_differences(records), tmp_path / "figures" / "winrate.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Nothing compared still draws (an empty histogram), so a failed evaluation leaves a figure.
    empty = summarize([record("a", None, 0.0)])
    assert plot(empty, [], tmp_path / "empty.png").stat().st_size > 0
    # A NaN difference (a reward summarize counted as failed) is left out, not a crash.
    assert plot(summary, reward_differences(records) + [math.nan], tmp_path / "nan.png").stat().st_size > 0
