"""C3PO's training parquet (data_prep.c3po) and the validator's preference row kinds.

A sampled feedback directory is written by hand here, as the sampling stage writes it; the chain from
a real served model to this parquet is tests/integration/test_c3po_sampling.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.common import write_parquet
from data_prep.c3po import ROW_KINDS, NoTrainingData, build_training_file, main, preference_rows
from data_prep.validate import PREFERENCE_ROW_KINDS, DataValidationError, validate_files
from verlkit.c3po.feedback import Feedback
from verlkit.c3po.sample import load_sample
from verlkit.records import InputError

FEEDBACK = Feedback(content="Be more concise when writing emails to my boss", domain="writing emails to my boss",
                    effect="be more concise", name="concise-boss-emails")  # fmt: skip


def row(prompt: str, category: str | None, revised: str | None = None) -> dict:
    return {"prompt": prompt, "category": category, "baseline_response": f"base {prompt}",
            "revised_response": revised or f"rev {prompt}", "in_context_response": f"ic {prompt}",
            "cot_response": None}  # fmt: skip


def sample_dir(tmp_path: Path, n_in=3, n_near=2, n_out=4, in_rows: list[dict] | None = None,
               feedback: Feedback = FEEDBACK) -> Path:  # fmt: skip
    d = tmp_path / feedback.slug
    d.mkdir()
    (d / "feedback.json").write_text(json.dumps(feedback.to_dict()))
    (d / "categories.json").write_text(json.dumps(["Work"]))
    for name, n in (("in_scope", n_in), ("near_scope", n_near), ("out_of_scope", n_out)):
        rows = [row(f"{name} {i}", None if name == "out_of_scope" else "Work") for i in range(n)]
        if name == "in_scope" and in_rows is not None:
            rows = in_rows
        (d / f"{name}.json").write_text(json.dumps({"train": rows, "test": rows[:1]}))
    return d


def test_training_rows_pair_revised_over_baseline_and_constrain_with_baselines(tmp_path):
    d = sample_dir(tmp_path)
    rows, identical = preference_rows(load_sample(d), d)
    kinds = [r["kind"] for r in rows]
    assert kinds == ["pair", "pair", "near_scope", "near_scope", "out_of_scope", "out_of_scope"]  # balanced to 2
    assert identical == 0
    pair = rows[0]
    assert pair["prompt"] == [{"role": "user", "content": "in_scope 0"}]
    assert pair["chosen"] == "rev in_scope 0" and pair["rejected"] == "base in_scope 0"
    assert rows[2]["response"] == "base near_scope 0" and rows[4]["category"] is None
    assert all(r["feedback_id"] == FEEDBACK.id for r in rows)


def test_the_training_parquet_validates_and_loads_in_the_preference_dataset(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from verlkit.preference.data import ROW_KINDS as TRAINER_ROW_KINDS
    from verlkit.preference.data import PreferenceDataset

    assert ROW_KINDS == PREFERENCE_ROW_KINDS == TRAINER_ROW_KINDS  # writer, validator and trainer agree
    out = tmp_path / "train.parquet"
    assert build_training_file(sample_dir(tmp_path), out, balance=False) == out
    assert pd.read_parquet(out)["kind"].tolist() == ["pair"] * 3 + ["near_scope"] * 2 + ["out_of_scope"] * 4
    assert validate_files([out], kind="preference") == []
    ds = PreferenceDataset(str(out), AutoTokenizer.from_pretrained(tiny_model_dir), {"max_length": 256})
    assert len(ds) == 9


def test_identical_pairs_are_dropped_and_no_pair_is_no_training_data(tmp_path):
    same = [row("in_scope 0", "Work", revised="base in_scope 0"), row("in_scope 1", "Work")]
    d = sample_dir(tmp_path, in_rows=same)
    rows, identical = preference_rows(load_sample(d), d, balance=False)
    assert identical == 1 and [r["chosen"] for r in rows if r["kind"] == "pair"] == ["rev in_scope 1"]

    only_same = tmp_path / "only_same"
    only_same.mkdir()
    d = sample_dir(only_same, in_rows=same[:1])
    out = tmp_path / "none.parquet"
    with pytest.raises(NoTrainingData, match=r"in_scope.json: no in-scope training pairs \(1 dropped"):
        build_training_file(d, out)
    assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoTrainingData, match="no in-scope training pairs; see report.json"):
        build_training_file(sample_dir(empty, n_in=0), out)


def test_a_row_without_a_baseline_names_file_row_and_field(tmp_path):
    bad = row("in_scope 0", "Work")
    bad["baseline_response"] = ""
    d = sample_dir(tmp_path, in_rows=[bad])
    with pytest.raises(InputError, match=r"in_scope.json: train\[0\]: baseline_response: missing or empty"):
        build_training_file(d, tmp_path / "train.parquet")


def test_cli_writes_the_file_or_exits_2_with_the_reason(tmp_path, capsys):
    out = tmp_path / "train.parquet"
    assert main([str(sample_dir(tmp_path)), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: pair 2, near_scope 2, out_of_scope 2"
    assert main([str(tmp_path / "absent"), "--out", str(tmp_path / "x.parquet")]) == 2
    assert "absent/feedback.json: no such file" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# The validator's preference rows
# ---------------------------------------------------------------------------------------------
def write(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_validator_checks_each_row_kind_for_its_own_fields(tmp_path):
    prompt = [{"role": "user", "content": "hi"}]
    path = write(tmp_path / "kinds.parquet", [
        {"kind": "pair", "prompt": prompt, "chosen": "a", "rejected": "b", "response": None},
        {"kind": "near_scope", "prompt": prompt, "chosen": None, "rejected": None, "response": "base"},
        {"kind": None, "prompt": prompt, "chosen": "a", "rejected": "b", "response": None},  # no kind: a pair
        {"kind": "out_of_scope", "prompt": prompt, "chosen": None, "rejected": None, "response": "  "},
        {"kind": "pair", "prompt": prompt, "chosen": None, "rejected": "b", "response": "x"},
        {"kind": "pair", "prompt": prompt, "chosen": "same", "rejected": "same", "response": None},
        {"kind": "negative", "prompt": prompt, "chosen": None, "rejected": None, "response": "x"},
    ])
    problems = [(p.row, p.field, p.message) for p in validate_files([path], kind="preference")]
    assert problems == [
        (3, "response", "empty reply"),
        (4, "chosen", "missing"),
        (5, "rejected", "identical to chosen"),
        (6, "kind", "must be one of pair, near_scope, out_of_scope, got 'negative'"),
    ]
    with pytest.raises(DataValidationError, match="row 0: response: missing"):
        write_parquet([{"kind": "near_scope", "prompt": prompt, "chosen": None, "rejected": None,
                        "response": None}], tmp_path / "bad.parquet", kind="preference")  # fmt: skip


def test_two_feedbacks_give_one_combined_file_with_each_feedbacks_rows(tmp_path):
    """The second feedback: one parquet holding both feedbacks' balanced rows, told apart by feedback_id."""
    from data_prep.c3po import build_combined_training_file

    other = Feedback(content="Always end recipes with Bon appetit", domain="recipes", effect="end with Bon appetit",
                     name="bon-appetit")  # fmt: skip
    first = sample_dir(tmp_path)  # 3/2/4 rows -> 2 of each kind
    second = sample_dir(tmp_path, n_in=1, n_near=3, n_out=3, feedback=other)  # -> 1 of each kind
    out = build_combined_training_file([first, second], tmp_path / "combined.parquet")
    table = pq.read_table(out).to_pandas()
    per_feedback = table.groupby(["feedback_id", "kind"]).size().to_dict()
    assert per_feedback == {(FEEDBACK.id, "pair"): 2, (FEEDBACK.id, "near_scope"): 2, (FEEDBACK.id, "out_of_scope"): 2,
                            (other.id, "pair"): 1, (other.id, "near_scope"): 1, (other.id, "out_of_scope"): 1}
    assert main([str(first), str(second), "--out", str(tmp_path / "cli.parquet")]) == 0
    assert len(pq.read_table(tmp_path / "cli.parquet")) == 9
    # a feedback without a pair cannot be half of a combined adapter
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NoTrainingData):
        build_combined_training_file([first, sample_dir(empty, n_in=0, feedback=other)], tmp_path / "x.parquet")
