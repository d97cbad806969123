"""Evaluate calibration of a served policy on a prepared dev parquet (data_prep.medmcqa output).

Usage::

    python -m verlkit.evaluation.calibration --design cgp --data OUT/cgp/dev.parquet \\
        --policy-url http://127.0.0.1:8000/v1 --policy-model policy \\
        --downstream-url http://127.0.0.1:8001/v1 --downstream-model downstream --out DIR
    python -m verlkit.evaluation.calibration --design rlcr --data OUT/rlcr/dev.parquet \\
        --policy-url http://127.0.0.1:8000/v1 --policy-model policy --out DIR

Both URLs are OpenAI-compatible servers (the recipes start them with the launcher). Every request
goes through the shared client (``verlkit.clients.llm``), all rows concurrently.

* ``cgp`` (Prompt4Trust): the policy writes a hint (greedy: temperature 0, seed 1), the downstream
  model answers with it (``with_hint``), and the downstream model also answers without any hint
  (``baseline``). The downstream sampling follows the reward's defaults (temperature 0.1, top_p
  0.95, seed 1).
* ``rlcr``: the policy answers directly in the tagged format (greedy).

The downstream prompt and constraint are those of the ``cgp`` reward (``calibration.CGPOptions``):
``--downstream-template-file`` replaces the built-in template (the baseline then uses
``--baseline-template-file``, or the same template with an empty hint), and ``--downstream-constrained
true`` constrains the reply to ``--downstream-reasoning-chars`` characters of reasoning and the
``the answer is N with confidence C`` line (vLLM structured outputs; checked with one probe request
before the evaluation starts).

Writes ``DIR/metrics.json`` (per condition: ``calibration_metrics.calibration_report`` on all rows
and on parseable rows, mean reward, request-failure count), ``DIR/predictions.jsonl`` (one line per
row and condition) and reliability diagrams ``DIR/reliability.png`` (+ ``reliability_baseline.png``
for cgp), drawn from the ``all`` view (unparseable rows count as wrong at confidence 0).

A row whose request failed after the client's retries is **excluded** from that condition's
metrics and counted in ``request_failures``: a server outage is not a calibration result. A
condition with fewer than ``--min-parsed-rows`` (default 10) parsed replies is flagged ``too_few``
with a ``too_few_reason`` in metrics.json; the console line prints ``too few (n=...)`` in place of
its accuracy, ECE and Brier, and its diagram's title says so in red. The diagrams' titles name the
models, the data, N and what failed (requests, unparsed replies).

The summary metrics and diagrams also go to the experiment tracker (``--tracker wandb``, in the
training run's project and group: ``verlkit.evaluation.tracking``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
from pathlib import Path
from typing import Any

from verlkit.clients.llm import close_session, get_client
from verlkit.clients.settings import ClientSettings
from verlkit import calibration_stats as cm
from verlkit.evaluation.reliability_plot import plot_reliability
from verlkit.evaluation.sample_size import MIN_PARSED_ROWS, check_sample, shown, title_note
from verlkit.evaluation.tracking import add_tracker_arguments, log_evaluation, tracker_settings
from verlkit.records import InputError, read_records
from verl.utils.reward_score import calibration, rlcr

HINT_SEED = 1


def load_rows(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of a prepared parquet as plain Python objects; an ``InputError`` names file, record and field."""
    rows = read_records(path)
    if not rows:
        raise InputError("no rows", file=path)
    for i, row in enumerate(rows):
        for field in ("prompt", "reward_model", "extra_info"):
            if not row.get(field):
                raise InputError("missing or empty", file=path, entry=i, field=field)
    return rows[:limit] if limit else rows


def _client(url: str, model: str, args: argparse.Namespace, api_key_env: str | None):
    settings = ClientSettings(url=url, model=model, api_key_env=api_key_env, max_concurrency=args.max_concurrency,
                              timeout_s=args.timeout_s, max_retries=args.max_retries)
    return get_client(settings.client_config())


def downstream_options(args: argparse.Namespace) -> calibration.CGPOptions:
    """The cgp reward's options for the downstream calls of this evaluation (template, constraint,
    sampling), from the command line; a bad template is a ``RewardOptionsError``."""
    from verl.utils.reward_score.options import parse_options

    return parse_options(calibration.CGPOptions, {
        "url": args.downstream_url, "model": args.downstream_model, "api_key_env": args.downstream_api_key_env,
        "max_concurrency": args.max_concurrency, "timeout_s": args.timeout_s, "max_retries": args.max_retries,
        "max_tokens": args.downstream_max_tokens, "temperature": args.downstream_temperature,
        "top_p": args.downstream_top_p, "seed": args.seed, "template_file": args.downstream_template_file,
        "constrained": args.downstream_constrained, "reasoning_chars": args.downstream_reasoning_chars,
    })


def _baseline_template(args: argparse.Namespace, opts: calibration.CGPOptions):
    from verlkit.templates import builtin_template, load_template

    if args.baseline_template_file:
        return load_template(args.baseline_template_file)
    return opts.chat_template if opts.template_file else builtin_template("cgp_downstream_baseline")


async def _downstream(client, question, options, hint, args, opts, template):
    messages = calibration.downstream_messages(template, question, options, hint)
    return await calibration.ask_downstream(client, messages, opts, len(options))


def _cgp_record(condition, row, completion, hint=None) -> dict[str, Any]:
    question, options = calibration.question_and_options(row["extra_info"])
    gold = calibration.parse_gold(row["reward_model"]["ground_truth"], len(options))
    record = {"condition": condition, "id": row["extra_info"].get("id"), "gold": gold, "hint": hint,
              "request_ok": bool(completion.ok), "error": completion.error, "reply": completion.text}
    if completion.ok:
        parsed = calibration.parse_final_answer(completion.text, len(options))
        record.update(parsed=parsed is not None, answer=parsed.answer if parsed else None,
                      confidence=parsed.confidence if parsed else None,
                      correct=bool(parsed is not None and parsed.answer == gold),
                      rewards={v: calibration.score_reply(parsed, gold, v) for v in calibration.VARIANTS})
    return record


async def evaluate_cgp(rows, args) -> list[dict[str, Any]]:
    policy = _client(args.policy_url, args.policy_model, args, args.policy_api_key_env)
    opts = downstream_options(args)
    downstream = get_client(opts.client_config())
    baseline = _baseline_template(args, opts)

    async def one(row):
        question, options = calibration.question_and_options(row["extra_info"])
        hint_call = policy.chat(row["prompt"], max_tokens=args.policy_max_tokens,
                                temperature=args.policy_temperature, top_p=1.0, seed=HINT_SEED)
        hint, base = await asyncio.gather(hint_call, _downstream(downstream, question, options, None, args, opts,
                                                                 baseline))
        records = [_cgp_record("baseline", row, base)]
        if hint.ok:
            answer = await _downstream(downstream, question, options, hint.text, args, opts, opts.chat_template)
            records.append(_cgp_record("with_hint", row, answer, hint.text))
        else:
            records.append({"condition": "with_hint", "id": row["extra_info"].get("id"), "request_ok": False,
                            "error": f"policy: {hint.error}", "hint": None})
        return records

    nested = await asyncio.gather(*(one(r) for r in rows))
    return [rec for recs in nested for rec in recs]


async def evaluate_rlcr(rows, args) -> list[dict[str, Any]]:
    policy = _client(args.policy_url, args.policy_model, args, args.policy_api_key_env)

    async def one(row):
        completion = await policy.chat(row["prompt"], max_tokens=args.policy_max_tokens,
                                       temperature=args.policy_temperature, top_p=1.0, seed=HINT_SEED)
        record = {"condition": "policy", "id": row["extra_info"].get("id"),
                  "gold": row["reward_model"]["ground_truth"], "request_ok": bool(completion.ok),
                  "error": completion.error, "reply": completion.text}
        if completion.ok:
            result = rlcr.score_response(completion.text, row["reward_model"]["ground_truth"], row["extra_info"])
            parsed = result["format_ok"] == 1.0
            record.update(parsed=parsed, confidence=result["confidence"] if parsed else None,
                          correct=result["acc"] == 1.0, rewards={"rlcr": result["score"]})
        return record

    return list(await asyncio.gather(*(one(r) for r in rows)))


def summarize(records: list[dict[str, Any]], min_parsed_rows: int = MIN_PARSED_ROWS) -> dict[str, Any]:
    """Metrics of one condition's records (failed requests excluded and counted). With fewer than
    ``min_parsed_rows`` parsed replies the report says ``too_few`` (and why): its ECE, Brier, AUROC
    and accuracy are computed but are not a result."""
    answered = [r for r in records if r["request_ok"]]
    report = cm.calibration_report(
        [r["confidence"] if r["parsed"] else math.nan for r in answered],
        [bool(r["correct"]) for r in answered],
        [bool(r["parsed"]) for r in answered],
    ) if answered else {"n": 0}
    rewards: dict[str, float] = {}
    for name in (answered[0]["rewards"] if answered else {}):
        rewards[name] = sum(r["rewards"][name] for r in answered) / len(answered)
    report["request_failures"] = len(records) - len(answered)
    report["mean_reward"] = rewards
    n_parsed = sum(bool(r["parsed"]) for r in answered)
    sample = check_sample(n_parsed, min_parsed_rows, "parsed rows")
    report.update(n_parsed=n_parsed, min_parsed_rows=min_parsed_rows, too_few=sample["too_few"],
                  too_few_reason=sample["too_few_reason"])
    return report


CONDITIONS = {"cgp": ("with_hint", "baseline"), "rlcr": ("policy",)}
PLOT_FILES = {"with_hint": "reliability.png", "baseline": "reliability_baseline.png", "policy": "reliability.png"}


def condition_title(condition: str, design: str, models: dict[str, str | None]) -> str:
    """Who answered, for a plot title: the served names of the policy and the downstream model."""
    policy, downstream = models.get("policy") or "policy", models.get("downstream") or "downstream model"
    return {"with_hint": f"{design}: {downstream} answering with {policy}'s hints",
            "baseline": f"{design}: {downstream}, no hint (baseline)",
            "policy": f"{design}: {policy} (RLCR format)"}[condition]  # fmt: skip


def failure_line(report: dict[str, Any]) -> str:
    """What failed, in words: requests that got no reply, replies that did not parse."""
    answered = report.get("n", 0)
    unparsed = answered - report.get("n_parsed", 0)
    share = f" ({unparsed / answered:.0%})" if answered else ""
    return f"failed: {report['request_failures']} requests, {unparsed} of {answered} replies unparsed{share}"


def write_outputs(out: Path, design: str, data: Path, records: list[dict[str, Any]],
                  models: dict[str, str | None] | None = None, min_parsed_rows: int = MIN_PARSED_ROWS) -> dict[str, Any]:
    """metrics.json, predictions.jsonl and one reliability diagram per condition (see the module doc)."""
    out.mkdir(parents=True, exist_ok=True)
    models = models or {}
    metrics = {"design": design, "data": str(data), "models": models, "conditions": {}}
    for condition in CONDITIONS[design]:
        rows = [r for r in records if r["condition"] == condition]
        metrics["conditions"][condition] = summarize(rows, min_parsed_rows)
    with (out / "predictions.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(cm.to_json_safe(r), ensure_ascii=False) + "\n")
    (out / "metrics.json").write_text(json.dumps(cm.to_json_safe(metrics), indent=2) + "\n")
    for condition in CONDITIONS[design]:
        report = metrics["conditions"][condition]
        if report.get("n"):
            rows = report["n"] + report["request_failures"]
            details = [f"data: {Path(data).name}, N={rows} rows; plotted: the {report['n']} answered",
                       failure_line(report) + (" (plotted: wrong at confidence 0)" if report["n_parsed"] < report["n"]
                                               else "")]  # fmt: skip
            plot_reliability(report["all"], str(out / PLOT_FILES[condition]),
                                title=condition_title(condition, design, models), details=details,
                                warning=title_note(report["n_parsed"], min_parsed_rows, "parsed rows")
                                if report["too_few"] else None)  # fmt: skip
    return metrics


def console_line(name: str, report: dict[str, Any]) -> str:
    """One condition's line of the console table; too few parsed rows print as such, not as numbers."""
    if not report.get("n"):
        return f"{name}: no answered rows (request_failures={report['request_failures']})"
    a, few = report["all"], report["n_parsed"] if report["too_few"] else None
    return (f"{name}: n={report['n']} parsed={report['n_parsed']} acc={shown(a['accuracy'], few)} "
            f"ece={shown(a['ece'], few)} brier={shown(a['brier'], few)} "
            f"parse_fail={report['parse_failure_rate']:.2f} request_failures={report['request_failures']}")


def tracked_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What the tracker gets: per condition the ``all`` view's numbers (not its bins), the parseable
    view's ECE, the counts and the too-few flag."""
    out: dict[str, Any] = {}
    for name, r in metrics["conditions"].items():
        if not r.get("n"):
            out[name] = {"n": 0, "request_failures": r["request_failures"], "too_few": True,
                         "too_few_reason": r["too_few_reason"]}
            continue
        numbers = {k: v for k, v in r["all"].items() if k != "bins"}
        out[name] = {**numbers, "ece_parseable": r["parseable"]["ece"], "n_parsed": r["n_parsed"],
                     "parse_failure_rate": r["parse_failure_rate"], "request_failures": r["request_failures"],
                     "too_few": r["too_few"], "too_few_reason": r["too_few_reason"], "mean_reward": r["mean_reward"]}
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Calibration evaluation against served models.")
    p.add_argument("--design", choices=("cgp", "rlcr"), required=True)
    p.add_argument("--data", type=Path, required=True, help="prepared dev parquet (never MedMCQA test)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--policy-url", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--policy-model", required=True)
    p.add_argument("--policy-api-key-env", default=None)
    p.add_argument("--downstream-url")
    p.add_argument("--downstream-model")
    p.add_argument("--downstream-api-key-env", default=None)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N rows")
    p.add_argument("--policy-max-tokens", type=int, default=256)
    p.add_argument("--policy-temperature", type=float, default=0.0)
    p.add_argument("--downstream-max-tokens", type=int, default=256)
    p.add_argument("--downstream-temperature", type=float, default=0.1)
    p.add_argument("--downstream-top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=1, help="sampling seed sent with downstream requests")
    p.add_argument("--downstream-template-file", default=None,
                   help="chat template file for the downstream prompt (default: the built-in cgp_downstream)")
    p.add_argument("--baseline-template-file", default=None,
                   help="template of the no-hint baseline (default: built in, or the downstream template file)")
    p.add_argument("--downstream-constrained", choices=("auto", "true", "false"), default="auto",
                   help="constrain the downstream reply to its answer line (vLLM structured outputs); auto = off")
    p.add_argument("--downstream-reasoning-chars", type=int, default=None,
                   help="reasoning characters a constrained reply may hold before its answer line (default 300)")
    p.add_argument("--max-concurrency", type=int, default=64)
    p.add_argument("--timeout-s", type=float, default=60.0)
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--min-parsed-rows", type=int, default=MIN_PARSED_ROWS,
                   help="fewer parsed replies than this: the report says 'too few' instead of a calibration")
    add_tracker_arguments(p)
    return p


def _check_downstream(args: argparse.Namespace) -> None:
    """The downstream options and templates, and (constraints on) one probe of the server, before
    any row is asked."""
    from verl.utils.reward_score.options import RewardOptionsError
    from verlkit.templates import TemplateError

    opts = downstream_options(args)
    try:
        template = _baseline_template(args, opts)
        template.check(reward="cgp", fillable=calibration.FILLABLE, required=[{"question"}, {"options"}])
    except TemplateError as e:
        raise RewardOptionsError(f"baseline: {e}") from None
    if opts.constraints_on:
        calibration.probe_downstream(opts)


async def _run(args, rows):
    if args.design == "cgp":
        return await evaluate_cgp(rows, args)
    return await evaluate_rlcr(rows, args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.design == "cgp" and not (args.downstream_url and args.downstream_model):
        parser.error("--design cgp needs --downstream-url and --downstream-model")
    if "test" in args.data.stem.split("_") or "test" in args.data.stem.split("-"):
        parser.error(f"{args.data}: MedMCQA's test split has no labels; evaluate on dev")
    try:
        rows = load_rows(args.data, args.limit)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from verl.utils.reward_score.options import RewardOptionsError

    try:
        if args.design == "cgp":
            _check_downstream(args)
        records = asyncio.run(_run(args, rows))
    except RewardOptionsError as e:  # a bad template, or a server refusing the constraint
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        close_session()
    models = {"policy": args.policy_model, "downstream": args.downstream_model}
    metrics = write_outputs(args.out, args.design, args.data, records, models, args.min_parsed_rows)
    for name, report in metrics["conditions"].items():
        print(console_line(name, report))
    print(f"wrote {args.out / 'metrics.json'}")
    plots = {f"reliability_{c}": args.out / PLOT_FILES[c] for c in CONDITIONS[args.design]}
    log_evaluation(tracker_settings(args, f"calibration-{args.design}", args.out), tracked_metrics(metrics), plots,
                   {"design": args.design, "data": str(args.data), **{f"{k}_model": v for k, v in models.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
