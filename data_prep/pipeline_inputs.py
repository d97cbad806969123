"""Reading the SFT → DPO → RLOO pipeline's inputs (``data_prep.pipeline``): SmolTalk-style chats and
UltraFeedback-style preference records parsed into :class:`Chat` and :class:`PreferencePair`, and the
cleaning that drops repeated prompts and pairs without a preference. Pure: a record in, a parsed value
or an ``InputError`` (file, record, field) out.

* SmolTalk-style chats: ``messages`` = ``[{role, content}, ...]`` with roles system (first turn
  only), user and assistant; the first non-system turn is the user's and the chat ends with an
  assistant turn.
* UltraFeedback-binarized-style preferences: ``prompt`` (str), optional ``prompt_id`` (else the
  sha256 of the prompt text), ``chosen`` and ``rejected`` (each the FULL conversation: the prompt
  turns followed by the final assistant reply), optional ``score_chosen``/``score_rejected``.
  The final assistant turn is the reply; the turns before it are the prompt, and chosen and
  rejected must share exactly the same prompt turns. (The original put the whole list, prompt
  included, where the reply goes, so the prompt was trained on twice: reference-methods §5.7.)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from data_prep.common import text_sha256
from verlkit.records import InputError, normalize_text, require_field, require_messages


# ---------------------------------------------------------------------------------------------
# Parsed records. ``source``/``index`` are the input file and the record's 0-based index in it.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chat:
    source: str
    index: int
    messages: list[dict[str, str]]

    def user_texts(self) -> set[str]:
        return {normalize_text(m["content"]) for m in self.messages if m["role"] == "user"}


@dataclass(frozen=True)
class PreferencePair:
    source: str
    index: int
    prompt_id: str
    prompt_text: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    score_chosen: float
    score_rejected: float

    def user_texts(self) -> set[str]:
        return {normalize_text(m["content"]) for m in self.prompt if m["role"] == "user"}


# ---------------------------------------------------------------------------------------------
# Parsing (pure: a record in, a parsed value or an InputError out)
# ---------------------------------------------------------------------------------------------
def parse_chat(record: dict[str, Any], *, source: str, index: int) -> Chat:
    """A SmolTalk-style record -> :class:`Chat`; an InputError names file, record and field."""
    messages = require_messages(record, "messages", file=source, entry=index)
    fail = functools.partial(InputError, file=source, entry=index, field="messages")
    roles = [m["role"] for m in messages]
    for position, role in enumerate(roles):
        if role == "system" and position != 0:
            raise InputError("a system turn is only allowed first", file=source, entry=index,
                             field=f"messages[{position}].role")
    conversation = roles[1:] if roles[0] == "system" else roles
    if not conversation or conversation[0] != "user":
        first = conversation[0] if conversation else "nothing"
        raise fail(f"the conversation must start with a user turn, starts with {first!r}")
    if "assistant" not in roles:
        raise fail(f"has no assistant turn, so there is nothing to train on (roles: {', '.join(roles)})")
    if roles[-1] != "assistant":
        # A trailing user turn has no reply: it would be a prompt with no target.
        raise fail(f"must end with an assistant turn, ends with {roles[-1]!r}")
    return Chat(source, index, messages)


def split_prompt_and_reply(messages: list[dict[str, str]], *, file: str, entry: int,
                           field: str) -> tuple[list[dict[str, str]], str]:
    """An UltraFeedback ``chosen``/``rejected`` message list -> (prompt turns, final reply text);
    ``file``, ``entry`` and ``field`` locate the errors."""
    fail = functools.partial(InputError, file=file, entry=entry, field=field)
    if messages[-1]["role"] != "assistant":
        raise fail(f"the last turn must be the assistant's reply, got role {messages[-1]['role']!r}")
    prompt = messages[:-1]
    if not prompt:
        raise fail("only a reply, no prompt turns before it")
    if prompt[-1]["role"] != "user":
        raise InputError(f"the turn before the reply must be the user's, got {prompt[-1]['role']!r}", file=file,
                         entry=entry, field=f"{field}[{len(prompt) - 1}].role")
    return prompt, messages[-1]["content"]


def _optional_score(record: dict[str, Any], name: str, *, source: str, index: int) -> float:
    value = record.get(name)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected a number, got {type(value).__name__}", file=source, entry=index, field=name)
    if math.isinf(value):
        raise InputError(f"not a finite number: {value!r}", file=source, entry=index, field=name)
    return float(value)


def _first_difference(a: list[dict[str, str]], b: list[dict[str, str]]) -> int:
    for position, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return position
    return min(len(a), len(b))


def parse_preference(record: dict[str, Any], *, source: str, index: int) -> PreferencePair:
    """An UltraFeedback-style record -> :class:`PreferencePair`; an InputError names file, record and field."""
    at = {"file": source, "entry": index}
    prompt_text = require_field(record, "prompt", **at)
    chosen_prompt, chosen = split_prompt_and_reply(require_messages(record, "chosen", **at), **at, field="chosen")
    rejected_prompt, rejected = split_prompt_and_reply(require_messages(record, "rejected", **at), **at,
                                                       field="rejected")
    if chosen_prompt != rejected_prompt:
        turn = _first_difference(chosen_prompt, rejected_prompt)
        raise InputError(f"its prompt turns differ from chosen's (first difference at turn {turn}); both must be "
                         "the same conversation followed by a different final reply", **at, field="rejected")
    # The prompt string must be one of the conversation's user turns; otherwise the record mixes
    # up two conversations and the pair is not a preference about this prompt.
    if prompt_text.strip() not in {m["content"].strip() for m in chosen_prompt if m["role"] == "user"}:
        raise InputError("does not match any user turn of chosen/rejected", **at, field="prompt")
    raw_id = record.get("prompt_id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        prompt_id = text_sha256(prompt_text)
    elif isinstance(raw_id, str):
        prompt_id = raw_id
    else:
        raise InputError(f"expected str, got {type(raw_id).__name__}", **at, field="prompt_id")
    return PreferencePair(
        source=source, index=index, prompt_id=prompt_id, prompt_text=prompt_text, prompt=chosen_prompt,
        chosen=chosen, rejected=rejected,
        score_chosen=_optional_score(record, "score_chosen", source=source, index=index),
        score_rejected=_optional_score(record, "score_rejected", source=source, index=index),
    )


def parse_all(records: Sequence[dict[str, Any]], parse, *, source: str, skip_invalid: bool) -> tuple[list, list[str]]:
    """Parse every record; with ``skip_invalid`` a bad record is skipped and its problem returned."""
    parsed, problems = [], []
    for index, record in enumerate(records):
        try:
            parsed.append(parse(record, source=source, index=index))
        except InputError as e:
            if not skip_invalid:
                raise
            problems.append(str(e))
    if not parsed:
        raise InputError("no usable records" + (f" ({len(problems)} invalid)" if problems else ""), file=source)
    return parsed, problems


# ---------------------------------------------------------------------------------------------
# Cleaning (pure)
# ---------------------------------------------------------------------------------------------
def drop_duplicate_prompts(pairs: Iterable[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Keep the first record of each prompt (same prompt_id or same prompt text); count the rest.

    The original sampled prompts with repetition, so one prompt could be trained on many times and
    a test prompt could count twice."""
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    kept, dropped = [], 0
    for pair in pairs:
        text = normalize_text(pair.prompt_text)
        if pair.prompt_id in seen_ids or text in seen_texts:
            dropped += 1
            continue
        seen_ids.add(pair.prompt_id)
        seen_texts.add(text)
        kept.append(pair)
    return kept, dropped


def drop_identical_replies(pairs: Sequence[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Drop (and count) pairs whose chosen and rejected replies are the same text: they carry no
    preference, and a DPO or reward-model loss on them only adds noise."""
    kept = [p for p in pairs if p.chosen.strip() != p.rejected.strip()]
    return kept, len(pairs) - len(kept)
