"""Out-of-scope ("general") prompts for C3PO, shared by every feedback, and the bundled asset paths.

Out-of-scope prompts are everyday chat that no feedback should change; the trainer keeps the
model's original answers to them. Accepted inputs:

- JSON lines in the LAION OIG ``unified_chip2.jsonl`` style, ``{"text": "<human>: ...\\n<bot>: ..."}``:
  the first human turn is the prompt;
- JSON lines with a ``prompt`` or ``instruction`` field (an Alpaca-style non-empty ``input`` is
  appended to the instruction after a blank line);
- a ``.json`` file holding a list of such objects or of strings;
- a ``.txt`` file with one prompt per line.
"""

from __future__ import annotations

import json
import logging
import random
import re
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterable

__all__ = ["BUNDLED_FEEDBACKS", "BUNDLED_GENERAL_PROMPTS", "GeneralPromptsError", "load_general_prompts"]

logger = logging.getLogger("verlkit.c3po")


def _assets_dir() -> Path:
    # data_prep ships next to this tree both in the repository and when installed; ask the import
    # system first (it knows where an installed copy lives), then fall back to the repository layout.
    spec = find_spec("data_prep")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "assets" / "c3po"
    return Path(__file__).resolve().parents[3] / "data_prep" / "assets" / "c3po"


_ASSETS = _assets_dir()
BUNDLED_GENERAL_PROMPTS = _ASSETS / "general_prompts.jsonl"
BUNDLED_FEEDBACKS = _ASSETS / "feedbacks.json"


class GeneralPromptsError(ValueError):
    """A bad general-prompts file; the message names the file and the line."""


# The first human turn: after "<human>:" up to the next speaker tag (or the end).
_FIRST_HUMAN_TURN = re.compile(r"<human>:(.*?)(?=<bot>:|<human>:|\Z)", re.DOTALL)


def _prompt_of_record(record: Any, where: str) -> str:
    if isinstance(record, str):
        return record
    if not isinstance(record, dict):
        raise GeneralPromptsError(f"{where}: expected a JSON object or string, got {type(record).__name__}")
    for field in ("prompt", "instruction"):
        if field in record:
            value = record[field]
            if not isinstance(value, str):
                raise GeneralPromptsError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
            extra = record.get("input") if field == "instruction" else None
            if isinstance(extra, str) and extra.strip():
                return f"{value.strip()}\n\n{extra.strip()}"
            return value
    if "text" in record:
        text = record["text"]
        if not isinstance(text, str):
            raise GeneralPromptsError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
        match = _FIRST_HUMAN_TURN.search(text)
        if match is None:
            raise GeneralPromptsError(f"{where}: field 'text' has no '<human>:' turn")
        return match.group(1)
    raise GeneralPromptsError(f"{where}: no 'prompt', 'instruction' or 'text' field (keys: {sorted(record)})")


def _read_prompts(path: Path) -> Iterable[str]:
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GeneralPromptsError(f"{path}: cannot read: {exc}") from None
    if path.suffix == ".txt":
        yield from content.splitlines()
        return
    if path.suffix == ".json":
        try:
            data = json.loads(content)
        except json.JSONDecodeError as exc:
            raise GeneralPromptsError(f"{path}: line {exc.lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(data, list):
            raise GeneralPromptsError(f"{path}: expected a JSON list of prompts, got {type(data).__name__}")
        for index, record in enumerate(data):
            yield _prompt_of_record(record, f"{path}: entry {index}")
        return
    if path.suffix != ".jsonl":
        raise GeneralPromptsError(f"{path}: expected a .jsonl, .json or .txt file")
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GeneralPromptsError(f"{path}: line {number}: not valid JSON: {exc.msg}") from None
        yield _prompt_of_record(record, f"{path}: line {number}")


def load_general_prompts(path: str | Path, n: int | None = None, seed: int = 42) -> list[str]:
    """Distinct non-empty prompts of the file, shuffled with ``random.Random(seed)``, the first n
    (all for None). Fewer than n available is logged, not an error: the caller sees the count."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError(f"n must be a non-negative integer or None, got {n!r}")
    path = Path(path)
    if not path.is_file():
        raise GeneralPromptsError(f"{path}: no such file")
    prompts: list[str] = []
    seen: set[str] = set()
    for raw in _read_prompts(path):
        prompt = raw.strip()
        key = " ".join(prompt.split())
        if prompt and key not in seen:
            seen.add(key)
            prompts.append(prompt)
    # Dedupe before shuffling, in file order, so the result depends only on the file and the seed.
    random.Random(seed).shuffle(prompts)
    if n is not None and n > len(prompts):
        logger.warning("%s holds %d distinct prompts, %d were asked for", path, len(prompts), n)
    return prompts if n is None else prompts[:n]
