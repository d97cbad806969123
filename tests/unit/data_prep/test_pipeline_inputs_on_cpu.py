"""The pipeline's inputs (data_prep.pipeline_inputs): the UltraFeedback prompt/reply split, SmolTalk
chats, and records that name file, record and field when they are bad."""

from __future__ import annotations

import hashlib
import math

import pytest
from support.pipeline_records import pair, turn

from data_prep.pipeline_inputs import parse_chat, parse_preference
from verlkit.records import InputError


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------
def test_ultrafeedback_lists_split_into_prompt_turns_and_final_reply() -> None:
    conversation = [turn("system", "Be brief."), turn("user", "Hi"), turn("assistant", "Hello!"),
                    turn("user", "Name a colour.")]
    record = {"prompt": "Name a colour.", "prompt_id": "p1",
              "chosen": conversation + [turn("assistant", "Blue is a calm colour.")],
              "rejected": conversation + [turn("assistant", "No.")], "score_chosen": 9, "score_rejected": None}
    parsed = parse_preference(record, source="uf.jsonl", index=0)
    assert parsed.prompt == conversation  # earlier assistant turns stay in the prompt
    assert (parsed.chosen, parsed.rejected) == ("Blue is a calm colour.", "No.")
    assert parsed.prompt_id == "p1" and parsed.score_chosen == 9.0 and math.isnan(parsed.score_rejected)

    without_id = parse_preference(pair("What is tea?"), source="uf.jsonl", index=1)
    assert without_id.prompt_id == hashlib.sha256("What is tea?".encode()).hexdigest()
    assert math.isnan(without_id.score_chosen)


@pytest.mark.parametrize("change, expected", [
    (lambda r: r["rejected"].__setitem__(0, turn("user", "Something else")),
     "uf.jsonl: record 3: rejected: its prompt turns differ from chosen's (first difference at turn 0)"),
    (lambda r: r["rejected"].insert(0, turn("system", "Be rude.")),
     "uf.jsonl: record 3: rejected: its prompt turns differ from chosen's"),
    (lambda r: r["chosen"].append(turn("user", "and?")),
     "uf.jsonl: record 3: chosen: the last turn must be the assistant's reply, got role 'user'"),
    (lambda r: r["chosen"].pop(0), "uf.jsonl: record 3: chosen: only a reply, no prompt turns before it"),
    (lambda r: r.__setitem__("prompt", "A different question"),
     "uf.jsonl: record 3: prompt: does not match any user turn of chosen/rejected"),
    (lambda r: r["chosen"][1].__setitem__("role", "bot"), "uf.jsonl: record 3: chosen[1].role: must be one of"),
    (lambda r: r["rejected"][1].__setitem__("content", "  "), "uf.jsonl: record 3: rejected[1].content: empty"),
    (lambda r: r.__setitem__("chosen", "a plain string"), "uf.jsonl: record 3: chosen: expected a list of chat messages"),
    (lambda r: r.__setitem__("score_chosen", "high"), "uf.jsonl: record 3: score_chosen: expected a number, got str"),
    (lambda r: r.__setitem__("prompt_id", 17), "uf.jsonl: record 3: prompt_id: expected str, got int"),
    (lambda r: r.pop("prompt"), "uf.jsonl: record 3: prompt: missing or empty"),
])
def test_bad_preference_records_name_file_record_and_field(change, expected) -> None:
    record = pair("What is tea?")
    change(record)
    with pytest.raises(InputError) as raised:
        parse_preference(record, source="uf.jsonl", index=3)
    assert str(raised.value).startswith(expected), str(raised.value)


@pytest.mark.parametrize("messages, expected", [
    ([turn("user", "hi")], "chats.jsonl: record 5: messages: has no assistant turn"),
    ([turn("user", "hi"), turn("assistant", "hello"), turn("user", "bye")],
     "chats.jsonl: record 5: messages: must end with an assistant turn, ends with 'user'"),
    ([turn("assistant", "hello")], "chats.jsonl: record 5: messages: the conversation must start with a user turn"),
    ([turn("user", "hi"), turn("system", "x"), turn("assistant", "hello")],
     "chats.jsonl: record 5: messages[1].role: a system turn is only allowed first"),
    ([], "chats.jsonl: record 5: messages: empty list of messages"),
])
def test_bad_chats_name_file_record_and_field(messages, expected) -> None:
    with pytest.raises(InputError) as raised:
        parse_chat({"messages": messages}, source="chats.jsonl", index=5)
    assert str(raised.value).startswith(expected), str(raised.value)


def test_valid_chat_with_system_turn_and_two_exchanges() -> None:
    messages = [turn("system", "Be kind."), turn("user", "a"), turn("assistant", "b"), turn("user", "c"),
                turn("assistant", "d")]
    extra_keys = [dict(m, name="x") for m in messages]  # extra keys are dropped, not passed on
    assert parse_chat({"messages": extra_keys}, source="c.jsonl", index=0).messages == messages
