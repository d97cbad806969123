"""Win rate of a trained model against a reference model, judged by a served scalar reward model.

For every held-out prompt (``eval/prompts.parquet`` of ``data_prep.pipeline``): both models answer
through their servers' chat endpoints (each server applies its own chat template), the reward model
scores both (prompt, response) conversations — or, with ``--judge-url``, a hosted OpenAI-compatible
reward judge does (e.g. NVIDIA's nemotron-70b-reward, the original's evaluator: the reply carries
``reward:<float>``; key from the environment variable named by ``--judge-api-key-env``, requests
rate-limited by ``--judge-rate-limit-rps``) — and ``verlkit.evaluation.winrate_stats.summarize`` reports win /
tie / loss with an explicit tie band, mean rewards, the mean reward difference with a bootstrap
confidence interval, and the length ratio in tokens (the servers' ``completion_tokens``) and words.
A served LLM can judge too: ``--judge-template-file`` (a chat template with {question} and
{response}), ``--judge-verdict`` (reward_value, total_score, binary, option_letter; e.g. a judge
that ends with ``Total Score: 7/10``) and ``--judge-constrained true`` (vLLM structured outputs,
checked with one probe request before any prompt is generated).
A generation or scoring failure (after the shared client's bounded retries) excludes the prompt from
the comparison and is counted; it is never scored as 0.

CLI::

    python -m verlkit.evaluation.winrate --prompts eval/prompts.parquet \\
        --model-url URL --model-name policy --reference-url URL --reference-name reference \\
        --rm-url URL --rm-name reward_model --rm-tokenizer RM_DIR --out DIR [--label dpo]

writes ``DIR/predictions.jsonl`` (one line per prompt: both responses, token counts, rewards),
``DIR/winrate.json`` (the summary and the settings) and ``DIR/winrate.png``.

The report names its judge (``judge``: kind, name, URL/directory, ``--judge-description``) and its
relation to the reward the evaluated model was trained against (``--judge-relation``:
``independent``, ``training_reward`` -- then the report says in words that a reward-hacked model
wins more here -- or ``unknown``). Fewer than ``--min-judged-pairs`` (default 10) compared prompts
flag the summary ``too_few`` with a ``too_few_reason``; the console line prints ``too few (n=...)``
in place of the rates and the plot's title says so. The summary and the plot also go to the
experiment tracker (``--tracker wandb``: ``verlkit.evaluation.tracking``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from verlkit.clients.llm import close_session, get_client
from verlkit.clients.loop import run_sync
from verlkit.clients.settings import ClientSettings
from verlkit.evaluation.reward_model import JudgeOptions, judge_conversations, rm_client, score_conversations
from verlkit.evaluation.sample_size import MIN_JUDGED_PAIRS, shown
from verlkit.evaluation.tracking import add_tracker_arguments, log_evaluation, tracker_settings
from verlkit.records import InputError, chat_messages, read_records


def load_prompts(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """``{"prompt_id", "prompt"}`` per record; an ``InputError`` names file, record and field."""
    rows = read_records(path)
    if not rows:
        raise InputError("no prompts", file=path)
    return [{"prompt_id": row.get("prompt_id", str(i)),
             "prompt": chat_messages(row.get("prompt"), "user", file=path, entry=i, field="prompt")}
            for i, row in enumerate(rows[: limit or None])]  # fmt: skip


def _chat_client(url: str, name: str, args: argparse.Namespace):
    settings = ClientSettings(url=url, model=name, max_concurrency=args.max_concurrency, timeout_s=args.timeout_s,
                              max_retries=args.max_retries)
    return get_client(settings.client_config())


async def generate(client, prompts: list[dict], args: argparse.Namespace) -> list[dict[str, Any]]:
    """``{"text", "tokens", "error"}`` per prompt (text None on failure)."""
    seed = args.seed if args.temperature > 0 and args.seed is not None else None
    done = await asyncio.gather(*(
        client.chat(p["prompt"], max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, seed=seed)
        for p in prompts
    ))  # fmt: skip
    out = []
    for d in done:
        tokens = ((d.raw or {}).get("usage") or {}).get("completion_tokens") if d.ok else None
        out.append({"text": d.text if d.ok else None, "tokens": tokens, "error": d.error})
    return out


async def evaluate(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from verlkit.evaluation import winrate_stats as winrate

    prompts = load_prompts(args.prompts, args.limit)
    model = _chat_client(args.model_url, args.model_name, args)
    reference = _chat_client(args.reference_url, args.reference_name, args)
    if args.judge_url:
        judge = rm_client(args.judge_url, args.judge_model, args.max_concurrency, args.timeout_s, args.max_retries,
                          args.judge_api_key_env, args.judge_rate_limit_rps)  # fmt: skip
        options = judge_options(args)
        score = lambda convs: judge_conversations(judge, convs, options=options)  # noqa: E731
    else:
        rm = rm_client(args.rm_url, args.rm_name, args.max_concurrency, args.timeout_s, args.max_retries)
        score = lambda convs: score_conversations(rm, args.rm_tokenizer, convs)  # noqa: E731
    mine, theirs = await asyncio.gather(generate(model, prompts, args), generate(reference, prompts, args))

    def conversations(generated):
        keep = [i for i, g in enumerate(generated) if g["text"] is not None]
        return keep, [prompts[i]["prompt"] + [{"role": "assistant", "content": generated[i]["text"]}] for i in keep]

    (mine_idx, mine_convs), (ref_idx, ref_convs) = conversations(mine), conversations(theirs)
    mine_scores, ref_scores = await asyncio.gather(score(mine_convs), score(ref_convs))
    mine_reward = dict(zip(mine_idx, mine_scores))
    ref_reward = dict(zip(ref_idx, ref_scores))
    records = []
    for i, p in enumerate(prompts):
        records.append({
            "prompt_id": p["prompt_id"], "prompt": p["prompt"],
            "model_text": mine[i]["text"], "reference_text": theirs[i]["text"],
            "model_tokens": mine[i]["tokens"], "reference_tokens": theirs[i]["tokens"],
            "model_reward": mine_reward.get(i), "reference_reward": ref_reward.get(i),
            "model_error": mine[i]["error"], "reference_error": theirs[i]["error"],
        })  # fmt: skip
    summary = winrate.summarize(records, tie_band=args.tie_band, confidence=args.confidence, seed=args.bootstrap_seed,
                                min_judged_pairs=args.min_judged_pairs)
    summary["generation_failures"] = {
        "model": sum(m["text"] is None for m in mine), "reference": sum(t["text"] is None for t in theirs)
    }
    summary["settings"] = {
        "label": args.label, "model": args.model_name, "reference": args.reference_name,
        "reward_model": ({"hosted_judge": args.judge_url, "name": args.judge_model,
                          "template": args.judge_template_file or "the conversation itself",
                          "verdict": judge_options(args).preset.kind, "constrained": judge_options(args).constraints_on}
                         if args.judge_url else {"name": args.rm_name, "dir": str(args.rm_tokenizer)}),
        "max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
        "prompts": str(args.prompts),
    }  # fmt: skip
    summary["judge"] = describe_judge(args)
    return records, summary


def judge_options(args: argparse.Namespace) -> JudgeOptions:
    """The hosted judge's template, verdict preset and constraint from the command line (a bad
    template or option is a ``RewardOptionsError``)."""
    from verl.utils.reward_score.options import parse_options

    raw = {"template_file": args.judge_template_file, "verdict": args.judge_verdict,
           "score_max": args.judge_score_max, "option_scores": args.judge_option_scores,
           "constrained": args.judge_constrained, "max_tokens": args.judge_max_tokens,
           "reasoning_chars": args.judge_reasoning_chars}
    return parse_options(JudgeOptions, {k: v for k, v in raw.items() if v is not None})


JUDGE_RELATIONS = ("independent", "training_reward", "unknown")


def describe_judge(args: argparse.Namespace) -> dict[str, Any]:
    """Who scored the pairs, for the report: a served reward model (its name and directory) or a
    served judge (its URL and model), how the caller describes it (``--judge-description``), and its
    relation to the reward the evaluated model was trained against (``--judge-relation``)."""
    if args.judge_url:
        judge = {"kind": "served_judge", "name": args.judge_model, "url": args.judge_url}
    else:
        judge = {"kind": "reward_model", "name": args.rm_name, "url": args.rm_url, "dir": str(args.rm_tokenizer)}
    words = {"independent": "independent of the training reward",
             "training_reward": "the reward the evaluated model was trained against: a reward-hacked model "
                                "scores a higher win rate here (opt-in only)",
             "unknown": "its relation to the training reward was not stated"}  # fmt: skip
    judge.update(relation=args.judge_relation, is_training_reward=args.judge_relation == "training_reward",
                 relation_words=words[args.judge_relation], description=args.judge_description)
    return judge


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verlkit.evaluation.winrate", description=__doc__.splitlines()[0])
    p.add_argument("--prompts", required=True, type=Path)
    p.add_argument("--model-url", required=True)
    p.add_argument("--model-name", default="policy")
    p.add_argument("--reference-url", required=True)
    p.add_argument("--reference-name", default="reference")
    p.add_argument("--rm-url", help="the served scalar reward model (/classify)")
    p.add_argument("--rm-name", default="reward_model")
    p.add_argument("--rm-tokenizer", help="the reward model's directory")
    p.add_argument("--judge-url", help="instead of --rm-url: a hosted reward judge answering 'reward:<float>'")
    p.add_argument("--judge-model", default=None)
    p.add_argument("--judge-api-key-env", default=None, help="NAME of the env var holding the judge's key")
    p.add_argument("--judge-rate-limit-rps", type=float, default=None)
    p.add_argument("--judge-template-file", default=None,
                   help="chat template ({question}, {response}) for a served LLM judge; default: the conversation")
    p.add_argument("--judge-verdict", default=None, help="reward_value (default), total_score, binary, option_letter")
    p.add_argument("--judge-score-max", type=int, default=None, help="total_score: the score's maximum (10)")
    p.add_argument("--judge-option-scores", default=None, help="option_letter: scores per letter, e.g. A=1,B=0")
    p.add_argument("--judge-constrained", choices=("auto", "true", "false"), default=None,
                   help="constrain the judge's reply to its verdict format (vLLM structured outputs); auto = off")
    p.add_argument("--judge-max-tokens", type=int, default=None, help="reply budget without a constraint (32)")
    p.add_argument("--judge-reasoning-chars", type=int, default=None,
                   help="reasoning characters a constrained judge reply may hold before its verdict line")
    p.add_argument("--judge-relation", choices=JUDGE_RELATIONS, default="unknown",
                   help="how the scorer relates to the reward the evaluated model was trained against "
                        "(training_reward: the report says the win rate is judged by the training reward)")
    p.add_argument("--judge-description", default=None, help="the scorer in words, for the report")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--label", default="model", help="name of the evaluated model in the report")
    p.add_argument("--limit", type=int, default=None)
    # the original's decoding (temperature 0.7, top_p 0.9, seeded); 0 = greedy
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tie-band", type=float, default=0.1)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--min-judged-pairs", type=int, default=MIN_JUDGED_PAIRS,
                   help="fewer compared prompts than this: the report says 'too few' instead of a win rate")
    add_tracker_arguments(p)
    return p


def _check_judge(args: argparse.Namespace) -> None:
    """The judge's options and template, and with a constraint one probe of the judge server,
    before any prompt is generated."""
    from verl.utils.reward_score.templated import SAMPLE_VALUES, probe_server

    options = judge_options(args)
    if options.constraint is not None:
        judge = rm_client(args.judge_url, args.judge_model, args.max_concurrency, args.timeout_s, args.max_retries,
                          args.judge_api_key_env, args.judge_rate_limit_rps)
        sample = [{"role": "user", "content": SAMPLE_VALUES["question"]},
                  {"role": "assistant", "content": SAMPLE_VALUES["response"]}]
        probe_server(judge, options.messages(sample), constraint=options.constraint, top_logprobs=None, reward="judge")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.judge_url) == bool(args.rm_url):
        parser.error("score with exactly one of --rm-url (+ --rm-tokenizer) or --judge-url (+ --judge-model)")
    if (args.rm_url and not args.rm_tokenizer) or (args.judge_url and not args.judge_model):
        parser.error("--rm-url needs --rm-tokenizer; --judge-url needs --judge-model")
    from verlkit.evaluation import winrate_stats as winrate

    try:
        if args.judge_url:
            _check_judge(args)
        records, summary = run_sync(evaluate(args))
    except ValueError as e:  # also RewardOptionsError: a bad judge template or a server refusing its constraint
        print(f"eval_winrate: {e}", file=sys.stderr)
        return 2
    finally:
        close_session()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "predictions.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (args.out / "winrate.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_path = winrate.plot(summary, winrate.reward_differences(records), args.out / "winrate.png")
    print(console_line(summary) + f" -> {args.out / 'winrate.json'}")
    log_evaluation(tracker_settings(args, f"winrate-{args.label}", args.out), tracked_metrics(summary),
                   {"winrate": plot_path}, summary["settings"])  # fmt: skip
    return 0 if summary.get("n_compared") else 1


def console_line(summary: dict[str, Any]) -> str:
    """The evaluation in one line: win/tie/loss and the mean difference, or ``too few (n=...)`` in
    their place; the judge and whether it is the training reward."""
    s, judge = summary, summary.get("judge") or {}
    few = s.get("n_compared") if s.get("too_few") else None
    fmt = lambda v: shown(v, few)  # noqa: E731
    ci = s.get("ci") or [None, None]
    return (f"{s['settings']['label']} vs {s['settings']['reference']}: n={s.get('n_compared')} of "
            f"{s.get('n_prompts')} compared; win {fmt(s.get('win_rate'))} tie {fmt(s.get('tie_rate'))} "
            f"loss {fmt(s.get('loss_rate'))}; mean reward difference {fmt(s.get('mean_reward_difference'))} "
            f"CI [{fmt(ci[0])}, {fmt(ci[1])}]; judge {judge.get('name')}: {judge.get('relation_words')}")


def tracked_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """What the tracker gets: the summary's numbers, the CI's ends, the failures and the judge."""
    keys = ("n_prompts", "n_compared", "scoring_failures", "win_rate", "tie_rate", "loss_rate", "mean_model_reward",
            "mean_reference_reward", "mean_reward_difference", "length_ratio_tokens", "length_ratio_words",
            "too_few", "too_few_reason", "generation_failures")
    ci = summary.get("ci") or [None, None]
    judge = summary.get("judge") or {}
    return {**{k: summary.get(k) for k in keys}, "ci_low": ci[0], "ci_high": ci[1],
            "judge": {"name": judge.get("name"), "kind": judge.get("kind"), "relation": judge.get("relation"),
                      "is_training_reward": judge.get("is_training_reward")}}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
