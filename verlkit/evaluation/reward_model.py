"""Score conversations with a served scalar reward model, and its pairwise accuracy on held-out pairs.

The reward model is a ``*ForSequenceClassification`` served by vLLM for ``/classify`` (launcher
``task="classify"``). Conversations are rendered with the reward model's chat template and sent as
token ids, exactly as the ``scalar_rm`` training reward does, through the shared client (bounded
concurrency, timeouts, retries). A row the server could not score is excluded and counted, never
scored as 0.

CLI (pairwise accuracy of ``prefs/test.parquet`` from ``data_prep.pipeline``; any file
``verlkit.records.read_records`` reads, a bad row is an ``InputError`` naming file, record and field)::

    python -m verlkit.evaluation.reward_model --pairs prefs/test.parquet --rm-url http://127.0.0.1:PORT/v1 \\
        --rm-name reward_model --rm-tokenizer RM_DIR --out rm_eval.json

writes ``{"n_pairs", "n_scored", "scoring_failures", "accuracy", "ties", "mean_margin",
"mean_chosen", "mean_rejected", "pairs": [...]}``; exits 1 when no pair could be scored. The
summary (without the pairs) also goes to the experiment tracker (``--tracker wandb``:
``verlkit.evaluation.tracking``).

A hosted judge (``judge_conversations``) is sent the conversation itself and answers
``reward:<float>`` (the default :class:`JudgeOptions`), or, with ``template_file``, a chat template
filled with {question} (the conversation's user turns) and {response} (the reply being judged),
whose answer a verdict preset reads (``verdict``: reward_value, total_score, binary, option_letter),
optionally under a structured-output constraint (``constrained=true``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

from pydantic import model_validator

from verlkit.clients.llm import close_session, get_client
from verlkit.clients.loop import run_sync
from verlkit.clients.settings import ClientSettings
from verlkit.clients.structured import StructuredOutput
from verlkit.evaluation.tracking import add_tracker_arguments, log_evaluation, tracker_settings
from verlkit.records import InputError, chat_messages, read_records
from verlkit.templates import ChatTemplate, load_template
from verl.utils.reward_score.options import RewardOptions
from verl.utils.reward_score.templated import (
    TemplateSettings,
    VerdictSettings,
    ask,
    reasoning_chars_for,
    resolve_preset,
)
from verl.utils.reward_score.verdict_parsers import find_reward_value
from verl.utils.reward_score.verdicts import VerdictPreset


def rm_client(url: str, name: str, max_concurrency: int = 32, timeout_s: float = 60.0, max_retries: int = 3,
              api_key_env: str | None = None, rate_limit_rps: float | None = None):  # fmt: skip
    settings = ClientSettings(url=url, model=name, api_key_env=api_key_env, max_concurrency=max_concurrency,
                              timeout_s=timeout_s, max_retries=max_retries, rate_limit_rps=rate_limit_rps)
    return get_client(settings.client_config())


async def score_conversations(client, tokenizer_dir: str, conversations: list[list[dict]]) -> list[float | None]:
    """The reward of each conversation (its last turn is the assistant reply), None where scoring failed."""
    from verl.utils.reward_score.scalar_rm import conversation_ids, load_tokenizer

    tokenizer = load_tokenizer(str(tokenizer_dir))
    done = await asyncio.gather(*(client.classify(conversation_ids(tokenizer, conv)) for conv in conversations))
    return [d.value if d.ok else None for d in done]


JUDGE_FILLABLE = frozenset({"question", "response"})


def parse_reward_reply(text: str | None) -> float | None:
    """The number after the last ``reward:`` in a judge's reply, or None (never a silent 0). A hosted
    reward judge (NVIDIA's llama-3.1-nemotron-70b-reward, the original's evaluator) answers so."""
    found = find_reward_value(text)
    return None if found is None else found[0]


class JudgeOptions(RewardOptions, TemplateSettings, VerdictSettings):
    """How a hosted judge is asked and read. Without ``template_file`` it is sent the conversation
    itself; ``verdict`` defaults to ``reward_value`` (``reward:<float>``)."""

    reward_name: ClassVar[str] = "judge"
    max_tokens: int = 32

    @model_validator(mode="after")
    def _fits(self) -> "JudgeOptions":
        if self.verdict_mode != "label":
            raise ValueError("the win-rate judge reads labels only (verdict_mode=label)")
        _ = self.constraint
        return self

    @functools.cached_property
    def chat_template(self) -> ChatTemplate | None:
        if not self.template_file:
            return None
        template = load_template(self.template_file)
        template.check(reward="judge", fillable=JUDGE_FILLABLE, required=[{"response"}])
        return template

    @functools.cached_property
    def preset(self) -> VerdictPreset:
        if self.chat_template is None:
            return VerdictPreset(self.verdict or "reward_value", score_max=self.score_max or 10,
                                 option_scores=tuple((self.option_scores or {}).items()), invalid=self.invalid)
        return resolve_preset(self, self.chat_template, is_think_model=False, default="reward_value")

    @functools.cached_property
    def constraint(self) -> StructuredOutput | None:
        if not self.constraints_on:
            return None
        return self.preset.constraint(reasoning_chars_for(self, self.preset.kind, False))

    def messages(self, conversation: list[dict]) -> list[dict]:
        """What the judge is sent for one conversation (its last turn is the reply being judged)."""
        if self.chat_template is None:
            return conversation
        question = "\n\n".join(m["content"].strip() for m in conversation[:-1] if m["role"] == "user")
        return self.chat_template.render(question=question, response=conversation[-1]["content"].strip())


async def judge_conversations(client, conversations: list[list[dict]], max_tokens: int = 32,
                              options: JudgeOptions | None = None) -> list[float | None]:
    """Rewards from a hosted OpenAI-compatible judge, None where it failed or gave no verdict. With
    the default options the conversation is sent as chat messages and the reply parsed by
    :func:`parse_reward_reply`; ``options`` may set a template, a verdict preset and a constraint."""
    if options is None:
        done = await asyncio.gather(*(client.chat(conv, max_tokens=max_tokens, temperature=0.0)
                                      for conv in conversations))
        return [parse_reward_reply(d.text) if d.ok else None for d in done]
    done = await asyncio.gather(*(ask(client, options.messages(conv), constraint=options.constraint, reward="judge",
                                      max_tokens=options.max_tokens, temperature=0.0) for conv in conversations))
    return [options.preset.parse(d.text).value if d.ok else None for d in done]


def pairwise_report(chosen: list[float | None], rejected: list[float | None], ids: list[Any]) -> dict[str, Any]:
    """Accuracy = share of scored pairs with r_chosen > r_rejected (an exact tie is not correct and
    is counted in ``ties``); pairs with a failed side are excluded and counted."""
    pairs = [{"prompt_id": i, "chosen": c, "rejected": r} for i, c, r in zip(ids, chosen, rejected)]
    scored = [p for p in pairs if p["chosen"] is not None and p["rejected"] is not None]
    n = len(scored)
    margins = [p["chosen"] - p["rejected"] for p in scored]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {
        "n_pairs": len(pairs),
        "n_scored": n,
        "scoring_failures": len(pairs) - n,
        "accuracy": sum(m > 0 for m in margins) / n if n else None,
        "ties": sum(m == 0 for m in margins),
        "mean_margin": mean(margins),
        "mean_chosen": mean([p["chosen"] for p in scored]),
        "mean_rejected": mean([p["rejected"] for p in scored]),
        "pairs": pairs,
    }


async def evaluate_pairs(path: Path, client, tokenizer_dir: str, limit: int | None = None) -> dict[str, Any]:
    rows = read_records(path)[: limit or None]
    if not rows:
        raise InputError("no pairs", file=path)
    chosen_convs, rejected_convs = [], []
    for i, row in enumerate(rows):
        where = {"file": path, "entry": i}
        prompt = chat_messages(row.get("prompt"), "user", field="prompt", **where)
        chosen_convs.append(prompt + chat_messages(row.get("chosen"), "assistant", field="chosen", **where))
        rejected_convs.append(prompt + chat_messages(row.get("rejected"), "assistant", field="rejected", **where))
    chosen, rejected = await asyncio.gather(
        score_conversations(client, tokenizer_dir, chosen_convs), score_conversations(client, tokenizer_dir, rejected_convs)
    )
    return pairwise_report(chosen, rejected, [row.get("prompt_id", i) for i, row in enumerate(rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.evaluation.reward_model", description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True, type=Path)
    parser.add_argument("--rm-url", required=True)
    parser.add_argument("--rm-name", default="reward_model")
    parser.add_argument("--rm-tokenizer", required=True, help="the reward model's directory")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--max-concurrency", type=int, default=32)
    parser.add_argument("--timeout-s", type=float, default=60.0)
    add_tracker_arguments(parser)
    args = parser.parse_args(argv)

    client = rm_client(args.rm_url, args.rm_name, args.max_concurrency, args.timeout_s)
    try:
        report = run_sync(evaluate_pairs(args.pairs, client, args.rm_tokenizer, args.limit))
    except ValueError as e:
        print(f"eval_reward_model: {e}", file=sys.stderr)
        return 2
    finally:
        close_session()
    report["reward_model"] = {"url": args.rm_url, "name": args.rm_name, "dir": str(args.rm_tokenizer)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    acc = report["accuracy"]
    print(f"reward model pairwise accuracy on {report['n_scored']}/{report['n_pairs']} held-out pairs: "
          f"{'n/a' if acc is None else f'{acc:.3f}'} (failures: {report['scoring_failures']}) -> {args.out}")
    tracked = {k: v for k, v in report.items() if k not in ("pairs", "reward_model")}
    log_evaluation(tracker_settings(args, f"reward-model-{args.rm_name}", args.out.parent), tracked, {},
                   {"pairs": str(args.pairs), **report["reward_model"]})  # fmt: skip
    return 0 if report["n_scored"] else 1


if __name__ == "__main__":
    sys.exit(main())
