"""The preference dataset and collator on the tiny local model's tokenizer, and the record checks
that name file, record and field before anything trains."""

from __future__ import annotations

import json

import pytest
from support.preference_data import preference_rows, write_parquet

from verlkit.preference.data import (
    KIND_CHOSEN,
    KIND_NEAR_SCOPE,
    KIND_OUT_OF_SCOPE,
    KIND_PADDING,
    KIND_REJECTED,
    PreferenceCollator,
    PreferenceDataset,
)
from verlkit.records import InputError


def test_dataset_masks_exactly_the_reply(tokenizer, tmp_path):
    ds = PreferenceDataset(str(write_parquet(tmp_path / "p.parquet", preference_rows())), tokenizer, {"max_length": 128})
    assert len(ds) == 3
    item = ds[0]
    assert item["kinds"] == [KIND_CHOSEN, KIND_REJECTED]
    for seq, reply in zip(item["sequences"], ["#### 4", "#### 5"]):
        reply_ids = [t for t, m in zip(seq["input_ids"], seq["loss_mask"]) if m]
        assert tokenizer.decode(reply_ids) == reply + "<|im_end|>\n"
    only_pairs = PreferenceDataset(str(tmp_path / "p.parquet"), tokenizer, {"max_length": 128}, kinds=["pair"])
    assert len(only_pairs) == 1


def test_jsonl_records_load_like_parquet_rows(tokenizer, tmp_path):
    """Files are read by verlkit.records.read_records: a .jsonl of the same records gives the same items."""
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preference_rows()))
    from_jsonl = PreferenceDataset(str(path), tokenizer, {"max_length": 128})
    from_parquet = PreferenceDataset(str(write_parquet(tmp_path / "p.parquet", preference_rows())), tokenizer, {"max_length": 128})
    assert from_jsonl.items == from_parquet.items


def test_collator_keeps_pairs_adjacent_and_pads_rows(tokenizer, tmp_path):
    ds = PreferenceDataset(str(write_parquet(tmp_path / "p.parquet", preference_rows())), tokenizer, {"max_length": 128})
    batch = PreferenceCollator(rows_per_batch=6, pad_token_id=tokenizer.pad_token_id)([ds[1], ds[0], ds[2]])
    assert batch["row_kind"].tolist() == [KIND_OUT_OF_SCOPE, KIND_CHOSEN, KIND_REJECTED, KIND_NEAR_SCOPE, KIND_PADDING, KIND_PADDING]
    assert batch["input_ids"].size(0) == 6
    assert int(batch["loss_mask"].unbind()[-1].sum()) == 0
    assert batch["example_index"].tolist() == [1, 0, 0, 2, -1, -1]
    with pytest.raises(ValueError, match="exceed"):
        PreferenceCollator(rows_per_batch=2, pad_token_id=0)([ds[0], ds[1]])


def test_bad_rows_name_file_row_and_field(tokenizer, tmp_path):
    rows = preference_rows()
    rows[2]["response"] = ""
    path = write_parquet(tmp_path / "bad.parquet", rows)
    with pytest.raises(InputError, match=r"bad\.parquet: record 2: response: missing or empty") as error:
        PreferenceDataset(str(path), tokenizer, {"max_length": 128})
    assert (error.value.file, error.value.entry, error.value.field) == (str(path), "record 2", "response")
    rows = preference_rows()
    rows[0]["kind"] = "pairs"
    with pytest.raises(InputError, match=r"record 0: kind: 'pairs' is not one of"):
        PreferenceDataset(str(write_parquet(tmp_path / "k.parquet", rows)), tokenizer, {"max_length": 128})
    with pytest.raises(InputError, match=r"record 0: chosen: .*max_length"):
        PreferenceDataset(str(write_parquet(tmp_path / "long.parquet", preference_rows())), tokenizer, {"max_length": 12})


def test_a_file_without_usable_rows_is_named(tokenizer, tmp_path):
    path = write_parquet(tmp_path / "constraints.parquet", preference_rows()[1:])
    with pytest.raises(InputError, match=r"constraints\.parquet: no usable rows of kinds \['pair'\]"):
        PreferenceDataset(str(path), tokenizer, {"max_length": 128}, kinds=["pair"])
