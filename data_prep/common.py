"""Shared pieces of the data-prep writers: building verl rows, deterministic subsets and splits, and
writing parquet that is validated before it is put in place. Inputs are read with
``verlkit.records`` (re-exported here: ``read_records``, ``InputError``, ``require_field``,
``require_messages``, ``normalize_text``)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

from data_prep.validate import DataValidationError, validate_file  # noqa: F401  (re-exported)
# Inputs are read, and their problems reported, the one way every part of verlkit does.
from verlkit.records import InputError, normalize_text, read_records, require_field, require_messages  # noqa: F401

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_SEED = 42

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------
def chat(user: str, system: str | None = None) -> list[dict[str, str]]:
    """A prompt as verl wants it: a list of chat messages."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    return messages


def rl_row(data_source: str, prompt: list[dict[str, str]], ground_truth: Any, *, ability: str,
           extra_info: dict[str, Any], style: str = "rule", **extra_columns: Any) -> dict[str, Any]:
    """One row of verl's RL schema (reference-methods §1.1); ``extra_columns`` become top-level columns."""
    row = {
        "data_source": data_source,
        "prompt": prompt,
        "ability": ability,
        "reward_model": {"style": style, "ground_truth": ground_truth},
        "extra_info": extra_info,
    }
    row.update(extra_columns)
    return row


# ---------------------------------------------------------------------------------------------
# Fingerprints
# ---------------------------------------------------------------------------------------------
def text_sha256(text: str) -> str:
    """Hex sha256 of the UTF-8 text (how UltraFeedback-binarized derives ``prompt_id`` from a prompt)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, for manifests that record exactly which input was used."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Deterministic subsets and splits
# ---------------------------------------------------------------------------------------------
def seeded_sample(items: Sequence[T], n: int | None, seed: int = DEFAULT_SEED) -> list[T]:
    """``n`` items chosen with ``random.Random(seed)``, kept in their original order (all if n is None/too big)."""
    if n is None or n >= len(items):
        return list(items)
    if n < 0:
        raise ValueError(f"sample size must be >= 0, got {n}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in chosen]


def split_train_test(items: Sequence[T], test_fraction: float, seed: int = DEFAULT_SEED) -> tuple[list[T], list[T]]:
    """Seeded split; each part keeps the original order. At least one test and one train item when
    there are two or more items and ``0 < test_fraction < 1``."""
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    n_test = round(len(items) * test_fraction)
    if len(items) >= 2 and 0.0 < test_fraction < 1.0:
        n_test = min(max(n_test, 1), len(items) - 1)
    test_idx = set(random.Random(seed).sample(range(len(items)), n_test))
    train = [x for i, x in enumerate(items) if i not in test_idx]
    test = [x for i, x in enumerate(items) if i in test_idx]
    return train, test


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def write_parquet(rows: Iterable[dict[str, Any]], path: str | Path, kind: str = "rl",
                  reward_options: dict | None = None) -> Path:
    """Write ``rows`` to ``path`` and validate the file as written (after the parquet round trip), under
    the reward options the file is meant for (``data_prep.validate --reward-options``).

    The file is written next to ``path`` under a temporary name and moved into place only if it
    validates, so a failed run never leaves an invalid file where a trainer would read it. Raises
    ``DataValidationError`` listing the problems.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = list(rows)
    path = Path(path)
    if not rows:
        raise ValueError(f"{path}: refusing to write an empty file")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # from_pylist takes the columns from the first row only; use the union, in first-seen order.
        columns = list(dict.fromkeys(key for row in rows for key in row))
        pq.write_table(pa.Table.from_pydict({c: [row.get(c) for row in rows] for c in columns}), tmp)
        problems = validate_file(tmp, kind, display_name=str(path), reward_options=reward_options)
        if problems:
            raise DataValidationError(problems)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
