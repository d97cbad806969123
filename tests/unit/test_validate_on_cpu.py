"""data_prep.validate: every problem names the file, the row and the field; good files pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.validate import format_problems, main, validate_files, validate_rows
from verl.utils.reward_score import registry

REPO = Path(__file__).resolve().parents[2]


def good_row(i: int, data_source: str = "openai/gsm8k") -> dict:
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": f"What is {i} + 1?"}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
        "extra_info": {"split": "train", "index": i},
    }


def write(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    # Written through pandas, as most user scripts do (lists come back as numpy arrays there).
    path = tmp_path / "good.parquet"
    pd.DataFrame([good_row(i) for i in range(4)]).to_parquet(path)
    return path


def test_cli_names_file_row_and_field_for_each_problem(tmp_path: Path, good_file: Path) -> None:
    rows = [good_row(i) for i in range(3)]
    rows[1]["reward_model"] = {"style": "rule"}  # no ground_truth
    missing_gt = write(tmp_path / "missing_gt.parquet", rows)

    rows = [good_row(i) for i in range(2)]
    for row in rows:
        row["prompt"] = row["prompt"][0]["content"]  # a plain string instead of chat messages
    string_prompt = write(tmp_path / "string_prompt.parquet", rows)

    rows = [good_row(i) for i in range(3)]
    rows[2]["data_source"] = "no_such_source_xyz"
    unknown_source = write(tmp_path / "unknown_source.parquet", rows)

    result = subprocess.run(
        [sys.executable, "-m", "data_prep.validate", str(missing_gt), str(string_prompt), str(unknown_source),
         str(good_file)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert f"{missing_gt}: row 1: reward_model.ground_truth: missing" in lines
    assert any(line.startswith(f"{string_prompt}: row 0: prompt: ") and "plain string" in line for line in lines)
    assert any(line.startswith(f"{string_prompt}: row 1: prompt: ") for line in lines)
    unknown = [line for line in lines if line.startswith(f"{unknown_source}: row 2: data_source: ")]
    assert len(unknown) == 1 and "no_such_source_xyz" in unknown[0] and "openai/gsm8k" in unknown[0]
    # Exactly these four problems: the good rows of the bad files and the good file are clean.
    assert len(lines) == 4, lines
    assert not any(str(good_file) in line for line in lines)
    assert f"{good_file}: ok" in result.stderr


def test_good_file_passes(good_file: Path) -> None:
    assert validate_files([good_file]) == []
    assert main([str(good_file)]) == 0
    # In-memory rows straight from pandas carry numpy arrays; they are handled too.
    df = pd.read_parquet(good_file)
    assert validate_rows(df.to_dict("records"), df.columns, name="df") == []


def test_structural_problems(tmp_path: Path) -> None:
    rows = [good_row(i) for i in range(5)]
    rows[0]["prompt"] = []
    rows[1]["prompt"] = [{"role": "robot", "content": "hi"}]
    rows[2]["reward_model"] = {"style": "rule", "ground_truth": ""}
    rows[3]["extra_info"] = None
    rows[4]["data_source"] = ""
    path = write(tmp_path / "bad.parquet", rows)
    found = {(p.row, p.field): p.message for p in validate_files([path])}
    assert found == {
        (0, "prompt"): "empty list of messages",
        (1, "prompt[0].role"): "must be one of system, user, assistant, got 'robot'",
        (1, "prompt"): "has no 'user' message (roles: robot)",
        (2, "reward_model.ground_truth"): "empty string",
        (4, "data_source"): "empty string",
    }

    no_reward = write(tmp_path / "no_reward.parquet", [{k: v for k, v in good_row(0).items() if k != "reward_model"}])
    problems = validate_files([no_reward])
    assert [(p.row, p.field) for p in problems] == [(None, "reward_model")]
    assert str(problems[0]).startswith(f"{no_reward}: reward_model: missing column")

    missing = tmp_path / "nope.parquet"
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello")
    problems = validate_files([missing, not_parquet])
    assert [(p.file, p.field) for p in problems] == [(str(missing), "file"), (str(not_parquet), "file")]


def _scored(data_source, solution_str, ground_truth, extra_info=None, **options):
    return 0.0


def validate_row(row: dict) -> list[str]:
    """The family's row check, named by its spec's ``row_validator``."""
    problems = []
    if not str(row["extra_info"].get("criteria") or "").strip():
        problems.append("extra_info.criteria: missing or empty")
    gt = row["reward_model"]["ground_truth"]
    if not isinstance(gt, float) or not 0.0 <= gt <= 1.0:
        problems += [f"reward_model.ground_truth: must be a number in [0, 1], got {gt!r}", "a message with no field"]
    return problems


def _broken_validator(row: dict) -> list[str]:
    raise KeyError("criteria")


@pytest.fixture
def family():
    added = []

    def register(name, suffix, row_validator):
        added.append(registry.register_reward(registry.RewardSpec(name, _scored, suffixes=(suffix,),
                                                                  row_validator=row_validator)))

    yield register
    for spec in added:
        registry.REWARDS.remove(spec)


def test_the_family_row_validator_is_the_one_row_check(tmp_path: Path, family) -> None:
    family("test_checked_family", "_checked_test", validate_row)
    rows = [good_row(i, data_source="x_checked_test") for i in range(3)]
    for row in rows:
        row["reward_model"]["ground_truth"] = 0.5
        row["extra_info"]["criteria"] = "- (10 points) right answer"
    rows[1]["extra_info"]["criteria"] = "  "
    rows[2]["reward_model"]["ground_truth"] = 1.5
    path = write(tmp_path / "family.parquet", rows)
    found = [(p.row, p.field, p.message) for p in validate_files([path])]
    assert found == [
        (1, "extra_info.criteria", "missing or empty"),
        (2, "reward_model.ground_truth", "must be a number in [0, 1], got 1.5"),
        (2, "row", "a message with no field"),
    ]


def test_a_broken_row_validator_is_reported_not_raised(tmp_path: Path, family) -> None:
    family("test_broken_family", "_broken_test", _broken_validator)
    path = write(tmp_path / "broken.parquet", [good_row(0, data_source="x_broken_test")])
    assert [(p.row, p.field, p.message) for p in validate_files([path])] == [
        (0, "row", f"row validator {__name__}._broken_validator raised KeyError('criteria')")]


@pytest.mark.parametrize("data_source, extra_info, expected", [
    ("x_tinyv", {"split": "train"}, [("extra_info.question", "missing or empty (the verifier prompt needs the question)")]),
    ("medmcqa_cgp", {"question": "q"}, [("extra_info.options", "need a list of at least 2 option strings, got None")]),
    ("ultrafeedback", {"split": "train"}, [("extra_info.prompt_messages", "missing or empty (the prompt's chat messages)")]),
])
def test_our_families_check_their_rows_through_the_registry(tmp_path: Path, data_source, extra_info, expected) -> None:
    row = good_row(0, data_source=data_source)
    row["extra_info"] = extra_info
    row["reward_model"]["ground_truth"] = "1"
    path = write(tmp_path / "ours.parquet", [row])
    assert [(p.field, p.message) for p in validate_files([path])] == expected


def test_listing_stops_after_max_problems_per_file(tmp_path: Path, capsys) -> None:
    rows = [good_row(i, data_source="no_such_source_xyz") for i in range(60)]
    path = write(tmp_path / "many.parquet", rows)
    assert main([str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 51
    assert out[49].startswith(f"{path}: row 49: data_source: ")
    assert out[50] == f"{path}: ... and 10 more problem(s) not listed"
    assert len(format_problems(validate_files([path]), 5)) == 6


def test_sft_and_preference_kinds(tmp_path: Path) -> None:
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    sft = write(tmp_path / "sft.parquet", [{"messages": conv}, {"messages": conv[:1]}])
    problems = validate_files([sft], kind="sft")
    assert [(p.row, p.field) for p in problems] == [(1, "messages")]
    assert "no 'assistant' message" in problems[0].message
    assert main(["--kind", "sft", str(sft)]) == 1

    answer = [{"role": "assistant", "content": "hello"}]
    pref = write(tmp_path / "pref.parquet", [
        {"prompt": conv[:1], "chosen": answer, "rejected": [{"role": "assistant", "content": "go away"}]},
        {"prompt": conv[:1], "chosen": answer, "rejected": answer},
    ])
    problems = validate_files([pref], kind="preference")
    assert [(p.row, p.field, p.message) for p in problems] == [(1, "rejected", "identical to chosen")]
    # An RL file is not a preference file.
    rl = write(tmp_path / "rl.parquet", [good_row(0)])
    problems = validate_files([rl], kind="preference")
    assert [(p.row, p.field) for p in problems] == [(None, "chosen"), (None, "rejected")]


# ---------------------------------------------------------------------------------------------
# The run's reward options: what a row needs depends on them
# ---------------------------------------------------------------------------------------------
RUBRIC = '{"tinyv": {"template": "rubric", "model": "verifier"}}'


def tinyv_rows() -> list[dict]:
    rows = [good_row(i, "polaris_tinyv") for i in range(3)]
    for i, row in enumerate(rows):
        row["extra_info"] = {"question": f"What is {i} + 1?", "criteria": f"Award 10 points for {i + 1}."}
    rows[1]["extra_info"]["criteria"] = " "
    return rows


def test_rubric_template_rows_need_criteria_and_the_cli_says_which(tmp_path: Path, capsys) -> None:
    path = write(tmp_path / "rubric.parquet", tinyv_rows())
    assert validate_files([path]) == []  # the binary TinyV template does not read the rubric
    assert main([str(path)]) == 0
    capsys.readouterr()
    assert main([str(path), "--reward-options", RUBRIC]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{path}: row 1: extra_info.criteria: missing or empty")


def test_rubric_template_from_the_environment_as_the_trainer_reads_it(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path / "rubric.parquet", tinyv_rows())
    monkeypatch.setenv(registry.OPTIONS_ENV, RUBRIC)
    problems = validate_files([path])
    assert [(p.row, p.field) for p in problems] == [(1, "extra_info.criteria")]


@pytest.mark.parametrize("options,rows_flagged", [
    ({"setup": "hybrid", "model": "m"}, [1]),  # the rubric side's default template is the rubric
    ({"setup": "hybrid", "model": "m", "rubric": {"share": 0.25}}, [1]),
    ({"setup": "hybrid", "model": "m", "rubric": {"share": 0}}, []),  # no prompt is flaw-checked
    ({"setup": "hybrid", "model": "m", "rubric": {"template": "tinyv"}}, []),
])
def test_hybrid_rows_need_criteria_when_the_rubric_side_reads_them(tmp_path: Path, options, rows_flagged) -> None:
    path = write(tmp_path / "hybrid.parquet", tinyv_rows())
    problems = validate_files([path], reward_options={"tinyv": options})
    assert [(p.row, p.field) for p in problems] == [(row, "extra_info.criteria") for row in rows_flagged]


def test_routing_options_decide_which_sources_are_known(tmp_path: Path) -> None:
    rows = [good_row(0, "my/math-set"), good_row(1, "Polaris_TinyV")]
    rows[1]["extra_info"] = {"question": "q"}
    path = write(tmp_path / "sources.parquet", rows)
    assert {p.row for p in validate_files([path]) if p.field == "data_source"} == {0, 1}
    original_rule = {"routing": {"match": "original", "fallback": "rule"}}
    assert validate_files([path], reward_options=original_rule) == []


def test_bad_reward_options_stop_the_cli(tmp_path: Path, good_file: Path, capsys) -> None:
    assert main([str(good_file), "--reward-options", '{"tinyvv": {}}']) == 2
    assert "no reward named 'tinyvv'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(good_file), "--reward-options", "[1]"])
