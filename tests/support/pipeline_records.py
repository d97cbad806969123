"""Hand-written records in the pipeline's input formats (SmolTalk chats, UltraFeedback pairs), shared
by the data-prep tests of the SFT → DPO → RLOO pipeline."""

from __future__ import annotations


def turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def pair(prompt: str, chosen: str = "A helpful and kind answer.", rejected: str = "No idea.", **fields) -> dict:
    record = {"prompt": prompt, "chosen": [turn("user", prompt), turn("assistant", chosen)],
              "rejected": [turn("user", prompt), turn("assistant", rejected)]}
    record.update(fields)
    return record


def chat(user: str, reply: str = "Sure, here is how.") -> dict:
    return {"messages": [turn("user", user), turn("assistant", reply)]}
