"""Evaluate a served verifier on labelled (question, ground truth, answer, label) pairs.

    python -m verlkit.evaluation.verifier --pairs FILE.(jsonl|json|parquet) --url URL --model NAME \\
        [--template tinyv|rubric | --template-file FILE.yaml] [--verdict binary|total_score|option_letter] \\
        [--constrained true] [--verdict-mode prob] [--option NAME=VALUE ...] [--out metrics.json]

The verifier is asked exactly as the ``tinyv`` reward asks it (``tinyv.TinyVOptions``: template,
verdict preset, constraint, probabilities; ``--option`` sets any other option of that reward). The
pair's answer fills both {extracted_answer} and {response}.

Rows (read with ``verlkit.records.read_records``; a bad row is an ``InputError`` naming file, record
and field): ``question``, ``ground_truth``, ``answer``, ``label`` (true = the answer is correct),
optional ``criteria`` (required when the template uses {criteria}). HardVerify-Math style rows
(``question``, ``ground_truth``, ``fn_output``, ``tn_output``; the fields may also sit in
``extra_info``) expand into two pairs: ``fn_output`` labelled True (a correct answer rule checkers
reject) and ``tn_output`` labelled False.

Metrics over the pairs the verifier ANSWERED (a request that failed after the client's retries is
excluded and counted, never read as "False"): fn_accuracy (share of label=True answers judged True:
false negatives rescued), tn_accuracy (share of label=False judged False), precision/recall/F1 of
"True", accuracy, parse_failure_rate and invalid_rate (a reply with no verdict, or the invalid class,
counts as "not True"), mean verifier score per label; then request_failures (with the split by
label), latency p50/p95 (per request) and throughput. The metrics also go to the experiment tracker
(``--tracker wandb``: ``verlkit.evaluation.tracking``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from typing import Any

from verlkit.evaluation.tracking import add_tracker_arguments, log_evaluation, tracker_settings
from verlkit.records import InputError, read_records


@dataclass(frozen=True)
class Pair:
    question: str
    ground_truth: str
    answer: str
    label: bool
    criteria: str | None = None


def _label(value, *, file: Path, entry: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise InputError(f"must be true/false, got {value!r}", file=file, entry=entry, field="label")


def _field(row: dict, name: str, *, file: Path, entry: int, required: bool = True):
    """``row[name]``, else ``row["extra_info"][name]`` (verl RL rows), else for ``ground_truth``
    ``row["reward_model"]["ground_truth"]``."""
    extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    value = row.get(name, extra.get(name))
    if value is None and name == "ground_truth" and isinstance(row.get("reward_model"), dict):
        value = row["reward_model"].get("ground_truth")
    if required and (value is None or (isinstance(value, str) and not value.strip())):
        raise InputError("missing or empty", file=file, entry=entry, field=name)
    return value


def load_pairs(path: str | Path, *, needs_criteria: bool = False) -> list[Pair]:
    """The labelled pairs of a ``.jsonl``/``.json``/``.parquet`` file (``needs_criteria``: the rubric
    template, every row must carry its ``criteria``)."""
    path = Path(path)
    pairs: list[Pair] = []
    for i, row in enumerate(read_records(path)):
        at = {"file": path, "entry": i}
        question, gt = str(_field(row, "question", **at)), str(_field(row, "ground_truth", **at))
        criteria = _field(row, "criteria", **at, required=needs_criteria)
        criteria = str(criteria) if criteria is not None else None
        hardverify = {name: _field(row, name, **at, required=False) for name in ("fn_output", "tn_output")}
        if any(value is not None for value in hardverify.values()):
            for name, label in (("fn_output", True), ("tn_output", False)):
                if hardverify[name] is not None and str(hardverify[name]).strip():
                    pairs.append(Pair(question, gt, str(hardverify[name]), label, criteria))
            continue
        answer = str(_field(row, "answer", **at))
        pairs.append(Pair(question, gt, answer, _label(_field(row, "label", **at), **at), criteria))
    if not pairs:
        raise InputError("no pairs", file=path)
    return pairs


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def compute_metrics(labels: list[bool], verdicts: list[bool | None], latencies: list[float],
                    failed: list[bool], wall_s: float, scores: list[float | None] | None = None,
                    invalid: list[bool] | None = None) -> dict:
    """Metrics of one evaluation. ``failed[i]``: the request for pair i failed (the pair is left out
    of every accuracy and counted in ``request_failures``); ``verdicts[i]`` None: no verdict."""
    answered = [i for i, f in enumerate(failed) if not f]
    labels_a = [labels[i] for i in answered]
    judged_true = [verdicts[i] is True for i in answered]
    pos = [j for j, label in zip(judged_true, labels_a) if label]
    neg = [not j for j, label in zip(judged_true, labels_a) if not label]
    tp = sum(1 for j, label in zip(judged_true, labels_a) if j and label)
    fp = sum(1 for j, label in zip(judged_true, labels_a) if j and not label)
    fn = sum(1 for j, label in zip(judged_true, labels_a) if not j and label)
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if tp + fp + fn else math.nan)
    n, n_answered = len(labels), len(answered)

    def mean_score(label: bool) -> float:
        values = [scores[i] for i in answered if labels[i] is label and scores[i] is not None] if scores else []
        return sum(values) / len(values) if values else math.nan

    return {
        "n_pairs": n,
        "n_answered": n_answered,
        "n_positive": len(pos),
        "n_negative": len(neg),
        "fn_accuracy": sum(pos) / len(pos) if pos else math.nan,
        "tn_accuracy": sum(neg) / len(neg) if neg else math.nan,
        "accuracy": sum(j == label for j, label in zip(judged_true, labels_a)) / n_answered if n_answered else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "parse_failure_rate": sum(verdicts[i] is None for i in answered) / n_answered if n_answered else math.nan,
        "invalid_rate": (sum(invalid[i] for i in answered) / n_answered if n_answered else math.nan) if invalid else 0.0,
        "mean_score_positive": mean_score(True),
        "mean_score_negative": mean_score(False),
        "request_failures": n - n_answered,
        "request_failures_positive": sum(1 for i, f in enumerate(failed) if f and labels[i]),
        "request_failures_negative": sum(1 for i, f in enumerate(failed) if f and not labels[i]),
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p95_s": _percentile(latencies, 0.95),
        "wall_s": wall_s,
        "throughput_pairs_per_s": n / wall_s if wall_s > 0 else math.nan,
    }


async def judge_pairs(pairs: list[Pair], opts) -> list:
    """Ask the verifier about every pair as the ``tinyv`` reward would (``tinyv.ask_verifier``),
    all concurrently; one ``VerifierAnswer`` per pair."""
    from verl.utils.reward_score import tinyv

    async def one(pair: Pair):
        info = {"question": pair.question, **({"criteria": pair.criteria} if pair.criteria else {})}
        messages = tinyv.build_messages(opts, pair.answer, pair.ground_truth, info, pair.answer)
        return await tinyv.ask_verifier(opts, messages)

    return list(await asyncio.gather(*(one(p) for p in pairs)))


def describe(opts) -> dict[str, Any]:
    """How the verifier was asked, for reports."""
    return {"model": opts.model, "template": opts.chat_template.source, "verdict": opts.preset.kind,
            "constrained": opts.constraints_on, "verdict_mode": opts.verdict_mode}


async def evaluate(pairs: list[Pair], opts) -> dict:
    """The metrics of ``compute_metrics`` for the verifier ``opts`` (``tinyv.TinyVOptions``) on ``pairs``."""
    start = time.monotonic()
    answers = await judge_pairs(pairs, opts)
    wall = time.monotonic() - start
    failed = [not a.completion.ok for a in answers]
    verdicts = [None if f or a.v is None else a.v >= 0.5 for a, f in zip(answers, failed)]
    latencies = [a.completion.latency_s for a in answers if a.completion.ok and not a.completion.cache_hit]
    metrics = compute_metrics([p.label for p in pairs], verdicts, latencies, failed, wall,
                              scores=[a.v for a in answers], invalid=[a.verdict.invalid for a in answers])
    metrics.update(describe(opts))
    return metrics


def add_verifier_arguments(parser: argparse.ArgumentParser) -> None:
    """The served verifier and how the ``tinyv`` reward asks it (shared with the robustness probe)."""
    parser.add_argument("--url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--template", choices=("tinyv", "rubric"), default=None, help="built-in template (default tinyv)")
    parser.add_argument("--template-file", default=None, help="chat template file (instead of --template)")
    parser.add_argument("--verdict", default=None, help="verdict preset: binary, total_score, option_letter")
    parser.add_argument("--constrained", default=None, help="true: constrain replies (vLLM structured outputs)")
    parser.add_argument("--verdict-mode", choices=("label", "prob"), default=None)
    parser.add_argument("--max-tokens", type=int, default=0, help="0 = the template's default")
    parser.add_argument("--think", action="store_true", help="the verifier thinks first (<think>...</think>)")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--api-key-env", default=None)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="any other option of the tinyv reward (repeatable), e.g. --option score_max=5")


def verifier_options(args: argparse.Namespace):
    """``tinyv.TinyVOptions`` from the command line (no client cache: each pair is asked once and
    timed). Raises ``RewardOptionsError`` for a bad option or template."""
    from verl.utils.reward_score.options import RewardOptionsError, parse_options
    from verl.utils.reward_score.tinyv import TinyVOptions

    raw: dict[str, Any] = {"url": args.url, "model": args.model, "max_tokens": args.max_tokens,
                           "is_think_model": args.think, "max_concurrency": args.max_concurrency,
                           "timeout_s": args.timeout_s, "api_key_env": args.api_key_env, "cache_size": 0}
    for name in ("template", "template_file", "verdict", "constrained", "verdict_mode"):
        if getattr(args, name) is not None:
            raw[name] = getattr(args, name)
    for item in args.option:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise RewardOptionsError(f"--option {item!r}: write NAME=VALUE")
        raw[name.strip()] = value
    return parse_options(TinyVOptions, raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.evaluation.verifier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="labelled pairs: .jsonl, .json or .parquet")
    add_verifier_arguments(parser)
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    add_tracker_arguments(parser)
    args = parser.parse_args(argv)
    from verl.utils.reward_score.options import RewardOptionsError
    from verlkit.clients.llm import close_session
    from verlkit.clients.loop import run_sync

    try:
        opts = verifier_options(args)
        pairs = load_pairs(args.pairs, needs_criteria="criteria" in opts.chat_template.placeholders())
        from verl.utils.reward_score.tinyv import probe_verifier

        probe_verifier(opts)
        metrics = run_sync(evaluate(pairs, opts))
    except (InputError, RewardOptionsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        close_session()
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    log_evaluation(tracker_settings(args, f"verifier-{args.model}", Path(args.out).parent if args.out else Path.cwd()),
                   metrics, {}, {"pairs": str(args.pairs), "template": args.template_file or opts.template,
                                 "model": args.model})  # fmt: skip
    return 0 if metrics["request_failures"] < len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
