"""C3PO's training parquet: the preference trainer's rows from one sampled feedback.

Input: one feedback's directory written by the sampling stage (``python -m verlkit.c3po.sample``,
``SAMPLE_DIR/<feedback slug>/``). One parquet serves every method of ``verlkit.preference.trainer``
(each loss reads the row kinds it needs):

* ``pair`` rows from the in-scope train set: ``chosen`` = the revised response (the feedback
  applied), ``rejected`` = the baseline response; a pair whose two responses are identical teaches
  nothing (and the validator refuses it), so it is dropped and counted;
* ``near_scope`` rows (C3PO's hard constraint) and ``out_of_scope`` rows (soft constraint):
  ``response`` = the original model's own baseline completion.

``lcdpo`` (C3PO) uses all three, ``dpo`` and ``sft`` (SFT on the revised responses) only the pairs,
``sft_neg`` all three with plain NLL. As in the original, the three sets are cut to the same length
(``balance=True``; a set the sampling stage could not fill is left empty rather than emptying the
others) so that every kind weighs in as configured by σ_soft / σ_hard. Extra columns
(``feedback_id``, ``category``) keep each row traceable to its feedback and category.

The file is written with ``data_prep.common.write_parquet`` and validated as ``--kind preference``
before it is put in place.

Several feedbacks' directories give ONE file with the rows of each (``build_combined_training_file``:
the original's ``--second_feedback_prefix``, one adapter for two feedbacks).

CLI: ``python -m data_prep.c3po SAMPLE_DIR/<feedback slug> [SAMPLE_DIR/<slug 2>] --out train.parquet [--no-balance]``
(exit 2 with the reason when there is no training data or the sample is unreadable).
Python: ``build_training_file(sample_dir, out) -> Path``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from data_prep.common import write_parquet
from data_prep.validate import DataValidationError
from verlkit.c3po.prompts import baseline_messages
from verlkit.c3po.sample import SETS, load_sample
from verlkit.records import InputError, require_field

ROW_KINDS = ("pair", "near_scope", "out_of_scope")

logger = logging.getLogger("data_prep.c3po")


class NoTrainingData(InputError):
    """The sampled feedback has no usable in-scope pair: nothing to train on (the recipe skips it)."""


def preference_rows(sample: dict[str, Any], sample_dir: str | Path, split: str = "train",
                    balance: bool = True) -> tuple[list[dict[str, Any]], int]:
    """The rows of the training parquet (see the module docstring) and the number of in-scope pairs
    dropped because chosen and rejected were identical. ``sample`` is ``load_sample(sample_dir)``;
    ``sample_dir`` names the files in errors."""
    fb = sample["feedback"]
    sample_dir = Path(sample_dir)
    sets: dict[str, list[dict[str, Any]]] = {}
    identical = 0
    for name in SETS:
        file = sample_dir / f"{name}.json"
        kept = []
        for index, row in enumerate(sample["sets"][name][split]):
            where = f"{split}[{index}]"
            if not isinstance(row, dict):
                raise InputError(f"expected a row object, got {type(row).__name__}", file=file, entry=where)
            require_field(row, "prompt", file=file, entry=where)
            baseline = require_field(row, "baseline_response", file=file, entry=where)
            if name == "in_scope" and require_field(row, "revised_response", file=file, entry=where) == baseline:
                identical += 1
                continue
            kept.append(row)
        sets[name] = kept
    if balance:
        # an empty set stays empty (its term then contributes nothing) instead of emptying the others
        n = min((len(rows) for rows in sets.values() if rows), default=0)
        sets = {name: rows[:n] for name, rows in sets.items()}
    rows: list[dict[str, Any]] = []
    for r in sets["in_scope"]:
        rows.append({"kind": "pair", "prompt": baseline_messages(r["prompt"]), "chosen": r["revised_response"],
                     "rejected": r["baseline_response"], "response": None})  # fmt: skip
    for kind in ("near_scope", "out_of_scope"):
        for r in sets[kind]:
            rows.append({"kind": kind, "prompt": baseline_messages(r["prompt"]), "chosen": None, "rejected": None,
                         "response": r["baseline_response"]})  # fmt: skip
    for row, src in zip(rows, [*sets["in_scope"], *sets["near_scope"], *sets["out_of_scope"]]):
        row["feedback_id"] = fb.id
        row["category"] = src.get("category")
    return rows, identical


def count_kinds(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Rows per kind, every kind listed."""
    return {kind: sum(r["kind"] == kind for r in rows) for kind in ROW_KINDS}


def build_training_file(sample_dir: str | Path, out: str | Path, balance: bool = True) -> Path:
    """Write and validate the training parquet of one sampled feedback; returns ``out``.

    Raises ``NoTrainingData`` (an ``InputError``) when the feedback has no usable in-scope pair,
    ``InputError`` when the sample directory is unreadable, and ``DataValidationError`` when the
    rows do not validate (nothing is written then)."""
    sample_dir = Path(sample_dir)
    rows, identical = preference_rows(load_sample(sample_dir), sample_dir, balance=balance)
    if not count_kinds(rows)["pair"]:
        dropped = f" ({identical} dropped: revised identical to baseline)" if identical else ""
        raise NoTrainingData(f"no in-scope training pairs{dropped}; see report.json", file=sample_dir / "in_scope.json")
    if identical:
        logger.warning("%s: %d in-scope pair(s) dropped: revised response identical to the baseline", sample_dir,
                       identical)
    return write_parquet(rows, out, kind="preference")


def build_combined_training_file(sample_dirs: list[str | Path], out: str | Path, balance: bool = True) -> Path:
    """ONE training parquet from several sampled feedbacks (the original's second feedback: one adapter
    trained on the combined data of two feedbacks): each feedback's rows as in ``build_training_file``
    (balanced within the feedback), concatenated; ``feedback_id`` tells them apart. Validated as one
    file. Raises ``NoTrainingData`` when one of the feedbacks has no usable in-scope pair (a combined
    adapter without one of its feedbacks would not be one)."""
    rows: list[dict[str, Any]] = []
    for sample_dir in map(Path, sample_dirs):
        part, identical = preference_rows(load_sample(sample_dir), sample_dir, balance=balance)
        if not count_kinds(part)["pair"]:
            raise NoTrainingData(f"no in-scope training pairs ({identical} identical to the baseline dropped)",
                                 file=sample_dir / "in_scope.json")  # fmt: skip
        rows += part
    return write_parquet(rows, out, kind="preference")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.c3po", description=__doc__.splitlines()[0])
    parser.add_argument("sample_dir", type=Path, nargs="+",
                        help="one feedback's directory of the sampling stage (several: one combined file)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--no-balance", action="store_true", help="keep every row instead of equal-length sets")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        if len(args.sample_dir) == 1:
            out = build_training_file(args.sample_dir[0], args.out, balance=not args.no_balance)
        else:
            out = build_combined_training_file(args.sample_dir, args.out, balance=not args.no_balance)
    except (InputError, DataValidationError) as e:
        print(f"c3po training data: {e}", file=sys.stderr)
        return 2
    import pyarrow.parquet as pq

    kinds = pq.read_table(out, columns=["kind"]).column("kind").to_pylist()
    print(f"{out}: " + ", ".join(f"{kind} {kinds.count(kind)}" for kind in ROW_KINDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
