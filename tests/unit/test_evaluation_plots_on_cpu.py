"""The evaluation plots a person must be able to read: no legend over the data, and titles that name
the model, the data, N and what failed (reliability diagram, win-rate plot, C3PO adherence plot)."""

from __future__ import annotations

from verlkit.c3po.evaluate import adherence_figure
from verlkit import calibration_stats
from verlkit.evaluation import calibration, reliability_plot, winrate_stats


def figure_texts(fig) -> str:
    texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [t.get_text() for t in fig.texts]
    return "\n".join(texts + [ax.get_title() for ax in fig.axes])


def assert_no_legend_over_the_axes(fig) -> None:
    """Every legend of the figure lies outside every axes' drawing area (pixels, after drawing)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has no legend at all"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), f"legend {box} over axes {ax.get_window_extent()}"


def test_reliability_diagram_legend_is_off_the_bars_and_the_title_says_who_what_and_failures():
    # a first bin at accuracy 1.0: where the legend used to sit (upper left)
    conf = [0.05] * 5 + [0.15] * 5 + [0.9] * 10
    correct = [True] * 18 + [False] * 2
    report = calibration_stats.calibration_report(conf, correct)
    records = [{"condition": "policy", "request_ok": True, "parsed": True, "confidence": c, "correct": k,
                "rewards": {}} for c, k in zip(conf, correct)] + [{"condition": "policy", "request_ok": False}]
    summary = calibration.summarize(records)
    fig = reliability_plot.reliability_figure(
        report["all"], calibration.condition_title("policy", "rlcr", {"policy": "policy_rlcr"}),
        details=["data: dev.parquet, N=21 rows", calibration.failure_line(summary)])
    assert_no_legend_over_the_axes(fig)
    text = figure_texts(fig)
    assert "policy_rlcr" in text and "dev.parquet" in text and "N=21" in text
    assert "failed: 1 requests, 0 of 20 replies unparsed" in text and "ECE=" in text


def test_win_rate_plot_legend_is_off_the_histogram():
    records = [{"prompt_id": str(i), "model_reward": float(i % 5), "reference_reward": 1.0} for i in range(24)]
    summary = winrate_stats.summarize(records)
    summary["settings"] = {"label": "dpo", "model": "policy_dpo", "reference": "reference", "prompts": "p.parquet"}
    fig = winrate_stats.winrate_figure(summary, winrate_stats.reward_differences(records))
    assert_no_legend_over_the_axes(fig)
    assert "dpo (policy_dpo) vs reference on p.parquet" in figure_texts(fig)


def test_c3po_adherence_plot_legend_is_off_the_bars_and_the_title_names_models_and_failures():
    def summary(n, judged, applied, tie, worse):
        return {"summary": {"n_prompts": n, "n_judged": judged, "failures": n - judged, "applied_rate": applied,
                            "tie_rate": tie, "worse_rate": worse}}  # fmt: skip

    result = {"feedback": "be-concise", "method": "trained", "judge_requests": {"requests": 40, "reasks": 1,
              "request_failures": 2, "parse_failures": 1},
              "models": {"evaluated": "be-concise-lora", "baseline": "student", "judge": "teacher"},
              "sets": {"in_scope": summary(8, 8, 0.5, 0.25, 0.25), "near_scope": summary(8, 8, 0.0, 1.0, 0.0),
                       "out_of_scope": summary(8, 6, 0.0, 1.0, 0.0)}}  # fmt: skip
    fig = adherence_figure(result)
    assert_no_legend_over_the_axes(fig)
    text = figure_texts(fig)
    assert "be-concise: be-concise-lora (trained) vs student" in text
    assert "out-of-scope 6/8" in text and "judge teacher" in text
    assert "2 prompts unjudged" in text and "2 request failures, 1 unparsed of 40 requests" in text
