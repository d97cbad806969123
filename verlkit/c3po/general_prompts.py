"""Out-of-scope ("general") prompts for C3PO, shared by every feedback, and the bundled asset paths.

Out-of-scope prompts are everyday chat that no feedback should change; the trainer keeps the
model's original answers to them. Accepted inputs:

- JSON lines in the LAION OIG ``unified_chip2.jsonl`` style, ``{"text": "<human>: ...\\n<bot>: ..."}``:
  the first human turn is the prompt;
- JSON lines with a ``prompt`` or ``instruction`` field (an Alpaca-style non-empty ``input`` is
  appended to the instruction after a blank line);
- a ``.json`` file holding a list of such objects;
- a ``.txt`` file with one prompt per line.

JSON files are read with ``verlkit.records.read_records``; every problem is a
``verlkit.records.InputError`` naming the file, the record and the field.

The bundled files live in this package (``verlkit/c3po/assets/``), so they resolve the same from a
source checkout and from an installed copy.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Iterable

from verlkit.records import InputError, normalize_text, read_records

__all__ = ["BUNDLED_FEEDBACKS", "BUNDLED_GENERAL_PROMPTS", "GENERAL_PROMPT_SUFFIXES", "load_general_prompts"]

logger = logging.getLogger("verlkit.c3po")

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED_GENERAL_PROMPTS = ASSETS / "general_prompts.jsonl"
BUNDLED_FEEDBACKS = ASSETS / "feedbacks.json"
GENERAL_PROMPT_SUFFIXES = (".jsonl", ".json", ".txt")

# The first human turn: after "<human>:" up to the next speaker tag (or the end).
_FIRST_HUMAN_TURN = re.compile(r"<human>:(.*?)(?=<bot>:|<human>:|\Z)", re.DOTALL)


def _string_field(record: dict[str, Any], field: str, file: Path, entry: int) -> str:
    value = record[field]
    if not isinstance(value, str):
        raise InputError(f"must be a string, got {type(value).__name__}", file=file, entry=entry, field=field)
    return value


def _prompt_of_record(record: dict[str, Any], file: Path, entry: int) -> str:
    for field in ("prompt", "instruction"):
        if field in record:
            value = _string_field(record, field, file, entry)
            extra = record.get("input") if field == "instruction" else None
            if isinstance(extra, str) and extra.strip():
                return f"{value.strip()}\n\n{extra.strip()}"
            return value
    if "text" in record:
        match = _FIRST_HUMAN_TURN.search(_string_field(record, "text", file, entry))
        if match is None:
            raise InputError("has no '<human>:' turn", file=file, entry=entry, field="text")
        return match.group(1)
    raise InputError(f"no 'prompt', 'instruction' or 'text' field (keys: {sorted(record)})", file=file, entry=entry)


def _read_prompts(path: Path) -> Iterable[str]:
    if path.suffix not in GENERAL_PROMPT_SUFFIXES:
        raise InputError("expected a .jsonl, .json or .txt file", file=path)
    if path.suffix == ".txt":  # one prompt per line: plain text, not records
        try:
            yield from path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read: {exc}", file=path) from None
        return
    for index, record in enumerate(read_records(path, list_key=None)):
        yield _prompt_of_record(record, path, index)


def load_general_prompts(path: str | Path, n: int | None = None, seed: int = 42) -> list[str]:
    """Distinct non-empty prompts of the file (``normalize_text`` decides what is distinct), shuffled
    with ``random.Random(seed)``, the first n (all for None). Fewer than n available is logged, not an error: the caller sees the count."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError(f"n must be a non-negative integer or None, got {n!r}")
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path)
    prompts: list[str] = []
    seen: set[str] = set()
    for raw in _read_prompts(path):
        prompt = raw.strip()
        key = normalize_text(prompt)
        if prompt and key not in seen:
            seen.add(key)
            prompts.append(prompt)
    # Dedupe before shuffling, in file order, so the result depends only on the file and the seed.
    random.Random(seed).shuffle(prompts)
    if n is not None and n > len(prompts):
        logger.warning("%s holds %d distinct prompts, %d were asked for", path, len(prompts), n)
    return prompts if n is None else prompts[:n]
