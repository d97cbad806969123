"""C3PO's evaluation: does a model apply the feedback in scope, and leave everything else alone?

For the in-scope, near-scope and out-of-scope TEST prompts of one sampled feedback, the evaluated
responses are compared with baseline responses of the original model:

* evaluated responses: ``--method trained`` generates them with a served model (e.g. the base model
  with the trained LoRA adapter loaded, greedy); ``in_context``, ``cot`` or ``revised`` take the
  completions stored by the sampling stage (the paper's prompting baselines, no training);
* baseline responses: ``--baseline regenerate`` (the default for ``trained``) generates them from the
  original model with the SAME decoding as the evaluated ones, so that "behaviour change" is not
  sampling noise (the original compared greedy trained outputs with temperature-0.7 API samples);
  ``stored`` (the default for the stored methods, which were sampled like the baseline) uses the
  sampling stage's ``baseline_response``.

Quantitative feedback (it has a metric): each prompt is ``better`` (moved in the feedback's
direction), ``tie`` or ``worse`` (``verlkit.c3po.metrics.compare``). Ties are reported on their
own and never count as applying the feedback (the original counted them as success).

Qualitative feedback: a judge model compares the two responses for how well they implement the
feedback's effect, on the 1..5 ``BETTER_RESPONSE`` scale, asked in BOTH orders (evaluated response
second, then first) to cancel position bias. The order-corrected score is the mean of
``s_forward`` and ``6 - s_swapped`` (5 = the evaluated response implements the feedback much more);
the feedback counts as applied when it is >= ``--applied-threshold`` (default 4), and 3 is a tie.
A prompt with an unparseable or failed judgement is excluded and counted.

Reported per set: ``applied_rate`` (= feedback adherence on in-scope prompts, overgeneralization on
near- and out-of-scope prompts), ``tie_rate``, ``worse_rate``, raw means (metric values or judge
scores, both orders), counts of failures (and, for qualitative feedback, ``judge_requests``: the
judge's requests, re-asks and failures); the headline ``adherence``, ``overgeneralization_near``,
``overgeneralization_out``. Written as ``OUT/<label>.json`` (``--label``, default the method; e.g. a
combined adapter's result beside the single one's) with one record per prompt, plus a bar plot
``OUT/<label>.png`` (its title names the feedback, the models, N per set and what failed; its legend
sits below the axes). The headline rates, the set summaries and the plot also go to the experiment
tracker (``--tracker wandb``: ``verlkit.evaluation.tracking``).

CLI: ``python -m verlkit.c3po.evaluate --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

from verlkit.c3po.constraints import judge_constraint
from verlkit.c3po.endpoints import CONSTRAIN_CHOICES, Asker, Endpoint, use_constraints
from verlkit.c3po.metrics import compare, measure
from verlkit.c3po.parsers import parse_judge
from verlkit.c3po.prompts import baseline_messages, judge_messages
from verlkit.c3po.sample import SETS, load_sample
from verlkit.evaluation.tracking import add_tracker_arguments, log_evaluation, tracker_settings
from verlkit.records import InputError

METHODS = ("trained", "in_context", "cot", "revised")
STORED = {"in_context": "in_context_response", "cot": "cot_response", "revised": "revised_response"}


def test_prompts(sample: dict[str, Any], name: str, limit: int | None, seed: int = 42) -> list[dict[str, Any]]:
    """The set's test rows, shuffled with ``seed`` and cut to ``limit`` (the original: 75, seed 42)."""
    rows = list(sample["sets"][name]["test"])
    random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def order_corrected(forward: int, swapped: int) -> float:
    """Judge score with the evaluated response in the second slot (``forward``) and in the first
    (``swapped``), mapped to one 1..5 score where 5 = the evaluated response is much better."""
    return (forward + (6 - swapped)) / 2.0


def outcome_from_score(score: float, threshold: float) -> str:
    """``better`` at or above the threshold, ``worse`` at or below its mirror image (6 - threshold),
    ``tie`` in between (no clear preference either way)."""
    if score >= threshold:
        return "better"
    if score <= 6.0 - threshold:
        return "worse"
    return "tie"


def tie_reason(rec: dict[str, Any]) -> str:
    """Why a prompt came out a tie, so that a report of nothing but ties says what it is made of:
    the two responses are the same text (the adapter changed nothing the judge could see), the judge
    preferred the same slot in both orders (position bias: the order correction cancels it out), it
    called them equal, or its preference was too weak for the threshold (or the metric did not move)."""
    if (rec.get("evaluated") or "").strip() == (rec.get("baseline") or "").strip():
        return "identical_responses"
    forward, swapped = rec.get("score_forward"), rec.get("score_swapped")
    if forward is None:
        return "metric_unchanged"
    if forward == swapped and forward != 3:
        return "judge_position_bias"
    if forward == swapped == 3:
        return "judged_equal"
    return "weak_preference"


def summarize_set(records: list[dict[str, Any]], quantitative: bool) -> dict[str, Any]:
    """Rates over the prompts that were judged; failures are counted, not scored."""
    judged = [r for r in records if r.get("outcome") is not None]
    n = len(judged)
    rate = lambda k: sum(r["outcome"] == k for r in judged) / n if n else None  # noqa: E731
    mean = lambda key: (sum(r[key] for r in judged) / n) if n else None  # noqa: E731
    out = {"n_prompts": len(records), "n_judged": n, "failures": len(records) - n,
           "applied_rate": rate("better"), "tie_rate": rate("tie"), "worse_rate": rate("worse")}  # fmt: skip
    reasons = [r["tie_reason"] for r in judged if r.get("tie_reason")]
    out["tie_reasons"] = {reason: reasons.count(reason) for reason in sorted(set(reasons))}
    if quantitative:
        out.update(mean_baseline_metric=mean("baseline_metric"), mean_evaluated_metric=mean("evaluated_metric"))
    else:
        out.update(mean_score=mean("score"), mean_score_forward=mean("score_forward"),
                   mean_score_swapped=mean("score_swapped"))  # fmt: skip
    return out


class Evaluator:
    def __init__(self, sample: dict[str, Any], args: argparse.Namespace):
        self.sample = sample
        self.fb = sample["feedback"]
        self.args = args
        self.judge = None
        if self.fb.type == "qualitative":
            self.judge = Endpoint(args.judge_url, args.judge_model, args.judge_api_key_env,
                                  use_constraints(args.judge_constrained, args.judge_url),
                                  args.max_concurrency, args.timeout_s)  # fmt: skip
        # judge failures and unusable verdicts are counted here and reported with the result
        self.judge_asker = Asker(max_reasks=args.max_reasks, temperature=args.judge_temperature, top_p=1.0)

    async def generate(self, url: str, name: str, prompts: list[str]) -> list[str | None]:
        a = self.args
        client = Endpoint(url, name, a.api_key_env, False, a.max_concurrency, a.timeout_s).client()
        done = await asyncio.gather(*(
            client.chat(baseline_messages(p), max_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p)
            for p in prompts
        ))  # fmt: skip
        return [d.text if d.ok else None for d in done]

    async def judge_once(self, prompt: str, first: str, second: str) -> int | None:
        """The judge's 1..5 verdict (5 = ``second`` carries out the feedback much better), or None."""
        return await self.judge_asker.ask(self.judge, "judge", "judge", judge_messages(self.fb, prompt, first, second),
                                          self.args.judge_max_tokens, parse=parse_judge,
                                          constraint=judge_constraint())  # fmt: skip

    async def compare_row(self, row: dict[str, Any], evaluated: str | None, baseline: str | None) -> dict[str, Any]:
        rec = {"prompt": row["prompt"], "category": row.get("category"), "evaluated": evaluated, "baseline": baseline,
               "outcome": None}  # fmt: skip
        if evaluated is None or baseline is None:
            rec["error"] = "generation failed"
            return rec
        if self.fb.type == "quantitative":
            b, e = measure(self.fb, baseline), measure(self.fb, evaluated)
            rec.update(baseline_metric=b, evaluated_metric=e, outcome=compare(self.fb, b, e))
            return self._with_tie_reason(rec)
        forward, swapped = await asyncio.gather(
            self.judge_once(row["prompt"], baseline, evaluated), self.judge_once(row["prompt"], evaluated, baseline)
        )
        rec.update(score_forward=forward, score_swapped=swapped)
        if forward is None or swapped is None:
            rec["error"] = "judge failed or unparseable"
            return rec
        score = order_corrected(forward, swapped)
        rec.update(score=score, outcome=outcome_from_score(score, self.args.applied_threshold))
        return self._with_tie_reason(rec)

    @staticmethod
    def _with_tie_reason(rec: dict[str, Any]) -> dict[str, Any]:
        if rec["outcome"] == "tie":
            rec["tie_reason"] = tie_reason(rec)
        return rec

    async def run(self) -> dict[str, Any]:
        a = self.args
        result: dict[str, Any] = {"feedback": self.fb.slug, "feedback_id": self.fb.id, "type": self.fb.type,
                                  "method": a.method, "label": a.label or a.method, "baseline": a.baseline,
                                  "model_name": a.model_name if a.method == "trained" else None, "sets": {}}  # fmt: skip
        # who answered and who judged, for the plot's title and the tracker
        result["models"] = {"evaluated": a.model_name if a.method == "trained" else f"stored {a.method} responses",
                            "baseline": a.baseline_name if a.baseline == "regenerate" else "stored baseline responses",
                            "judge": a.judge_model if self.judge is not None else None}  # fmt: skip
        for name in SETS:
            rows = test_prompts(self.sample, name, a.limit, a.shuffle_seed)
            prompts = [r["prompt"] for r in rows]
            if a.method == "trained":
                evaluated = await self.generate(a.model_url, a.model_name, prompts)
            else:
                evaluated = [r.get(STORED[a.method]) for r in rows]
            if a.baseline == "regenerate":
                baseline = await self.generate(a.baseline_url, a.baseline_name, prompts)
            else:
                baseline = [r.get("baseline_response") for r in rows]
            records = await asyncio.gather(*(self.compare_row(r, e, b) for r, e, b in zip(rows, evaluated, baseline)))
            result["sets"][name] = {"summary": summarize_set(list(records), self.fb.type == "quantitative"),
                                    "records": list(records)}  # fmt: skip
        s = {name: result["sets"][name]["summary"] for name in SETS}
        result["adherence"] = s["in_scope"]["applied_rate"]
        result["overgeneralization_near"] = s["near_scope"]["applied_rate"]
        result["overgeneralization_out"] = s["out_of_scope"]["applied_rate"]
        if self.judge is not None:
            c = self.judge_asker.counts
            result["judge_requests"] = {"requests": c.requests, "reasks": c.reasks,
                                        "request_failures": c.request_failures, "parse_failures": c.parse_failures}
        return result


def plot_title(result: dict[str, Any]) -> list[str]:
    """The figure's title lines: feedback, method, models, N per set and what failed."""
    models = result.get("models") or {}
    evaluated = models.get("evaluated") or result["method"]
    baseline = models.get("baseline") or "baseline"
    lines = [f"{result['feedback']}: {evaluated} ({result['method']}) vs {baseline}"]
    summaries = [result["sets"][n]["summary"] for n in SETS]
    judged = ", ".join(f"{n.replace('_', '-')} {s['n_judged']}/{s['n_prompts']}" for n, s in zip(SETS, summaries))
    failed = [f"{sum(s['failures'] for s in summaries)} prompts unjudged"]
    requests = result.get("judge_requests")
    if requests:
        failed.append(f"judge: {requests['request_failures']} request failures, {requests['parse_failures']} "
                      f"unparsed of {requests['requests']} requests")  # fmt: skip
    judge = f"; judge {models['judge']}" if models.get("judge") else ""
    lines.append(f"judged/prompts: {judged}{judge}")
    lines.append("failed: " + ", ".join(failed))
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    """Write :func:`adherence_figure` as a PNG."""
    adherence_figure(result).savefig(path, dpi=110)


def adherence_figure(result: dict[str, Any]):
    """Stacked bars per set (applied / tie / worse over the judged prompts) with each set's judged count
    above its bar; the legend below the axes (never over a bar or a label) and a title naming the
    feedback, the models, N per set and what failed (:func:`plot_title`)."""
    # The Agg canvas is used directly, so drawing never changes pyplot's global backend or state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(SETS)
    labels = ["in-scope\n(adherence)", "near-scope\n(overgen.)", "out-of-scope\n(overgen.)"]
    summaries = [result["sets"][n]["summary"] for n in names]
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    bottom = [0.0] * 3
    for key, color, label in (("applied_rate", "#2a7fba", "applied"), ("tie_rate", "#bbbbbb", "tie"),
                              ("worse_rate", "#d9822b", "worse")):  # fmt: skip
        values = [s[key] or 0.0 for s in summaries]
        ax.bar(labels, values, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    for i, s in enumerate(summaries):
        ax.text(i, max(bottom[i], 0.0) + 0.02, f"n={s['n_judged']}" if s["n_judged"] else "none judged",
                ha="center", fontsize=8)  # fmt: skip
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("share of judged prompts")
    lines = plot_title(result)
    fig.suptitle(lines[0], fontsize=9.5, fontweight="bold")
    ax.set_title("\n".join(lines[1:]), fontsize=7.5)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def tracked_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """What the tracker gets: the headline rates and each set's summary."""
    return {"adherence": result["adherence"], "overgeneralization_near": result["overgeneralization_near"],
            "overgeneralization_out": result["overgeneralization_out"],
            **{name: result["sets"][name]["summary"] for name in SETS},
            **({"judge_requests": result["judge_requests"]} if "judge_requests" in result else {})}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verlkit.c3po.evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--sample-dir", required=True, type=Path, help="the sampling stage's directory of ONE feedback")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--method", choices=METHODS, default="trained")
    p.add_argument("--label", default=None,
                   help="names the result (OUT/<label>.json, .png) and the model in tables; default: the method")
    p.add_argument("--baseline", choices=["auto", "regenerate", "stored"], default="auto")
    p.add_argument("--model-url", help="trained: the server of the evaluated model")
    p.add_argument("--model-name", help="trained: its served name (e.g. the LoRA adapter's name)")
    p.add_argument("--baseline-url", help="regenerate: the server of the original model")
    p.add_argument("--baseline-name")
    p.add_argument("--api-key-env", default=None, help="NAME of the env var with the generation servers' key")
    p.add_argument("--judge-url", help="qualitative feedback: the judge's server")
    p.add_argument("--judge-model")
    p.add_argument("--judge-api-key-env", default=None)
    p.add_argument("--judge-constrained", choices=CONSTRAIN_CHOICES, default="auto")
    p.add_argument("--judge-max-tokens", type=int, default=512)
    p.add_argument("--judge-temperature", type=float, default=0.0)
    p.add_argument("--applied-threshold", type=float, default=4.0)
    p.add_argument("--limit", type=int, default=75, help="test prompts per set (the original: 75)")
    p.add_argument("--shuffle-seed", type=int, default=42)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-reasks", type=int, default=2)
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument("--timeout-s", type=float, default=300.0)
    add_tracker_arguments(p)
    return p


def check_args(args: argparse.Namespace, feedback) -> str | None:
    if args.baseline == "auto":
        args.baseline = "regenerate" if args.method == "trained" else "stored"
    if args.method == "trained" and not (args.model_url and args.model_name):
        return "--method trained needs --model-url and --model-name"
    if args.baseline == "regenerate" and not (args.baseline_url and args.baseline_name):
        return "--baseline regenerate needs --baseline-url and --baseline-name"
    if feedback.type == "qualitative" and not (args.judge_url and args.judge_model):
        return f"feedback {feedback.slug!r} is qualitative: --judge-url and --judge-model are required"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from verlkit.clients.loop import run_sync
    from verlkit.clients.llm import close_session

    try:
        sample = load_sample(args.sample_dir)
    except InputError as e:
        print(f"c3po evaluate: cannot read {args.sample_dir}: {e}", file=sys.stderr)
        return 2
    problem = check_args(args, sample["feedback"])
    if problem:
        print(f"c3po evaluate: {problem}", file=sys.stderr)
        return 2
    try:
        result = run_sync(Evaluator(sample, args).run())
    finally:
        close_session()
    args.out.mkdir(parents=True, exist_ok=True)
    label = result["label"]
    (args.out / f"{label}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    plot(result, args.out / f"{label}.png")
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    print(f"{result['feedback']} [{label}]: adherence {fmt(result['adherence'])}, overgeneralization "
          f"near {fmt(result['overgeneralization_near'])} / out {fmt(result['overgeneralization_out'])} "
          f"-> {args.out / (label + '.json')}")  # fmt: skip
    log_evaluation(tracker_settings(args, f"c3po-{result['feedback']}-{label}", args.out), tracked_metrics(result),
                   {f"adherence_{label}": args.out / f"{label}.png"},
                   {"feedback": result["feedback"], "method": args.method, "label": label, "baseline": args.baseline,
                    **{f"{k}_model": v for k, v in result["models"].items()}})  # fmt: skip
    judged = sum(result["sets"][n]["summary"]["n_judged"] for n in SETS)
    return 0 if judged else 1


if __name__ == "__main__":
    sys.exit(main())
