"""verlkit.records: the one reader of record files and the one input-error type."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verlkit.records import InputError, chat_messages, read_records, require_field


def test_jsonl_json_and_parquet_give_the_same_records(tmp_path):
    rows = [{"q": "1+1", "a": 2}, {"q": "2+2", "a": 4}]
    (tmp_path / "r.jsonl").write_text('{"q": "1+1", "a": 2}\n\n{"q": "2+2", "a": 4}\n')
    (tmp_path / "r.json").write_text(json.dumps({"data": rows}))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "r.parquet")
    for name in ("r.jsonl", "r.json", "r.parquet"):
        assert read_records(tmp_path / name) == rows, name


def test_a_bad_line_is_named_by_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"q": 1}\n{"q": \n')
    with pytest.raises(InputError, match=r"bad\.jsonl: line 2: not valid JSON") as e:
        read_records(path)
    assert (e.value.file, e.value.entry) == (str(path), "line 2")
    path.write_text('{"q": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match=r"bad\.jsonl: line 2: expected a JSON object, got list"):
        read_records(path)


def test_missing_and_unsupported_files_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"nope\.jsonl: no such file"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "r.csv").write_text("a,b\n")
    with pytest.raises(InputError, match=r"unsupported file type '\.csv'"):
        read_records(tmp_path / "r.csv")


def test_require_field_names_file_entry_and_field():
    with pytest.raises(InputError, match=r"^f\.json: record 4: answer: missing or empty$"):
        require_field({"answer": "  "}, "answer", file="f.json", entry=4)
    assert require_field({"n": 3}, "n", file="f.json", entry=0, types=(int,)) == 3


def test_chat_messages_take_a_string_or_a_list_of_messages():
    where = {"file": "f.parquet", "entry": 3}
    assert chat_messages("Hi", "user", field="prompt", **where) == [{"role": "user", "content": "Hi"}]
    listed = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert chat_messages(listed, "user", field="prompt", **where) == listed
    with pytest.raises(InputError, match=r"f\.parquet: record 3: chosen: missing or empty"):
        chat_messages("  ", "assistant", field="chosen", **where)
    with pytest.raises(InputError, match=r"record 3: prompt\[0\]\.role"):
        chat_messages([{"role": "narrator", "content": "x"}], "user", field="prompt", **where)
    with pytest.raises(InputError, match=r"record 3: prompt: missing"):
        chat_messages(None, "user", field="prompt", **where)
