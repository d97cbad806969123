"""Small preference data files for the preference package's tests: one pair, one out-of-scope and one
near-scope row, in the trainer's parquet format (docs/preference-trainer.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def preference_rows() -> list[dict]:
    msg = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    return [
        {"kind": "pair", "prompt": msg("What is 2 + 2?"), "chosen": "#### 4", "rejected": "#### 5", "response": None},
        {"kind": "out_of_scope", "prompt": msg("Name a color."), "chosen": None, "rejected": None, "response": "Blue."},
        {"kind": "near_scope", "prompt": msg("What is 3 + 3?"), "chosen": None, "rejected": None, "response": "#### 6"},
    ]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path
