"""Too few rows to mean anything: calibration with fewer than 10 parsed rows and a win rate with fewer
than 10 judged pairs are flagged in the JSON report, printed as "too few (n=...)" on the console and
named in the plot's title. Every input is written by hand."""

from __future__ import annotations

import json
import math

import pytest

from verlkit.evaluation import calibration, reliability_plot, winrate, winrate_stats
from verlkit.evaluation.sample_size import MIN_JUDGED_PAIRS, MIN_PARSED_ROWS, check_sample, shown, title_note


def figure_texts(fig) -> str:
    """Every title and free text of a figure, one string."""
    texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [t.get_text() for t in fig.texts]
    return "\n".join(texts + [ax.get_title() for ax in fig.axes])


def test_thresholds_are_ten():
    assert MIN_PARSED_ROWS == 10 and MIN_JUDGED_PAIRS == 10


def test_check_sample_flags_below_the_minimum_only():
    assert check_sample(9, 10, "parsed rows") == {
        "too_few": True, "too_few_reason": "only 9 parsed rows (fewer than 10): the metrics computed from them are "
                                           "not a result"}
    assert check_sample(10, 10, "parsed rows") == {"too_few": False, "too_few_reason": None}
    assert check_sample(0, 0, "judged pairs")["too_few"] is False  # a minimum of 0 turns the check off
    with pytest.raises(ValueError):
        check_sample(-1, 10, "rows")


def test_shown_prints_too_few_in_place_of_the_number():
    assert shown(0.0, too_few_n=3) == "too few (n=3)"
    assert shown(0.25) == "0.250" and shown(None) == "n/a" and shown(math.nan) == "n/a"
    assert title_note(3, 10, "parsed rows") == "TOO FEW PARSED ROWS (n=3 < 10): not a result"


# ---- calibration -----------------------------------------------------------------------------------


def rows(condition: str, parsed: int, unparsed: int, failed: int = 0) -> list[dict]:
    """Records as the calibration CLI builds them: ``parsed`` replies at confidence 0.8, half correct."""
    out = [{"condition": condition, "request_ok": True, "parsed": True, "confidence": 0.8, "correct": i % 2 == 0,
            "rewards": {"brier": 0.5}} for i in range(parsed)]
    out += [{"condition": condition, "request_ok": True, "parsed": False, "confidence": None, "correct": False,
             "rewards": {"brier": 0.0}} for _ in range(unparsed)]
    return out + [{"condition": condition, "request_ok": False} for _ in range(failed)]


def test_calibration_with_nine_parsed_rows_is_too_few_and_ten_is_not():
    few = calibration.summarize(rows("policy", parsed=9, unparsed=7, failed=2))
    assert few["too_few"] is True and few["n_parsed"] == 9 and few["min_parsed_rows"] == 10
    assert few["too_few_reason"].startswith("only 9 parsed rows (fewer than 10)")
    assert few["n"] == 16 and few["request_failures"] == 2  # the failures are still counted
    enough = calibration.summarize(rows("policy", parsed=10, unparsed=0))
    assert enough["too_few"] is False and enough["too_few_reason"] is None
    assert calibration.summarize(rows("policy", parsed=3, unparsed=0), min_parsed_rows=3)["too_few"] is False


def test_all_unparsed_rows_do_not_print_a_perfect_looking_ece():
    """The CPU default's symptom: 16 unparsed replies, ECE 0.000 from nothing."""
    report = calibration.summarize(rows("with_hint", parsed=0, unparsed=16))
    assert report["all"]["ece"] == 0.0  # what used to be printed
    line = calibration.console_line("with_hint", report)
    assert "ece=too few (n=0)" in line and "acc=too few (n=0)" in line and "brier=too few (n=0)" in line
    assert "0.000" not in line and "parse_fail=1.00" in line


def test_calibration_report_and_plot_title_say_too_few(tmp_path):
    records = rows("with_hint", parsed=3, unparsed=13) + rows("baseline", parsed=12, unparsed=4)
    metrics = calibration.write_outputs(tmp_path, "cgp", tmp_path / "dev.parquet", records,
                                        {"policy": "policy_x", "downstream": "small-model"})  # fmt: skip
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["conditions"]["with_hint"]["too_few"] is True
    assert "only 3 parsed rows" in written["conditions"]["with_hint"]["too_few_reason"]
    assert written["conditions"]["baseline"]["too_few"] is False
    assert metrics["conditions"]["baseline"]["n_parsed"] == 12
    hint = metrics["conditions"]["with_hint"]
    fig = reliability_plot.reliability_figure(hint["all"], calibration.condition_title("with_hint", "cgp", metrics["models"]),
                                            warning=title_note(3, 10, "parsed rows"))  # fmt: skip
    text = figure_texts(fig)
    assert "TOO FEW PARSED ROWS (n=3 < 10)" in text and "ECE=" not in text
    assert (tmp_path / "reliability.png").is_file() and (tmp_path / "reliability_baseline.png").is_file()


# ---- win rate ---------------------------------------------------------------------------------------


def pairs(n: int, failed: int = 0) -> list[dict]:
    out = [{"prompt_id": f"p{i}", "model_reward": 1.0 if i % 3 else -1.0, "reference_reward": 0.0,
            "model_tokens": 10, "reference_tokens": 10, "model_text": "a b", "reference_text": "a"} for i in range(n)]
    return out + [{"prompt_id": f"f{i}", "model_reward": None, "reference_reward": 0.0} for i in range(failed)]


def test_win_rate_with_nine_judged_pairs_is_too_few_and_ten_is_not():
    few = winrate_stats.summarize(pairs(9, failed=5))
    assert few["n_compared"] == 9 and few["too_few"] is True and few["min_judged_pairs"] == 10
    assert few["too_few_reason"].startswith("only 9 judged pairs (fewer than 10)")
    assert few["win_rate"] == pytest.approx(6 / 9)  # still computed, flagged
    assert winrate_stats.summarize(pairs(10))["too_few"] is False
    assert winrate_stats.summarize(pairs(4), min_judged_pairs=4)["too_few"] is False


def test_win_rate_console_line_and_plot_title_say_too_few():
    summary = winrate_stats.summarize(pairs(4, failed=1))
    summary["settings"] = {"label": "rloo", "model": "policy_rloo", "reference": "reference",
                           "prompts": "/run/data/eval/prompts.parquet"}  # fmt: skip
    summary["generation_failures"] = {"model": 1, "reference": 0}
    summary["judge"] = {"name": "judge_model", "relation": "independent", "relation_words": "independent"}
    line = winrate.console_line(summary)
    assert "win too few (n=4) tie too few (n=4) loss too few (n=4)" in line
    assert "0.750" not in line  # 3 wins of 4 are not printed as a 75% win rate
    text = figure_texts(winrate_stats.winrate_figure(summary, winrate_stats.reward_differences(pairs(4))))
    assert "TOO FEW JUDGED PAIRS (n=4 < 10)" in text
    assert "N = 4 of 5 prompts compared" in text and "generation failed for 1 model" in text
    assert "rloo (policy_rloo) vs reference on prompts.parquet" in text
    assert "judge: judge_model (independent of the training reward)" in text


def test_enough_pairs_print_their_numbers():
    summary = winrate_stats.summarize(pairs(12))
    summary["settings"] = {"label": "rloo", "model": "p", "reference": "r", "prompts": "x.parquet"}
    line = winrate.console_line(summary)
    assert "too few" not in line and "win 0.667" in line
    assert "TOO FEW" not in figure_texts(winrate_stats.winrate_figure(summary, []))
