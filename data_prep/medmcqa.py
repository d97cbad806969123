"""MedMCQA (original JSON-lines release) -> verl RL parquet for the two calibration designs.

Usage::

    python -m data_prep.medmcqa [--input DIR] --out DIR [--design cgp|rlcr|both]
        [--train-size 5000] [--dev-size 50|all] [--seed 42] [--skip-invalid]

Reads ``DIR/train.json`` and ``DIR/dev.json`` (one JSON object per line with ``id, question, opa,
opb, opc, opd, cop, choice_type, exp, subject_name, topic_name``; ``cop`` is the **1-based** correct
option 1..4). ``--input`` defaults to the bundled made-up sample ``data_prep/assets/medmcqa_sample``.

The released ``test.json`` has no labels, so it is **never read**: evaluation uses ``dev``.

Subsets are deterministic: train = ``random.Random(seed).sample`` of ``--train-size`` rows, kept in
file order (the seed's ``train_5k``); dev = the first ``--dev-size`` rows after shuffling the dev
file with ``random.Random(seed + 1)`` (the seed's ``dev_50``), or all of it in file order.

Writes ``OUT/<design>/train.parquet`` and ``OUT/<design>/dev.parquet`` (designs ``cgp`` = the
Prompt4Trust hint writer, data source ``medmcqa_cgp``; ``rlcr`` = the model answers with a stated
confidence, data source ``medmcqa_rlcr``) and ``OUT/manifest.json`` (sizes, seed, selected ids).
Rows follow verl's RL schema: ``prompt``, ``data_source``, ``ability="medical_mcq"``,
``reward_model={"style", "ground_truth": "<1-based option>"}``, ``extra_info={id, question,
options, subject_name, topic_name, choice_type, split, index}``. Written files are checked with
``data_prep.validate`` when it is available.

A bad input row stops the run with ``FILE: line N: FIELD: what is wrong``; with ``--skip-invalid``
bad rows (malformed JSON lines included) are skipped, counted and the first few reported instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verl.utils.reward_score import calibration, rlcr
from verlkit.records import InputError

DEFAULT_INPUT = Path(__file__).resolve().parent / "assets" / "medmcqa_sample"
OPTION_FIELDS = ("opa", "opb", "opc", "opd")
DESIGNS = ("cgp", "rlcr")
DATA_SOURCES = {"cgp": "medmcqa_cgp", "rlcr": "medmcqa_rlcr"}
ABILITY = "medical_mcq"


class MedMCQAFormatError(InputError):
    """A MedMCQA input row is malformed; names file, line and field."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    options: tuple[str, str, str, str]
    answer: int  # 1-based
    choice_type: str
    subject_name: str
    topic_name: str


def _optional_text(record: dict, name: str, fail) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise fail(f"expected a string or null, got {value!r}", field=name)
    return value


def parse_record(record: Any, *, file: str | Path | None = None, entry: str | int | None = None) -> Question:
    """One labeled MedMCQA record -> :class:`Question`; errors name ``file`` and ``entry`` (``line N``)."""
    fail = functools.partial(MedMCQAFormatError, file=file, entry=entry)
    if not isinstance(record, dict):
        raise fail(f"expected a JSON object, got {type(record).__name__}")
    raw_id = record.get("id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise fail("missing or empty", field="id")
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise fail("missing or empty", field="question")
    options = []
    for name in OPTION_FIELDS:
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise fail(f"missing or empty option, got {value!r}", field=name)
        options.append(value.strip())
    cop = record.get("cop")
    if isinstance(cop, bool) or not isinstance(cop, int) or not 1 <= cop <= 4:
        raise fail(f"expected the correct option as an integer 1..4 (1-based, as in the original JSON release; the "
                   f"HF copy is 0-based), got {cop!r}", field="cop")
    return Question(
        id=str(raw_id),
        question=question.strip(),
        options=tuple(options),  # type: ignore[arg-type]
        answer=cop,
        choice_type=_optional_text(record, "choice_type", fail),
        subject_name=_optional_text(record, "subject_name", fail),
        topic_name=_optional_text(record, "topic_name", fail),
    )


def read_split(path: Path, skip_invalid: bool = False) -> tuple[list[Question], list[str]]:
    """All questions of a labeled file, and the problems of skipped rows.

    Read here line by line rather than with ``verlkit.records.read_records``: the release names its
    JSON-lines files ``.json``, and ``--skip-invalid`` must skip a malformed line, not the file."""
    if not path.is_file():
        raise MedMCQAFormatError("no such MedMCQA file (expected train.json/dev.json JSON lines)", file=path)
    questions, problems = [], []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = {"file": path, "entry": f"line {lineno}"}
            try:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MedMCQAFormatError(f"not valid JSON: {e}", **where) from None
                questions.append(parse_record(record, **where))
            except MedMCQAFormatError as e:
                if not skip_invalid:
                    raise
                problems.append(str(e))
    if not questions:
        raise MedMCQAFormatError("no valid rows", file=path)
    return questions, problems


def select_train(questions: list[Question], size: int, seed: int) -> list[Question]:
    """A seeded sample of ``size`` rows, in file order (all rows if the file is smaller)."""
    if size >= len(questions):
        return list(questions)
    chosen = sorted(random.Random(seed).sample(range(len(questions)), size))
    return [questions[i] for i in chosen]


def select_dev(questions: list[Question], size: int | None, seed: int) -> list[Question]:
    """The first ``size`` rows after a seeded shuffle; ``None`` = all rows in file order."""
    if size is None or size >= len(questions):
        return list(questions)
    order = list(range(len(questions)))
    random.Random(seed + 1).shuffle(order)
    return [questions[i] for i in order[:size]]


def make_row(q: Question, design: str, split: str, index: int) -> dict[str, Any]:
    """One verl RL row for ``design`` (``cgp`` or ``rlcr``)."""
    if design == "cgp":
        prompt = [{"role": "user", "content": calibration.build_policy_prompt(q.question, q.options)}]
        style = "model"
    elif design == "rlcr":
        prompt = [
            {"role": "system", "content": rlcr.SYSTEM_PROMPT},
            {"role": "user", "content": rlcr.build_user_prompt(q.question, q.options)},
        ]
        style = "rule"
    else:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    return {
        "data_source": DATA_SOURCES[design],
        "prompt": prompt,
        "ability": ABILITY,
        "reward_model": {"style": style, "ground_truth": str(q.answer)},
        "extra_info": {
            "id": q.id,
            "question": q.question,
            "options": list(q.options),
            "subject_name": q.subject_name,
            "topic_name": q.topic_name,
            "choice_type": q.choice_type,
            "split": split,
            "index": index,
        },
    }


def write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def validate_outputs(paths: list[Path]) -> None:
    """Run the project's validator on what was written, if it is installed in this tree."""
    try:
        from data_prep.validate import DataValidationError, validate_files
    except ImportError:
        return
    problems = validate_files([str(p) for p in paths], kind="rl")
    if problems:
        raise DataValidationError(problems)


def _dev_size(text: str) -> int | None:
    if text == "all":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("--dev-size must be a positive integer or 'all'")
    return value


def build(input_dir: Path, out_dir: Path, designs: tuple[str, ...], train_size: int,
          dev_size: int | None, seed: int, skip_invalid: bool = False) -> dict[str, Any]:
    """Read, select, write and validate. Returns the manifest (also written to OUT/manifest.json)."""
    train_all, train_problems = read_split(input_dir / "train.json", skip_invalid)
    dev_all, dev_problems = read_split(input_dir / "dev.json", skip_invalid)
    train = select_train(train_all, train_size, seed)
    dev = select_dev(dev_all, dev_size, seed)
    written: list[Path] = []
    for design in designs:
        for split, questions in (("train", train), ("dev", dev)):
            path = out_dir / design / f"{split}.parquet"
            write_parquet([make_row(q, design, split, i) for i, q in enumerate(questions)], path)
            written.append(path)
    validate_outputs(written)
    manifest = {
        "input": str(input_dir),
        "seed": seed,
        "designs": list(designs),
        "sizes": {"train": len(train), "dev": len(dev)},
        "source_sizes": {"train": len(train_all), "dev": len(dev_all)},
        "skipped_invalid": {"train": len(train_problems), "dev": len(dev_problems)},
        "first_problems": (train_problems + dev_problems)[:10],
        "ids": {"train": [q.id for q in train], "dev": [q.id for q in dev]},
        "files": [str(p) for p in written],
        "test_split": "not read: MedMCQA's test.json has no labels; evaluate on dev",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="folder with train.json and dev.json")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--design", choices=(*DESIGNS, "both"), default="both")
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--dev-size", type=_dev_size, default=50, help="an integer or 'all'")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--skip-invalid", action="store_true", help="skip and count malformed rows")
    args = parser.parse_args(argv)
    if args.train_size < 1:
        parser.error("--train-size must be positive")
    designs = DESIGNS if args.design == "both" else (args.design,)
    try:
        manifest = build(args.input, args.out, designs, args.train_size, args.dev_size, args.seed, args.skip_invalid)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    skipped = manifest["skipped_invalid"]
    print(f"wrote {', '.join(manifest['files'])}: train={manifest['sizes']['train']} dev={manifest['sizes']['dev']}"
          + (f" (skipped invalid: train={skipped['train']} dev={skipped['dev']})" if any(skipped.values()) else ""))
    for problem in manifest["first_problems"]:
        print(f"  skipped: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
