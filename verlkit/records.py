"""The one reader of record files (``.jsonl``, ``.json``, ``.parquet``) and the one input-error type.

Every input a user hands us — data-prep sources, evaluation pairs and prompts, C3PO feedback and
general prompts — is read by :func:`read_records`, and every problem with it is an
:class:`InputError` that names the file, the entry (``line 3``, ``record 2``, a feedback's name) and
the field, so the message points at what to fix before anything starts training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUFFIXES = (".jsonl", ".json", ".parquet")
CHAT_ROLES = ("system", "user", "assistant")


class InputError(ValueError):
    """Bad input data. ``str()`` reads ``<file>: <entry>: <field>: <reason>`` with the parts known."""

    def __init__(self, reason: str, *, file: str | Path | None = None, entry: str | int | None = None,
                 field: str | None = None) -> None:
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.entry = f"record {entry}" if isinstance(entry, int) else entry
        self.field = field
        super().__init__(": ".join(part for part in (self.file, self.entry, self.field, reason) if part))

    def located(self, file: str | Path | None = None, entry: str | int | None = None) -> InputError:
        """The same problem with the file and entry it was found in (what is already known is kept)."""
        return type(self)(self.reason, file=self.file or file, entry=self.entry or entry, field=self.field)


def to_plain(value: Any) -> Any:
    """numpy arrays and scalars inside nested containers -> plain lists, dicts and Python scalars
    (parquet read through pandas gives numpy arrays for list columns; through pyarrow, plain lists)."""
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        return to_plain(value.tolist())
    return value


def _json_lines(path: Path, text: str) -> list[dict[str, Any]]:
    records = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e}", file=path, entry=f"line {line_no}") from e
        if not isinstance(record, dict):
            raise InputError(f"expected a JSON object, got {type(record).__name__}", file=path, entry=f"line {line_no}")
        records.append(record)
    return records


def _json_list(path: Path, text: str, list_key: str | None) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e}", file=path) from e
    if isinstance(data, dict) and list_key and isinstance(data.get(list_key), list):
        data = data[list_key]
    if isinstance(data, dict):
        data = [data]  # a file holding a single object is a list of one
    if not isinstance(data, list):
        raise InputError(f"expected a JSON list of objects, got {type(data).__name__}", file=path)
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise InputError(f"expected a JSON object, got {type(record).__name__}", file=path, entry=index)
    return data


def read_records(path: str | Path, *, list_key: str | None = "data") -> list[dict[str, Any]]:
    """The records of a ``.jsonl`` file (one object per line), a ``.json`` file (a list of objects, an
    object with a ``list_key`` list, or one object) or a ``.parquet`` file (plain Python values)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", file=path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:  # pyarrow raises several types for a file that is not parquet
            raise InputError(f"not a readable parquet file: {e}", file=path) from e
        return [to_plain(r) for r in table.to_pylist()]
    if suffix not in SUFFIXES:
        raise InputError(f"unsupported file type {suffix!r} (use {', '.join(SUFFIXES)})", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"not UTF-8 text: {e}", file=path) from e
    return _json_lines(path, text) if suffix == ".jsonl" else _json_list(path, text, list_key)


def require_field(record: dict[str, Any], name: str, *, file: str | Path | None, entry: str | int | None,
                  types: tuple[type, ...] = (str,)) -> Any:
    """``record[name]``, present, non-empty and of one of ``types``; else an :class:`InputError`."""
    value = record.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError("missing or empty", file=file, entry=entry, field=name)
    if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
        names = " or ".join(t.__name__ for t in types)
        raise InputError(f"expected {names}, got {type(value).__name__}", file=file, entry=entry, field=name)
    return value


def require_messages(record: dict[str, Any], name: str, *, file: str | Path | None,
                     entry: str | int | None) -> list[dict[str, str]]:
    """``record[name]`` as a non-empty list of ``{"role", "content"}`` chat messages with known roles
    and non-empty text, copied to plain dicts of exactly those two keys; else an :class:`InputError`
    whose field reads like ``messages[2].role``."""
    value = record.get(name)
    if value is None:
        raise InputError("missing", file=file, entry=entry, field=name)
    if not isinstance(value, list):
        raise InputError(f"expected a list of chat messages, got {type(value).__name__}", file=file, entry=entry,
                         field=name)
    if not value:
        raise InputError("empty list of messages", file=file, entry=entry, field=name)
    messages = []
    for position, message in enumerate(value):
        where = f"{name}[{position}]"
        if not isinstance(message, dict):
            raise InputError(f"expected a dict with 'role' and 'content', got {type(message).__name__}",
                             file=file, entry=entry, field=where)
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise InputError(f"must be one of {', '.join(CHAT_ROLES)}, got {role!r}", file=file, entry=entry,
                             field=f"{where}.role")
        if not isinstance(content, str):
            raise InputError(f"expected str, got {type(content).__name__}", file=file, entry=entry,
                             field=f"{where}.content")
        if not content.strip():
            raise InputError("empty", file=file, entry=entry, field=f"{where}.content")
        messages.append({"role": role, "content": content})
    return messages


def chat_messages(value: Any, default_role: str, *, file: str | Path | None, entry: str | int | None,
                  field: str) -> list[dict[str, str]]:
    """A record field as chat messages: a non-empty string is one ``default_role`` turn (how preference
    files store replies), a list must hold valid ``{role, content}`` messages (:func:`require_messages`);
    else an :class:`InputError` naming the file, the entry and the field."""
    value = to_plain(value)
    if isinstance(value, str):
        if not value.strip():
            raise InputError("missing or empty", file=file, entry=entry, field=field)
        return [{"role": default_role, "content": value}]
    return require_messages({field: value}, field, file=file, entry=entry)


def normalize_text(text: str) -> str:
    """The form two texts are compared in when looking for duplicates or leaks: case and runs of
    whitespace do not make a prompt a different prompt."""
    return " ".join(text.split()).casefold()
