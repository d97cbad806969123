"""``ultrafeedback`` / ``*_rm``: the reward of a chat response from a served scalar reward model.

The reward model is a ``*ForSequenceClassification`` with one output (trained by the preference
trainer with ``preference.loss=bt`` and exported by ``verlkit.preference.export``), served by
vLLM for ``/classify`` (the launcher's ``task="classify"``). The conversation ``prompt + [assistant:
response]`` is rendered with the reward model's own chat template and sent as TOKEN IDS, so the
served model scores exactly the sequence layout it was trained on (a text would be re-tokenized by
the server, which may add special tokens). The prompt comes from ``extra_info["prompt_messages"]``
(verl does not pass the prompt to reward functions).

Result: ``score`` = the raw head output (no activation), ``rm_score`` the same, ``rm_ok`` = 1.
Failures never crash training and are never a silent 0: a reward model the client could not reach
after its bounded retries (or that rejected the request, e.g. a sequence longer than its context)
sets ``rm_ok = 0`` and ``rm_failed = 1`` (counted in the step metrics) and the row scores
``on_failure`` (default 0.0; ``"raise"`` turns it into a registry-level ``reward_error``).

Options (``+reward.custom_reward_function.reward_kwargs.scalar_rm.<option>=...``): see
``ScalarRMOptions``: ``url`` (required), ``model`` (served name), ``tokenizer`` (the reward model
directory; required), ``on_failure`` and the other client settings (``max_concurrency``,
``timeout_s``, ``max_retries``, ``api_key_env``, ...). When verl runs the reward model
(``reward.reward_model.enable=True``) and no ``url`` is given, requests go to verl's reward router,
and ``model``/``tokenizer`` default to ``reward.reward_model.model_path``.
Importing this module does no I/O; the tokenizer and the HTTP client are created on first use.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Literal

from pydantic import Field

from verlkit.clients.llm import get_client
from verlkit.clients.routing import router_model_name
from verlkit.clients.settings import ClientSettings
from verl.utils.reward_score.options import RewardOptions, parse_served_options


class RewardModelError(RuntimeError):
    """The served reward model could not score a row (raised only with ``on_failure="raise"``)."""


class ScalarRMOptions(RewardOptions, ClientSettings):
    """``reward_kwargs.scalar_rm.*``: the served reward model (``url`` required) and its directory."""

    reward_name: ClassVar[str] = "scalar_rm"

    model: str = Field("reward_model", min_length=1)
    tokenizer: str = Field(min_length=1)  # the reward model's directory (its chat template)
    on_failure: Literal["raise"] | float = 0.0  # the score of a row the reward model could not score


def conversation(extra_info: dict[str, Any] | None, response: str) -> list[dict[str, str]]:
    """``extra_info["prompt_messages"]`` followed by the response as the assistant turn."""
    messages = (extra_info or {}).get("prompt_messages")
    if messages is None or isinstance(messages, (str, bytes)) or len(messages) == 0:
        raise ValueError("extra_info.prompt_messages: missing or empty (the prompt's chat messages)")
    out = []
    for i, m in enumerate(list(messages)):
        try:
            out.append({"role": str(m["role"]), "content": str(m["content"])})
        except (TypeError, KeyError):
            raise ValueError(f"extra_info.prompt_messages[{i}]: expected a {{role, content}} message, got {m!r}") from None
    return out + [{"role": "assistant", "content": response}]


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str):
    """The tokenizer of a reward model directory, loaded once per process."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def conversation_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of a whole conversation, rendered by the tokenizer's chat template (as in training)."""
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=False, tokenize=True)
    if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    return [int(t) for t in out]


def validate_row(row: dict) -> list[str]:
    """The row check of the ``scalar_rm`` family (``data_prep.validate`` calls it through the registry)."""
    try:
        conversation(row.get("extra_info"), "")
    except ValueError as e:
        return [str(e)]
    return []


def served_options(options: dict[str, Any], reward_router_address: str | None = None,
                   reward_model_tokenizer: Any = None) -> ScalarRMOptions:
    """The parsed options; when verl runs the reward model and no ``tokenizer`` is given, the
    directory verl loaded the reward model's tokenizer from is the one to render with."""
    if reward_model_tokenizer is not None and not options.get("tokenizer"):
        options = {**options, "tokenizer": router_model_name(reward_model_tokenizer)}
    return parse_served_options(ScalarRMOptions, options, reward_router_address, reward_model_tokenizer)


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_router_address=None,
                        reward_model_tokenizer=None, **options) -> dict[str, float]:
    opts = served_options(options, reward_router_address, reward_model_tokenizer)
    ids = conversation_ids(load_tokenizer(opts.tokenizer), conversation(extra_info, solution_str or ""))
    done = await get_client(opts.client_config()).classify(ids)
    common = {"latency_s": float(done.latency_s)}
    if not done.ok:
        if opts.on_failure == "raise":
            raise RewardModelError(f"reward model {opts.model!r} at {opts.url}: {done.error}")
        return {"score": float(opts.on_failure), "acc": math.nan, "rm_ok": 0.0, "rm_failed": 1.0,
                "rm_score": math.nan, **common}  # fmt: skip
    return {"score": done.value, "acc": math.nan, "rm_ok": 1.0, "rm_failed": 0.0, "rm_score": done.value, **common}
