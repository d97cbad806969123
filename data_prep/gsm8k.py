"""GSM8K -> verl RL parquet (``data_source=openai/gsm8k``, scored by upstream verl's GSM8K rule).

Usage::

    python -m data_prep.gsm8k --out data/gsm8k                      # the bundled 32-row sample
    python -m data_prep.gsm8k --input /path/to/gsm8k --out data/gsm8k [--max-train N --max-test N]
    python -m data_prep.gsm8k --from-hub --out data/gsm8k           # needs network

``--input`` is one of:

* a directory in the original release layout (``train.jsonl`` / ``test.jsonl``, also under
  ``data/`` or ``grade_school_math/data/``) or the Hugging Face dataset layout
  (``main/train-*.parquet`` / ``main/test-*.parquet``);
* a single ``.jsonl``/``.json``/``.parquet`` file with ``question``/``answer`` records, which is
  split into train/test with ``--test-fraction`` and ``--seed``.

Writes ``train.parquet`` and ``test.parquet`` into ``--out`` and validates both.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from data_prep.common import (ASSETS, DEFAULT_SEED, DataValidationError, chat, rl_row, seeded_sample, split_train_test,
                              write_parquet)
from verlkit.records import InputError, read_records, require_field

DATA_SOURCE = "openai/gsm8k"
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'
SAMPLE = ASSETS / "gsm8k_sample.jsonl"
SPLITS = ("train", "test")
# Where each split may live inside an --input directory, first match wins.
_SPLIT_PATTERNS = ("{split}.jsonl", "data/{split}.jsonl", "grade_school_math/data/{split}.jsonl",
                   "main/{split}-*.parquet", "{split}-*.parquet", "{split}.parquet")
_FINAL_ANSWER = re.compile(r"^-?[0-9][0-9,]*(\.[0-9]+)?$|^-?\.[0-9]+$")


def extract_final_answer(answer: str) -> str | None:
    """The number after the last ``####`` with thousands separators removed, or None."""
    if "####" not in answer:
        return None
    final = answer.rsplit("####", 1)[1].strip()
    if not _FINAL_ANSWER.match(final):
        return None
    return final.replace(",", "")


def make_row(record: dict[str, Any], *, split: str, index: int, source: str) -> dict[str, Any]:
    """One verl row from a GSM8K record (``question``, ``answer``)."""
    question = require_field(record, "question", file=source, entry=index)
    answer = require_field(record, "answer", file=source, entry=index)
    final = extract_final_answer(answer)
    if final is None:
        raise InputError(f"no number after '####' (ends with {answer[-60:]!r})", file=source, entry=index,
                         field="answer")
    return rl_row(
        DATA_SOURCE,
        chat(f"{question} {INSTRUCTION}"),
        final,
        ability="math",
        extra_info={"split": split, "index": index, "answer": answer, "question": question},
    )


def _find_split_files(root: Path, split: str) -> list[Path]:
    for pattern in _SPLIT_PATTERNS:
        found = sorted(root.glob(pattern.format(split=split)))
        if found:
            return found
    return []


Records = list[tuple[int, dict]]  # (index of the record in its source split/file, record)


def load_splits(input_path: Path, *, test_fraction: float, seed: int) -> dict[str, tuple[str, Records]]:
    """{split: (where it came from, indexed records)} from a directory or a single file."""
    if input_path.is_dir():
        splits = {}
        for split in SPLITS:
            files = _find_split_files(input_path, split)
            if not files:
                looked = ", ".join(p.format(split=split) for p in _SPLIT_PATTERNS)
                raise InputError(f"no {split} split found (looked for {looked})", file=input_path)
            records = [r for f in files for r in read_records(f)]
            splits[split] = (", ".join(map(str, files)), list(enumerate(records)))
        return splits
    records = list(enumerate(read_records(input_path)))
    train, test = split_train_test(records, test_fraction, seed)
    return {"train": (str(input_path), train), "test": (str(input_path), test)}


def load_from_hub() -> dict[str, tuple[str, Records]]:
    import datasets

    dataset = datasets.load_dataset("openai/gsm8k", "main")
    return {split: (f"hub:openai/gsm8k/main/{split}", list(enumerate(dataset[split]))) for split in SPLITS}


def build(splits: dict[str, tuple[str, Records]], out_dir: Path, *, max_rows: dict[str, int | None],
          seed: int) -> dict[str, Path]:
    """Write ``<out_dir>/<split>.parquet`` for each split. ``extra_info.index`` is the record's index
    in its source split (or file), before subsetting, so rows can be traced back."""
    written = {}
    for split, (source, records) in splits.items():
        rows = [make_row(r, split=split, index=i, source=source) for i, r in records]
        rows = seeded_sample(rows, max_rows.get(split), seed)
        written[split] = write_parquet(rows, out_dir / f"{split}.parquet")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.gsm8k", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=SAMPLE,
                        help="GSM8K directory or file (default: the bundled sample)")
    parser.add_argument("--from-hub", action="store_true",
                        help="download openai/gsm8k with `datasets` instead of reading --input (needs network)")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--max-train", type=int, default=None, help="seeded subset of N train rows")
    parser.add_argument("--max-test", type=int, default=None, help="seeded subset of N test rows")
    parser.add_argument("--test-fraction", type=float, default=0.25,
                        help="test share when --input is a single file (default 0.25)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    try:
        splits = load_from_hub() if args.from_hub else load_splits(
            args.input, test_fraction=args.test_fraction, seed=args.seed)
        written = build(splits, args.out, max_rows={"train": args.max_train, "test": args.max_test},
                        seed=args.seed)
    except (InputError, DataValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for split, path in written.items():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
