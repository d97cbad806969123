"""Win rate of a trained model against a reference model, judged by a served scalar reward model.

For every held-out prompt (``eval/prompts.parquet`` of ``data_prep.pipeline``): both models answer
through their servers' chat endpoints (each server applies its own chat template), the reward model
scores both (prompt, response) conversations — or, with ``--judge-url``, a hosted OpenAI-compatible
reward judge does (e.g. NVIDIA's nemotron-70b-reward, the original's evaluator: the reply carries
``reward:<float>``; key from the environment variable named by ``--judge-api-key-env``, requests
rate-limited by ``--judge-rate-limit-rps``) — and ``verlkit.evaluation.winrate_stats.summarize`` reports win /
tie / loss with an explicit tie band, mean rewards, the mean reward difference with a bootstrap
confidence interval, and the length ratio in tokens (the servers' ``completion_tokens``) and words.
A generation or scoring failure (after the shared client's bounded retries) excludes the prompt from
the comparison and is counted; it is never scored as 0.

CLI::

    python -m verlkit.evaluation.winrate --prompts eval/prompts.parquet \\
        --model-url URL --model-name policy --reference-url URL --reference-name reference \\
        --rm-url URL --rm-name reward_model --rm-tokenizer RM_DIR --out DIR [--label dpo]

writes ``DIR/predictions.jsonl`` (one line per prompt: both responses, token counts, rewards),
``DIR/winrate.json`` (the summary and the settings) and ``DIR/winrate.png``.
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
from verlkit.evaluation.reward_model import judge_conversations, rm_client, score_conversations
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
        score = lambda convs: judge_conversations(judge, convs)  # noqa: E731
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
    summary = winrate.summarize(records, tie_band=args.tie_band, confidence=args.confidence, seed=args.bootstrap_seed)
    summary["generation_failures"] = {
        "model": sum(m["text"] is None for m in mine), "reference": sum(t["text"] is None for t in theirs)
    }
    summary["settings"] = {
        "label": args.label, "model": args.model_name, "reference": args.reference_name,
        "reward_model": ({"hosted_judge": args.judge_url, "name": args.judge_model} if args.judge_url
                         else {"name": args.rm_name, "dir": str(args.rm_tokenizer)}),
        "max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p, "seed": args.seed,
        "prompts": str(args.prompts),
    }  # fmt: skip
    return records, summary


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
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.judge_url) == bool(args.rm_url):
        parser.error("score with exactly one of --rm-url (+ --rm-tokenizer) or --judge-url (+ --judge-model)")
    if (args.rm_url and not args.rm_tokenizer) or (args.judge_url and not args.judge_model):
        parser.error("--rm-url needs --rm-tokenizer; --judge-url needs --judge-model")
    from verlkit.evaluation import winrate_stats as winrate

    try:
        records, summary = run_sync(evaluate(args))
    except ValueError as e:
        print(f"eval_winrate: {e}", file=sys.stderr)
        return 2
    finally:
        close_session()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "predictions.jsonl", "w") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    (args.out / "winrate.json").write_text(json.dumps(summary, indent=2) + "\n")
    compared = [r for r in records if r["model_reward"] is not None and r["reference_reward"] is not None]
    winrate.plot(summary, [r["model_reward"] - r["reference_reward"] for r in compared], args.out / "winrate.png")
    wtl = summary.get("win_tie_loss", summary)
    print(f"{args.label} vs {args.reference_name}: n={summary.get('n_compared')} win {wtl.get('win_rate')} "
          f"tie {wtl.get('tie_rate')} loss {wtl.get('loss_rate')}; mean reward difference "
          f"{summary.get('mean_reward_difference')} CI {summary.get('ci')} -> {args.out / 'winrate.json'}")
    return 0 if summary.get("n_compared") else 1


if __name__ == "__main__":
    sys.exit(main())
