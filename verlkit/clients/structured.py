"""vLLM structured outputs and token log-probabilities: the request fields and how to read the reply.

- :class:`StructuredOutput`: a choice list or a regular expression that vLLM's structured-output
  backend (xgrammar by default) enforces while decoding, sent as the request field
  ``structured_outputs`` (vLLM >= 0.10's name; older servers took ``guided_choice``/``guided_regex``
  and silently ignore the new field, which is why rewards probe a server before relying on it).
  ``admits`` is what the server enforces: ``re.fullmatch`` of the whole reply, or membership in the
  choice list.
- :func:`logprob_fields` asks for the top log-probabilities of every generated token in the same
  generation; :func:`generated_tokens` reads them back from a chat reply.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

STRUCTURED_OUTPUTS_FIELD = "structured_outputs"


@dataclass(frozen=True)
class StructuredOutput:
    """Exactly one of ``regex`` and ``choice``, and a ``max_tokens`` that lets the longest reply the
    constraint admits finish (a reply cut at max_tokens would not match it)."""

    max_tokens: int
    regex: str | None = None
    choice: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.regex is None) == (self.choice is None):
            raise ValueError("a StructuredOutput is either a regex or a choice list")
        if self.choice is not None and not all(isinstance(c, str) and c for c in self.choice):
            raise ValueError(f"choices must be non-empty strings, got {self.choice!r}")
        if self.regex is not None:
            re.compile(self.regex)  # a regex Python cannot compile is our bug, not the server's
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def request_fields(self) -> dict[str, Any]:
        """The body fields (besides ``max_tokens``) of a vLLM chat/completions request."""
        if self.choice is not None:
            return {STRUCTURED_OUTPUTS_FIELD: {"choice": list(self.choice)}}
        return {STRUCTURED_OUTPUTS_FIELD: {"regex": self.regex}}

    def admits(self, text: str) -> bool:
        """Whether the server may return ``text`` under this constraint."""
        if self.choice is not None:
            return text in self.choice
        return re.fullmatch(self.regex, text) is not None

    def describe(self) -> str:
        return f"choice {list(self.choice)}" if self.choice is not None else f"regex {self.regex!r}"


def logprob_fields(top_logprobs: int) -> dict[str, Any]:
    """Request fields for the ``top_logprobs`` most likely tokens at every generated position."""
    return {"logprobs": True, "top_logprobs": int(top_logprobs)}


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token: its text, its bytes (what the text is decoded from), and the top
    alternatives at its position as ``{text: probability}`` (the generated token included)."""

    text: str
    raw: bytes
    top: dict[str, float]


def _token_bytes(entry: dict) -> bytes:
    raw = entry.get("bytes")
    if isinstance(raw, list) and all(isinstance(b, int) for b in raw):
        return bytes(raw)
    return str(entry.get("token") or "").encode("utf-8")


def generated_tokens(body: dict | None) -> list[GeneratedToken] | None:
    """The generated tokens of a chat reply's first choice with their top alternatives, or None
    when the reply carries no log-probabilities."""
    try:
        content = body["choices"][0]["logprobs"]["content"]  # type: ignore[index]
    except (TypeError, KeyError, IndexError):
        return None
    if not isinstance(content, list):
        return None
    tokens = []
    for entry in content:
        if not isinstance(entry, dict):
            return None
        top: dict[str, float] = {}
        for alt in entry.get("top_logprobs") or []:
            if isinstance(alt, dict) and isinstance(alt.get("logprob"), (int, float)):
                text = _token_bytes(alt).decode("utf-8", "replace")
                # two alternatives can decode to the same text (byte tokens): their mass adds up
                top[text] = top.get(text, 0.0) + math.exp(max(float(alt["logprob"]), -1e4))
        tokens.append(GeneratedToken(str(entry.get("token") or ""), _token_bytes(entry), top))
    return tokens


def finish_reason(body: dict | None) -> str | None:
    try:
        reason = body["choices"][0].get("finish_reason")  # type: ignore[index]
    except (TypeError, KeyError, IndexError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None
