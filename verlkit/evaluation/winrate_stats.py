"""Statistics of a paired win-rate evaluation: a model and a reference answer the same prompts and a
reward model scores both answers.

Pure functions (numpy only); :func:`plot` is the one function that writes a file.

Fixes against the original evaluation (reference-methods §5.4, §5.7):

* a prompt whose scoring failed (reward ``None``) is excluded and counted as a scoring failure,
  never scored as 0.0, which would hand the other side a win;
* ties are explicit: a difference within ``±tie_band`` (boundary included) is a tie, not a loss;
* the mean reward difference comes with a seeded percentile-bootstrap confidence interval;
* answer length is compared in tokens and in whitespace words, so a win can be read against
  "the model simply writes more";
* fewer than ``MIN_JUDGED_PAIRS`` (10) compared prompts flag the summary ``too_few``: a rate over
  four pairs moves 25 points per pair and is not reported as a result.
"""

from __future__ import annotations

import math
from numbers import Real
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from verlkit.evaluation.sample_size import MIN_JUDGED_PAIRS, check_sample, title_note

# Rewards are floats from a model; a difference that lands on the tie band up to rounding (1.1 − 1.0
# is 0.10000000000000009) counts as on the band. The tolerance scales with the rewards' magnitude.
_BAND_RELATIVE_TOLERANCE = 1e-12
# Bootstrap resamples are drawn in blocks of at most this many indices, so memory stays bounded
# for large evaluations while each block is still one vectorised draw.
_BOOTSTRAP_BLOCK = 4_000_000


def _finite_array(values: Sequence[float], name: str) -> np.ndarray:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of numbers, got a string")
    items = list(values)
    for position, value in enumerate(items):
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"{name}[{position}]: expected a number, got {type(value).__name__}")
        if not math.isfinite(value):
            raise ValueError(f"{name}[{position}]: not a finite number: {value!r}")
    return np.asarray(items, dtype=np.float64)


def win_tie_loss(model_scores: Sequence[float], reference_scores: Sequence[float], tie_band: float) -> dict[str, Any]:
    """Paired outcome counts and rates: win if model − reference > tie_band, loss if < −tie_band,
    else tie (a difference exactly at ±tie_band is a tie). Rates are NaN when there are no pairs."""
    if isinstance(tie_band, bool) or not isinstance(tie_band, Real) or not math.isfinite(tie_band) or tie_band < 0:
        raise ValueError(f"tie_band must be a finite number >= 0, got {tie_band!r}")
    model = _finite_array(model_scores, "model_scores")
    reference = _finite_array(reference_scores, "reference_scores")
    if model.shape != reference.shape:
        raise ValueError(f"model_scores and reference_scores must have equal lengths, got {len(model)} and {len(reference)}")
    difference = model - reference
    band = tie_band + _BAND_RELATIVE_TOLERANCE * np.maximum(1.0, np.maximum(np.abs(model), np.abs(reference)))
    n = int(difference.size)
    wins = int(np.count_nonzero(difference > band))
    losses = int(np.count_nonzero(difference < -band))
    ties = n - wins - losses
    rate = (lambda count: count / n) if n else (lambda count: math.nan)
    return {"n": n, "wins": wins, "ties": ties, "losses": losses,
            "win_rate": rate(wins), "tie_rate": rate(ties), "loss_rate": rate(losses)}


def _check_bootstrap_arguments(confidence: float, n_resamples: int) -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values``.

    Draws ``n_resamples`` resamples of len(values) with replacement from ``numpy.random.default_rng(seed)``
    and returns the (1 − confidence)/2 and (1 + confidence)/2 quantiles of their means. One value
    gives (v, v); no values is an error (there is no mean to bound)."""
    data = _finite_array(values, "values")
    if data.size == 0:
        raise ValueError("bootstrap_ci: no values")
    _check_bootstrap_arguments(confidence, n_resamples)
    if data.size == 1:
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    n = data.size
    rows_per_block = max(1, _BOOTSTRAP_BLOCK // n)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, rows_per_block):
        stop = min(n_resamples, start + rows_per_block)
        means[start:stop] = data[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------
# Summary of an evaluation run
# ---------------------------------------------------------------------------------------------
def _reward(record: dict[str, Any], name: str, position: int) -> float | None:
    """The reward, or None when scoring failed (None, or a non-finite number from the scorer)."""
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"records[{position}].{name}: expected a number or None, got {type(value).__name__}")
    return float(value) if math.isfinite(value) else None


def _tokens(record: dict[str, Any], name: str, position: int) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"records[{position}].{name}: expected a token count (int >= 0) or None, got {value!r}")
    return int(value)


def _text(record: dict[str, Any], name: str, position: int) -> str | None:
    value = record.get(name)
    if value is not None and not isinstance(value, str):
        raise TypeError(f"records[{position}].{name}: expected str or None, got {type(value).__name__}")
    return value


def _compared(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """Records with both rewards (as parsed dicts), and how many lacked the model's / the reference's."""
    compared, model_failed, reference_failed = [], 0, 0
    seen: dict[str, int] = {}
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise TypeError(f"records[{position}]: expected a dict, got {type(record).__name__}")
        prompt_id = record.get("prompt_id")
        if prompt_id is None:
            raise ValueError(f"records[{position}].prompt_id: missing")
        # One record per prompt: a repeated id would weigh that prompt twice in every rate.
        first = seen.setdefault(str(prompt_id), position)
        if first != position:
            raise ValueError(f"records[{position}].prompt_id: {prompt_id!r} already used by records[{first}]")
        model = _reward(record, "model_reward", position)
        reference = _reward(record, "reference_reward", position)
        parsed = {
            "model_reward": model, "reference_reward": reference,
            "model_tokens": _tokens(record, "model_tokens", position),
            "reference_tokens": _tokens(record, "reference_tokens", position),
            "model_text": _text(record, "model_text", position),
            "reference_text": _text(record, "reference_text", position),
        }
        model_failed += model is None
        reference_failed += reference is None
        if model is not None and reference is not None:
            compared.append(parsed)
    return compared, model_failed, reference_failed


def reward_differences(records: Sequence[dict[str, Any]]) -> list[float]:
    """model − reference reward of every record where both were scored (what :func:`plot` draws)."""
    compared, _, _ = _compared(records)
    return [r["model_reward"] - r["reference_reward"] for r in compared]


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _ratio(numerator: float, denominator: float) -> float:
    if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
        return math.nan
    return numerator / denominator


def summarize(records: list[dict[str, Any]], tie_band: float = 0.1, confidence: float = 0.95,
              n_resamples: int = 2000, seed: int = 0, min_judged_pairs: int = MIN_JUDGED_PAIRS) -> dict[str, Any]:
    """Summary of a paired evaluation; see the module docstring.

    ``records``: one dict per prompt with ``prompt_id``, ``model_reward``/``reference_reward``
    (float, or None when scoring failed), ``model_tokens``/``reference_tokens`` (int or None) and
    ``model_text``/``reference_text``. Only records with both rewards are compared. Length ratios
    use the compared records that have both token counts (resp. both texts). Means, rates and
    ratios that have nothing to average are NaN. Fewer than ``min_judged_pairs`` compared records:
    ``too_few`` is True and ``too_few_reason`` says why (the numbers are still there, flagged)."""
    compared, model_failed, reference_failed = _compared(records)
    model = [r["model_reward"] for r in compared]
    reference = [r["reference_reward"] for r in compared]
    differences = [m - ref for m, ref in zip(model, reference)]
    outcome = win_tie_loss(model, reference, tie_band)
    _check_bootstrap_arguments(confidence, n_resamples)  # also when nothing was compared
    ci = list(bootstrap_ci(differences, confidence, n_resamples, seed)) if differences else [math.nan, math.nan]

    with_tokens = [r for r in compared if r["model_tokens"] is not None and r["reference_tokens"] is not None]
    mean_model_tokens = _mean([r["model_tokens"] for r in with_tokens])
    mean_reference_tokens = _mean([r["reference_tokens"] for r in with_tokens])
    with_text = [r for r in compared if r["model_text"] is not None and r["reference_text"] is not None]
    mean_model_words = _mean([len(r["model_text"].split()) for r in with_text])
    mean_reference_words = _mean([len(r["reference_text"].split()) for r in with_text])
    return {
        "n_prompts": len(records),
        "n_compared": len(compared),
        "scoring_failures": len(records) - len(compared),
        "model_scoring_failures": model_failed,
        "reference_scoring_failures": reference_failed,
        "wins": outcome["wins"],
        "ties": outcome["ties"],
        "losses": outcome["losses"],
        "win_rate": outcome["win_rate"],
        "tie_rate": outcome["tie_rate"],
        "loss_rate": outcome["loss_rate"],
        "mean_model_reward": _mean(model),
        "mean_reference_reward": _mean(reference),
        "mean_reward_difference": _mean(differences),
        "ci": ci,
        "confidence": confidence,
        "length_ratio_tokens": _ratio(mean_model_tokens, mean_reference_tokens),
        "length_ratio_words": _ratio(mean_model_words, mean_reference_words),
        "mean_model_tokens": mean_model_tokens,
        "mean_reference_tokens": mean_reference_tokens,
        "mean_model_words": mean_model_words,
        "mean_reference_words": mean_reference_words,
        "n_with_tokens": len(with_tokens),
        "tie_band": tie_band,
        "min_judged_pairs": min_judged_pairs,
        **check_sample(len(compared), min_judged_pairs, "judged pairs"),
    }


# ---------------------------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------------------------
def _judge_words(summary: dict[str, Any]) -> str:
    judge = summary.get("judge") or {}
    if not judge:
        return ""
    relation = {"independent": "independent of the training reward", "training_reward": "THE TRAINING REWARD",
                "unknown": "relation to the training reward not stated"}.get(judge.get("relation"), "")
    return f"judge: {judge.get('name')} ({relation})" if relation else f"judge: {judge.get('name')}"


def plot_title(summary: dict[str, Any]) -> list[str]:
    """The figure's title lines: who is compared with whom on which prompts, the judge, N and what
    failed, and a too-few warning when there is one."""
    settings = summary.get("settings") or {}
    label, model, reference = settings.get("label"), settings.get("model"), settings.get("reference")
    who = f"{label} ({model})" if label and model and label != model else (model or label or "model")
    data = Path(settings["prompts"]).name if settings.get("prompts") else "the prompts"
    lines = [f"{who} vs {reference or 'reference'} on {data}"]
    generation = summary.get("generation_failures") or {}
    generated = (f"generation failed for {generation.get('model', 0)} model and {generation.get('reference', 0)} "
                 "reference replies; ") if generation else ""  # fmt: skip
    lines.append(f"N = {summary.get('n_compared', 0)} of {summary.get('n_prompts', 0)} prompts compared ({generated}"
                 f"{summary.get('scoring_failures', 0)} not scored on both sides)")  # fmt: skip
    judge = _judge_words(summary)
    return lines + ([judge] if judge else [])


def plot(summary: dict[str, Any], differences: list[float], path: str | Path) -> Path:
    """Write :func:`winrate_figure` as a PNG; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    winrate_figure(summary, differences).savefig(path, format="png")
    return path


def winrate_figure(summary: dict[str, Any], differences: list[float]):
    """A figure: the histogram of model − reference reward differences with the tie band shaded and the
    mean with its CI marked (left), and the win/tie/loss rates (right). The title names the models,
    the prompts, the judge, N and what failed (:func:`plot_title`); with too few judged pairs it says
    so in red and the rates are drawn hatched. Legends sit below the axes, never over the data.
    Non-finite differences are left out."""
    # The Agg canvas is used directly, so importing this never changes pyplot's global backend.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # summarize() counts a non-finite reward as a failed scoring; the figure leaves such differences
    # out the same way instead of refusing to draw.
    data = np.asarray([d for d in differences if isinstance(d, Real) and not isinstance(d, bool) and math.isfinite(d)],
                      dtype=np.float64)
    band = float(summary["tie_band"])
    too_few = bool(summary.get("too_few"))
    figure = Figure(figsize=(9, 4.4), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, gridspec_kw={"width_ratios": [2, 1]})

    left.axvspan(-band, band, color="0.8", alpha=0.6, zorder=0, label=f"tie band ±{band:g}")
    if data.size:
        left.hist(data, bins=min(30, max(5, data.size // 3)), color="tab:blue", alpha=0.6, zorder=1,
                  label="prompts per difference")
    mean = summary.get("mean_reward_difference", math.nan)
    low, high = summary.get("ci", [math.nan, math.nan])
    if mean is not None and math.isfinite(mean):
        # The mean and its CI as a point with an error bar above the bars, so neither hides the other.
        y = left.get_ylim()[1] * 1.05
        has_ci = low is not None and high is not None and math.isfinite(low) and math.isfinite(high)
        xerr = [[mean - low], [high - mean]] if has_ci else None
        confidence = summary.get("confidence", 0.95)
        left.errorbar([mean], [y], xerr=xerr, fmt="o", color="tab:red", capsize=4, zorder=3,
                      label=f"mean {mean:+.3g}" + (f", {confidence:.0%} CI [{low:+.3g}, {high:+.3g}]" if has_ci else ""))
        left.set_ylim(top=y * 1.15)
    left.set_xlabel("model − reference reward")
    left.set_ylabel("prompts")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, fontsize=7, frameon=False)

    labels = ("win", "tie", "loss")
    rates = [summary.get(f"{label}_rate", math.nan) for label in labels]
    rates = [0.0 if r is None or not math.isfinite(r) else r for r in rates]
    bars = right.bar(labels, rates, color=("tab:green", "0.6", "tab:red"), hatch="//" if too_few else None,
                     alpha=0.5 if too_few else 1.0)
    counts = [summary.get(key, 0) for key in ("wins", "ties", "losses")]
    for bar, rate, count in zip(bars, rates, counts):
        right.text(bar.get_x() + bar.get_width() / 2, rate, f"{rate:.0%} ({count})", ha="center", va="bottom",
                   fontsize=8)
    right.set_ylim(0, 1.15)
    right.set_ylabel("share of compared prompts")

    lines = plot_title(summary)
    figure.suptitle(lines[0], fontsize=10, fontweight="bold")
    figure.text(0.5, 0.915, "\n".join(lines[1:]), ha="center", va="top", fontsize=8)
    if too_few:  # in red under the title: the rates below are drawn hatched, as not a result
        note = title_note(summary.get("n_compared", 0), summary.get("min_judged_pairs"), "judged pairs")
        figure.text(0.5, 0.84, note, ha="center", va="top", fontsize=9, color="#B00020", fontweight="bold")
    figure.tight_layout(rect=(0, 0, 1, 0.8 if too_few else 0.84))
    return figure
