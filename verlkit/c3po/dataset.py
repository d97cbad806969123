"""Training data for the preference trainer from one sampled feedback (``verlkit.c3po.sample``).

One parquet serves every method of ``verlkit.preference.train`` (each loss reads the row
kinds it needs):

* ``pair`` rows from the in-scope train set: ``chosen`` = the revised response (the feedback
  applied), ``rejected`` = the baseline response;
* ``near_scope`` rows (C3PO's hard constraint) and ``out_of_scope`` rows (soft constraint):
  ``response`` = the original model's own baseline completion.

``lcdpo`` (C3PO) uses all three, ``dpo`` and ``sft`` (SFT on the revised responses) only the pairs,
``sft_neg`` all three with plain NLL. As in the original, the three sets are cut to the same length
(``balance=True``; a set the sampling stage could not fill is left empty rather than emptying the
others) so that every kind weighs in as configured by σ_soft / σ_hard. Extra columns
(``feedback_id``, ``category``) keep each row traceable to its feedback and category.

CLI: ``python -m verlkit.c3po.dataset SAMPLE_DIR/<feedback slug> --out train.parquet``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from verlkit.c3po.prompts import baseline_messages
from verlkit.c3po.sample import load_sample


def preference_rows(sample: dict[str, Any], split: str = "train", balance: bool = True) -> list[dict[str, Any]]:
    """Rows of the preference parquet (see module docstring)."""
    fb = sample["feedback"]
    sets = {name: sample["sets"][name][split] for name in ("in_scope", "near_scope", "out_of_scope")}
    if balance:
        # an empty set stays empty (its term then contributes nothing) instead of emptying the others
        n = min((len(rows) for rows in sets.values() if rows), default=0)
        sets = {name: rows[:n] for name, rows in sets.items()}
    rows: list[dict[str, Any]] = []
    for r in sets["in_scope"]:
        rows.append({"kind": "pair", "prompt": baseline_messages(r["prompt"]), "chosen": r["revised_response"],
                     "rejected": r["baseline_response"], "response": None})  # fmt: skip
    for kind, name in (("near_scope", "near_scope"), ("out_of_scope", "out_of_scope")):
        for r in sets[name]:
            rows.append({"kind": kind, "prompt": baseline_messages(r["prompt"]), "chosen": None, "rejected": None,
                         "response": r["baseline_response"]})  # fmt: skip
    for row, src in zip(rows, [*sets["in_scope"], *sets["near_scope"], *sets["out_of_scope"]]):
        row["feedback_id"] = fb.id
        row["category"] = src.get("category")
    return rows


def write_preference_parquet(sample_dir: str | Path, out: str | Path, balance: bool = True) -> dict[str, int]:
    """Write the training parquet of one sampled feedback; returns the number of rows per kind.
    Raises ValueError when a kind the objectives need has no rows."""
    import pandas as pd

    rows = preference_rows(load_sample(Path(sample_dir)), balance=balance)
    counts = {k: sum(r["kind"] == k for r in rows) for k in ("pair", "near_scope", "out_of_scope")}
    if not counts["pair"]:
        raise ValueError(f"{sample_dir}: no in-scope training pairs (see its report.json)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.c3po.dataset", description=__doc__.splitlines()[0])
    parser.add_argument("sample_dir", type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--no-balance", action="store_true", help="keep every row instead of equal-length sets")
    args = parser.parse_args(argv)
    try:
        counts = write_preference_parquet(args.sample_dir, args.out, balance=not args.no_balance)
    except (ValueError, OSError) as e:
        print(f"c3po dataset: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
