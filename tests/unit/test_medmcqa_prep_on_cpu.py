"""MedMCQA prep: 1-based labels, deterministic subsets, no test split, bad rows named by line+field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep import medmcqa
from verl.utils.reward_score import calibration, registry, rlcr
from verlkit.records import InputError

SAMPLE = medmcqa.DEFAULT_INPUT


def _rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def _raw(split: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / f"{split}.json").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("medmcqa")
    rc = medmcqa.main(["--out", str(out), "--train-size", "25", "--dev-size", "10", "--seed", "42"])
    assert rc == 0
    return out


def test_sample_files_look_like_the_original_release():
    train, dev, test = _raw("train"), _raw("dev"), _raw("test")
    assert (len(train), len(dev), len(test)) == (40, 16, 8)
    assert all(1 <= r["cop"] <= 4 for r in train + dev)
    assert {r["cop"] for r in train} == {1, 2, 3, 4}
    assert all("cop" not in r for r in test)  # unlabeled, like the real test.json
    assert set(train[0]) >= {"id", "question", "opa", "opb", "opc", "opd", "cop", "choice_type", "exp",
                             "subject_name", "topic_name"}


def test_rows_follow_the_schema_and_keep_cop_one_based(prepared):
    raw = {r["id"]: r for r in _raw("train") + _raw("dev")}
    for design, source in (("cgp", "medmcqa_cgp"), ("rlcr", "medmcqa_rlcr")):
        for split in ("train", "dev"):
            rows = _rows(prepared / design / f"{split}.parquet")
            for i, row in enumerate(rows):
                info = row["extra_info"]
                original = raw[info["id"]]
                assert row["data_source"] == source and row["ability"] == "medical_mcq"
                assert row["reward_model"]["ground_truth"] == str(original["cop"])
                assert info["options"] == [original[k] for k in ("opa", "opb", "opc", "opd")]
                # the gold option text is the cop-th option, counting from 1
                assert info["options"][int(row["reward_model"]["ground_truth"]) - 1] == \
                    [original["opa"], original["opb"], original["opc"], original["opd"]][original["cop"] - 1]
                assert info["split"] == split and info["index"] == i
                assert registry.resolve(row["data_source"]) is not None
    cgp_row = _rows(prepared / "cgp" / "dev.parquet")[0]
    assert [m["role"] for m in cgp_row["prompt"]] == ["user"]
    assert cgp_row["prompt"][0]["content"] == calibration.build_policy_prompt(
        cgp_row["extra_info"]["question"], cgp_row["extra_info"]["options"])
    assert cgp_row["reward_model"]["style"] == "model"
    rlcr_row = _rows(prepared / "rlcr" / "dev.parquet")[0]
    assert [m["role"] for m in rlcr_row["prompt"]] == ["system", "user"]
    assert rlcr_row["prompt"][0]["content"] == rlcr.SYSTEM_PROMPT


def test_subsets_are_deterministic_and_seed_dependent(tmp_path, prepared):
    again = tmp_path / "again"
    assert medmcqa.main(["--out", str(again), "--train-size", "25", "--dev-size", "10", "--seed", "42"]) == 0
    first = json.loads((prepared / "manifest.json").read_text())["ids"]
    second = json.loads((again / "manifest.json").read_text())["ids"]
    assert first == second
    assert len(first["train"]) == 25 and len(first["dev"]) == 10
    assert len(set(first["train"])) == 25
    other = tmp_path / "other"
    assert medmcqa.main(["--out", str(other), "--train-size", "25", "--dev-size", "10", "--seed", "7"]) == 0
    assert json.loads((other / "manifest.json").read_text())["ids"] != first
    # the cgp and rlcr files hold the same questions
    assert [r["extra_info"]["id"] for r in _rows(prepared / "cgp" / "dev.parquet")] == first["dev"]
    assert [r["extra_info"]["id"] for r in _rows(prepared / "rlcr" / "dev.parquet")] == first["dev"]


def test_dev_all_and_design_choice(tmp_path):
    assert medmcqa.main(["--out", str(tmp_path), "--design", "rlcr", "--dev-size", "all"]) == 0
    assert not (tmp_path / "cgp").exists()
    dev_ids = [r["extra_info"]["id"] for r in _rows(tmp_path / "rlcr" / "dev.parquet")]
    assert dev_ids == [r["id"] for r in _raw("dev")]  # all, in file order
    assert len(_rows(tmp_path / "rlcr" / "train.parquet")) == 40  # --train-size larger than the file


def test_test_split_never_reaches_the_output(prepared):
    test_ids = {r["id"] for r in _raw("test")}
    files = list(prepared.rglob("*.parquet"))
    assert {f.stem for f in files} == {"train", "dev"}
    for f in files:
        for row in _rows(f):
            assert row["extra_info"]["split"] in ("train", "dev")
            assert row["extra_info"]["id"] not in test_ids


def _write_bad(tmp_path: Path, line_no: int, patch: dict, drop: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(SAMPLE / "dev.json", folder / "dev.json")
    lines = (SAMPLE / "train.json").read_text().splitlines()
    record = json.loads(lines[line_no - 1])
    record.update(patch)
    for key in drop:
        record.pop(key)
    lines[line_no - 1] = json.dumps(record)
    (folder / "train.json").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("patch, drop, field, needle", [
    ({"cop": 0}, (), "cop", "1..4"),
    ({"cop": 5}, (), "cop", "1..4"),
    ({"cop": "2"}, (), "cop", "1..4"),
    ({}, ("opc",), "opc", "missing"),
    ({"opb": "  "}, (), "opb", "missing or empty"),
    ({"question": ""}, (), "question", "missing"),
])
def test_bad_rows_are_rejected_naming_file_line_and_field(tmp_path, patch, drop, field, needle):
    folder = _write_bad(tmp_path, 7, patch, drop)
    with pytest.raises(medmcqa.MedMCQAFormatError) as err:
        medmcqa.build(folder, tmp_path / "out", ("cgp",), 10, 5, 42)
    message = str(err.value)
    assert "train.json: line 7: " in message and f": {field}: " in message and needle in message
    assert isinstance(err.value, InputError) and (err.value.entry, err.value.field) == ("line 7", field)
    # the CLI reports it and exits 1 without a traceback; --skip-invalid skips and counts it
    assert medmcqa.main(["--input", str(folder), "--out", str(tmp_path / "cli")]) == 1
    assert medmcqa.main(["--input", str(folder), "--out", str(tmp_path / "skip"), "--skip-invalid"]) == 0
    manifest = json.loads((tmp_path / "skip" / "manifest.json").read_text())
    assert manifest["skipped_invalid"] == {"train": 1, "dev": 0} and manifest["sizes"]["train"] == 39


def test_invalid_json_line_is_named(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    shutil.copy(SAMPLE / "dev.json", folder / "dev.json")
    lines = (SAMPLE / "train.json").read_text().splitlines()
    lines[2] = lines[2][:-5]
    (folder / "train.json").write_text("\n".join(lines) + "\n")
    with pytest.raises(medmcqa.MedMCQAFormatError, match=r"train\.json: line 3: not valid JSON"):
        medmcqa.read_split(folder / "train.json")


def test_written_files_pass_the_project_validator(prepared):
    validate = pytest.importorskip("data_prep.validate")
    problems = validate.validate_files([str(p) for p in prepared.rglob("*.parquet")])
    assert problems == []
