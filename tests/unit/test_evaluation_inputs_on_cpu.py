"""Every evaluation CLI reads its input with verlkit.records and reports a bad record as an InputError
naming the file, the entry and the field, before any request is sent."""

from __future__ import annotations

import asyncio
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from verlkit.evaluation import calibration, reward_model, winrate
from verlkit.records import InputError

USER = [{"role": "user", "content": "What is tea?"}]


def write(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def assert_names(error: InputError, path, entry: str, field: str) -> None:
    assert (error.file, error.entry, error.field) == (str(path), entry, field)
    assert str(error).startswith(f"{path}: {entry}: {field}: ")


def test_calibration_rows(tmp_path):
    row = {"prompt": USER, "reward_model": {"ground_truth": "2"}, "extra_info": {"question": "q", "options": ["a", "b"]}}
    path = write(tmp_path / "dev.parquet", [row, {**row, "extra_info": None}])
    with pytest.raises(InputError) as raised:
        calibration.load_rows(path)
    assert_names(raised.value, path, "record 1", "extra_info")
    assert len(calibration.load_rows(write(tmp_path / "ok.parquet", [row]))) == 1


def test_calibration_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    path = write(tmp_path / "dev.parquet", [{"prompt": USER, "reward_model": None, "extra_info": {"id": "1"}}])
    rc = calibration.main(["--design", "rlcr", "--data", str(path), "--out", str(tmp_path / "out"),
                           "--policy-url", "http://127.0.0.1:9/v1", "--policy-model", "p"])
    assert rc == 2 and f"{path}: record 0: reward_model: missing or empty" in capsys.readouterr().err


def test_winrate_prompts(tmp_path):
    rows = [{"prompt_id": "a", "prompt": USER}, {"prompt_id": "b", "prompt": [{"role": "robot", "content": "hi"}]}]
    path = write(tmp_path / "prompts.parquet", rows)
    with pytest.raises(InputError) as raised:
        winrate.load_prompts(path)
    assert_names(raised.value, path, "record 1", "prompt[0].role")
    mixed = tmp_path / "mixed.jsonl"  # a plain string is one user turn (parquet cannot mix it with lists)
    mixed.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"prompt_id": "c", "prompt": "plain text"}) + "\n")
    ok = winrate.load_prompts(mixed)
    assert ok == [{"prompt_id": "a", "prompt": USER}, {"prompt_id": "c", "prompt": [{"role": "user", "content": "plain text"}]}]


def test_reward_model_pairs(tmp_path):
    rows = [{"prompt": USER, "chosen": "Green or black.", "rejected": "No idea."},
            {"prompt": USER, "chosen": "Green or black.", "rejected": ""}]
    path = write(tmp_path / "pairs.parquet", rows)
    with pytest.raises(InputError) as raised:  # raised before the (absent) client is used
        asyncio.run(reward_model.evaluate_pairs(path, client=None, tokenizer_dir="unused"))
    assert_names(raised.value, path, "record 1", "rejected")


def test_jsonl_input_names_the_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt_id": "a", "prompt": [{"role": "user", "content": "hi"}]}\n{"prompt_id": \n')
    with pytest.raises(InputError) as raised:
        winrate.load_prompts(path)
    assert (raised.value.file, raised.value.entry) == (str(path), "line 2")
