"""The data-prep writers produce parquet that validates, from real input layouts, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep import gsm8k, rubric
from data_prep.common import InputError, rl_row, chat, seeded_sample, split_train_test, write_parquet
from data_prep.validate import DataValidationError, validate_files
from support.files import read, write_jsonl
from verl.utils.reward_score import registry


def _never_called(*args, **kwargs):
    raise AssertionError("data prep must not score anything")


@pytest.fixture(scope="module")
def rubric_sources():
    """The rubric data sources may not be registered yet (another part of the project adds them):
    register stand-ins for the duration of this module only when the real ones are absent."""
    added = []
    if registry.resolve("grade") is None:
        added.append(registry.register_reward(registry.RewardSpec("test_stand_in_grade", _never_called, exact=("grade",))))
    if registry.resolve("polaris_tinyv") is None:
        added.append(registry.register_reward(registry.RewardSpec(
            "test_stand_in_tinyv", _never_called, suffixes=("_tinyv",))))
    yield
    for spec in added:
        registry.REWARDS.remove(spec)


GSM8K_RECORDS = [
    {"question": "Ann has 2 pens and buys 3 more. How many pens does she have?",
     "answer": "Ann has 2+3 = <<2+3=5>>5 pens.\n#### 5"},
    {"question": "A town has 1,000 houses and builds 234 more. How many houses are there now?",
     "answer": "There are 1000+234 = <<1000+234=1234>>1,234 houses.\n#### 1,234"},
    {"question": "It is 3 degrees and gets 5 degrees colder. What is the temperature?",
     "answer": "3-5 = <<3-5=-2>>-2\n#### -2"},
]


def test_gsm8k_from_original_jsonl_layout(tmp_path: Path) -> None:
    src = tmp_path / "gsm8k"
    write_jsonl(src / "train.jsonl", GSM8K_RECORDS)
    write_jsonl(src / "test.jsonl", GSM8K_RECORDS[:1])
    assert gsm8k.main(["--input", str(src), "--out", str(tmp_path / "out")]) == 0
    train, test = read(tmp_path / "out" / "train.parquet"), read(tmp_path / "out" / "test.parquet")
    assert [r["reward_model"] for r in train] == [
        {"style": "rule", "ground_truth": "5"}, {"style": "rule", "ground_truth": "1234"},
        {"style": "rule", "ground_truth": "-2"}]
    row = train[1]
    assert row["data_source"] == "openai/gsm8k" and row["ability"] == "math"
    assert row["prompt"] == [{"role": "user", "content": GSM8K_RECORDS[1]["question"] + " " + gsm8k.INSTRUCTION}]
    assert row["extra_info"] == {"split": "train", "index": 1, "answer": GSM8K_RECORDS[1]["answer"],
                                 "question": GSM8K_RECORDS[1]["question"]}
    assert len(test) == 1 and test[0]["extra_info"]["split"] == "test"
    assert gsm8k.INSTRUCTION == 'Let\'s think step by step and output the final answer after "####".'


def test_gsm8k_from_hf_parquet_layout_with_subsets(tmp_path: Path) -> None:
    src = tmp_path / "hf" / "main"
    src.mkdir(parents=True)
    records = [{"question": f"What is {i} times 2?", "answer": f"{i}*2 = <<{i}*2={2 * i}>>{2 * i}\n#### {2 * i}"}
               for i in range(20)]
    pq.write_table(pa.Table.from_pylist(records), src / "train-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(records[:6]), src / "test-00000-of-00001.parquet")
    out = tmp_path / "out"
    assert gsm8k.main(["--input", str(tmp_path / "hf"), "--out", str(out), "--max-train", "5", "--max-test", "3"]) == 0
    train = read(out / "train.parquet")
    assert len(train) == 5 and len(read(out / "test.parquet")) == 3
    # extra_info.index traces each row back to its record, and the ground truth matches it.
    for row in train:
        assert row["reward_model"]["ground_truth"] == str(2 * row["extra_info"]["index"])
    # Same seed, same subset; another seed, another subset.
    gsm8k.main(["--input", str(tmp_path / "hf"), "--out", str(tmp_path / "again"), "--max-train", "5"])
    gsm8k.main(["--input", str(tmp_path / "hf"), "--out", str(tmp_path / "other"), "--max-train", "5", "--seed", "7"])
    assert read(tmp_path / "again" / "train.parquet") == train
    assert read(tmp_path / "other" / "train.parquet") != train


def test_gsm8k_bundled_sample(tmp_path: Path) -> None:
    assert gsm8k.main(["--out", str(tmp_path)]) == 0
    train, test = read(tmp_path / "train.parquet"), read(tmp_path / "test.parquet")
    assert (len(train), len(test)) == (24, 8)
    indices = sorted(r["extra_info"]["index"] for r in train + test)
    assert indices == list(range(32))
    assert validate_files([tmp_path / "train.parquet", tmp_path / "test.parquet"]) == []


def test_gsm8k_bad_answer_names_file_record_and_field(tmp_path: Path, capsys) -> None:
    src = write_jsonl(tmp_path / "bad.jsonl", [GSM8K_RECORDS[0], {"question": "q?", "answer": "no final marker"}])
    with pytest.raises(InputError, match=rf"{src}: record 1: answer: no number after '####'"):
        gsm8k.build(gsm8k.load_splits(src, test_fraction=0.0, seed=0), tmp_path / "out", max_rows={}, seed=0)
    assert gsm8k.main(["--input", str(src), "--out", str(tmp_path / "out")]) == 1
    assert "record 1: answer" in capsys.readouterr().err
    assert not (tmp_path / "out" / "train.parquet").exists()


def test_rubric_tinyv_sample(tmp_path: Path, rubric_sources) -> None:
    assert rubric.main(["tinyv", "--out", str(tmp_path), "--data-source", "mymath_tinyv"]) == 0
    train, test = read(tmp_path / "train.parquet"), read(tmp_path / "test.parquet")
    assert (len(train), len(test)) == (18, 6)
    samples = [json.loads(line) for line in rubric.TINYV_SAMPLE.read_text().splitlines()]
    row = train[0]
    record = samples[row["extra_info"]["index"]]
    assert row["data_source"] == "mymath_tinyv"
    assert row["prompt"] == [{"role": "system", "content": rubric.BOXED_INSTRUCTION},
                             {"role": "user", "content": record["problem"]}]
    assert row["reward_model"] == {"style": "rule", "ground_truth": record["answer"]}
    assert row["extra_info"] == {"split": "train", "index": row["extra_info"]["index"], "answer": record["answer"],
                                 "question": record["problem"], "criteria": record["criteria"]}
    assert (row["query_id"], row["difficulty"], row["problem"]) == (record["query_id"], record["difficulty"], record["problem"])
    assert validate_files([tmp_path / "train.parquet", tmp_path / "test.parquet"]) == []
    with pytest.raises(InputError, match="must end with '_tinyv'"):
        rubric.build("tinyv", rubric.TINYV_SAMPLE, tmp_path / "x", test_fraction=0.25, seed=0, data_source="polaris")


def test_rubric_tinyv_writes_rule_graded_math_validation_rows(tmp_path: Path, rubric_sources) -> None:
    assert rubric.main(["tinyv", "--out", str(tmp_path)]) == 0
    test, math_rows = read(tmp_path / "test.parquet"), read(tmp_path / "test_math.parquet")
    assert len(math_rows) == 6 and {r["data_source"] for r in math_rows} == {"polaris_math"}
    for tinyv_row, math_row in zip(test, math_rows):  # the same problems, graded by the rule instead
        assert math_row["prompt"] == tinyv_row["prompt"]
        assert math_row["reward_model"] == {"style": "rule", "ground_truth": tinyv_row["extra_info"]["answer"]}
        assert "criteria" not in math_row["extra_info"]
    # only a run that grades unrouted sources with the rule checker knows the source
    assert {p.field for p in validate_files([tmp_path / "test_math.parquet"])} == {"data_source"}
    assert validate_files([tmp_path / "test_math.parquet"], reward_options=rubric.RULE_GRADED) == []
    row = next(r for r in math_rows if r["reward_model"]["ground_truth"] == "391")  # 17 x 23
    out = registry.compute_score(row["data_source"], "17*23 = 391, so \\boxed{391}", "391", **rubric.RULE_GRADED)
    assert out["score"] == 1.0 and out["acc"] == 1.0

    assert rubric.main(["tinyv", "--out", str(tmp_path / "none"), "--math-val-source", "none"]) == 0
    assert not (tmp_path / "none" / "test_math.parquet").exists()
    with pytest.raises(InputError, match="routed to the 'tinyv' reward"):
        rubric.build("tinyv", rubric.TINYV_SAMPLE, tmp_path / "x", test_fraction=0.25, seed=0,
                     math_val_source="Polaris_TinyV_math")


def test_rubric_grade_rows(tmp_path: Path, rubric_sources) -> None:
    assert rubric.main(["grade", "--out", str(tmp_path / "sample")]) == 0
    rows = read(tmp_path / "sample" / "train.parquet") + read(tmp_path / "sample" / "test.parquet")
    assert len(rows) == 24
    for row in rows:
        assert row["data_source"] == "grade"
        assert len(row["prompt"]) == 1 and row["prompt"][0]["role"] == "user"
        content = row["prompt"][0]["content"]
        assert "10 points" in content and "Total Score: <points>/10" in content
        assert content == rubric.build_rubric_prompt(row["extra_info"]["question"], row["extra_info"]["criteria"],
                                                     row["extra_info"]["candidate_answer"])
        assert row["extra_info"]["criteria"] in content and row["extra_info"]["candidate_answer"] in content
        assert 0.0 <= row["reward_model"]["ground_truth"] <= 1.0
    # The rows are what the real `grade` reward consumes: a grader matching the reference scores 1.
    from verl.utils.reward_score import grade

    gt = rows[0]["reward_model"]["ground_truth"]
    reply = f"Criteria checked.\nTotal Score: {gt * 10:g}/10"
    assert grade.compute_score("grade", reply, gt, rows[0]["extra_info"])["score"] == pytest.approx(1.0)

    # score_10 is divided by 10; out-of-range scores are rejected naming the record and field.
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"question": "1+1?", "criteria": "- (10 points) says 2", "answer": "2", "score_10": 7},
        {"question": "2+2?", "criteria": "- (10 points) says 4", "answer": "5", "score": 0.0},
    ])
    rubric.build("grade", src, tmp_path / "mine", test_fraction=0.5, seed=0)
    got = {r["extra_info"]["index"]: r["reward_model"]["ground_truth"]
           for split in ("train", "test") for r in read(tmp_path / "mine" / f"{split}.parquet")}
    assert got == {0: pytest.approx(0.7), 1: 0.0}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "criteria": "c", "answer": "a", "score": 7}])
    with pytest.raises(InputError, match=rf"{bad}: record 0: score: must be in \[0, 1\]"):
        rubric.build("grade", bad, tmp_path / "bad", test_fraction=0.0, seed=0)


def test_rubric_split_is_deterministic(tmp_path: Path, rubric_sources) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        rubric.build("tinyv", rubric.TINYV_SAMPLE, tmp_path / name, test_fraction=0.25, seed=seed)
    a, b, c = (read(tmp_path / n / "test.parquet") for n in "abc")
    assert a == b
    assert [r["extra_info"]["index"] for r in a] != [r["extra_info"]["index"] for r in c]


def test_split_and_sample_helpers() -> None:
    items = list(range(10))
    train, test = split_train_test(items, 0.3, seed=1)
    assert sorted(train + test) == items and len(test) == 3
    assert split_train_test(items, 0.3, seed=1) == (train, test)
    assert split_train_test([1, 2], 0.01, seed=0)[1] != []  # at least one test item
    assert seeded_sample(items, 4, seed=2) == seeded_sample(items, 4, seed=2)
    assert seeded_sample(items, None) == items and seeded_sample(items, 50) == items


def test_write_parquet_refuses_invalid_rows(tmp_path: Path) -> None:
    rows = [rl_row("openai/gsm8k", chat("1+1?"), "2", ability="math", extra_info={"index": 0}),
            rl_row("no_such_source_xyz", chat("2+2?"), "4", ability="math", extra_info={"index": 1})]
    out = tmp_path / "train.parquet"
    with pytest.raises(DataValidationError, match=rf"{out}: row 1: data_source: unknown data source"):
        write_parquet(rows, out)
    assert list(tmp_path.iterdir()) == []  # nothing left behind, not even the temporary file
