"""Small file helpers shared by the data-prep tests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq


def read(path: Path) -> list[dict]:
    """The rows of a parquet file as plain Python objects."""
    return pq.read_table(path).to_pylist()


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path
