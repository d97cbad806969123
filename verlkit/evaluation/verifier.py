"""Evaluate a served verifier on labelled (question, ground truth, answer, label) pairs.

    python -m verlkit.evaluation.verifier --pairs FILE.(jsonl|json|parquet) --url URL --model NAME \\
        [--template tinyv|rubric] [--out metrics.json]

Rows (read with ``verlkit.records.read_records``; a bad row is an ``InputError`` naming file, record
and field): ``question``, ``ground_truth``, ``answer``, ``label`` (true = the answer is correct),
optional ``criteria`` (required by the rubric template). HardVerify-Math style rows (``question``, ``ground_truth``,
``fn_output``, ``tn_output``; the fields may also sit in ``extra_info``) expand into two pairs:
``fn_output`` labelled True (a correct answer rule checkers reject) and ``tn_output`` labelled False.

Metrics: fn_accuracy (share of label=True answers judged True: false negatives rescued),
tn_accuracy (share of label=False judged False), precision/recall/F1 of "True", accuracy,
parse_failure_rate, request failures, latency p50/p95 (per request) and throughput. A reply with no
verdict counts as "not True" for the accuracy metrics and is reported in parse_failure_rate. The
metrics also go to the experiment tracker (``--tracker wandb``: ``verlkit.evaluation.tracking``).
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

from verlkit.clients.llm import LLMClient
from verlkit.clients.settings import ClientSettings
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
                    failures: int, wall_s: float) -> dict:
    judged_true = [v is True for v in verdicts]
    pos = [j for j, label in zip(judged_true, labels) if label]
    neg = [not j for j, label in zip(judged_true, labels) if not label]
    tp = sum(1 for j, label in zip(judged_true, labels) if j and label)
    fp = sum(1 for j, label in zip(judged_true, labels) if j and not label)
    fn = sum(1 for j, label in zip(judged_true, labels) if not j and label)
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if tp + fp + fn else math.nan)
    n = len(labels)
    return {
        "n_pairs": n,
        "n_positive": len(pos),
        "n_negative": len(neg),
        "fn_accuracy": sum(pos) / len(pos) if pos else math.nan,
        "tn_accuracy": sum(neg) / len(neg) if neg else math.nan,
        "accuracy": sum(j == label for j, label in zip(judged_true, labels)) / n if n else math.nan,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "parse_failure_rate": sum(v is None for v in verdicts) / n if n else math.nan,
        "request_failures": failures,
        "latency_p50_s": _percentile(latencies, 0.5),
        "latency_p95_s": _percentile(latencies, 0.95),
        "wall_s": wall_s,
        "throughput_pairs_per_s": n / wall_s if wall_s > 0 else math.nan,
    }


async def evaluate(pairs: list[Pair], client: LLMClient, template: str = "tinyv", max_tokens: int = 0,
                   is_think_model: bool = False) -> dict:
    from verl.utils.reward_score import tinyv
    from verl.utils.reward_score.verifier_prompts import rubric_prompt, tinyv_prompt

    opts = tinyv.TinyVOptions(url=client.config.base_url, model=client.config.model, template=template,
                              max_tokens=max_tokens, is_think_model=is_think_model)
    limit = tinyv.max_tokens_for(opts)

    async def one(pair: Pair):
        if template == "rubric":
            if not pair.criteria:
                raise ValueError("template=rubric needs a 'criteria' field on every pair")
            prompt = rubric_prompt(pair.question, pair.criteria, pair.answer)
        else:
            prompt = tinyv_prompt(pair.question, pair.ground_truth, pair.answer)
        out = await client.chat([{"role": "user", "content": prompt}], max_tokens=limit, temperature=0.0)
        if not out.ok:
            return None, out
        v = tinyv.parse_verifier_score(opts, out.text)
        return (None if v is None else v >= 0.5), out

    start = time.monotonic()
    results = await asyncio.gather(*(one(p) for p in pairs))
    wall = time.monotonic() - start
    verdicts = [v for v, _ in results]
    latencies = [out.latency_s for _, out in results if out.ok and not out.cache_hit]
    failures = sum(1 for _, out in results if not out.ok)
    metrics = compute_metrics([p.label for p in pairs], verdicts, latencies, failures, wall)
    metrics["template"] = template
    metrics["model"] = client.config.model
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.evaluation.verifier", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", required=True, help="labelled pairs: .jsonl, .json or .parquet")
    parser.add_argument("--url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--template", choices=("tinyv", "rubric"), default="tinyv")
    parser.add_argument("--max-tokens", type=int, default=0, help="0 = template default")
    parser.add_argument("--think", action="store_true", help="the verifier thinks first (<think>...</think>)")
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    parser.add_argument("--api-key-env", default=None)
    parser.add_argument("--out", default=None, help="write the metrics as JSON here")
    add_tracker_arguments(parser)
    args = parser.parse_args(argv)
    try:
        pairs = load_pairs(args.pairs, needs_criteria=args.template == "rubric")
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # A fresh client, no cache: each pair is asked once and timed.
    settings = ClientSettings(url=args.url, model=args.model, api_key_env=args.api_key_env,
                              max_concurrency=args.max_concurrency, timeout_s=args.timeout_s, cache_size=0)
    client = LLMClient(settings.client_config())
    from verlkit.clients.loop import run_sync

    metrics = run_sync(evaluate(pairs, client, args.template, args.max_tokens, args.think))
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    text = json.dumps(metrics, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    log_evaluation(tracker_settings(args, f"verifier-{args.model}", Path(args.out).parent if args.out else Path.cwd()),
                   metrics, {}, {"pairs": str(args.pairs), "template": args.template, "model": args.model})
    return 0 if metrics["request_failures"] < len(pairs) else 1


if __name__ == "__main__":
    sys.exit(main())
