"""C3PO's out-of-scope prompts (verlkit.c3po.general_prompts): the bundled file, every accepted
format, dedupe and the seeded shuffle, and errors naming the file, the record and the field."""

from __future__ import annotations

import json

import pytest

from verlkit.c3po.general_prompts import BUNDLED_GENERAL_PROMPTS, load_general_prompts
from verlkit.records import InputError


def test_bundled_general_prompts_are_80_distinct_first_human_turns():
    prompts = load_general_prompts(BUNDLED_GENERAL_PROMPTS)
    assert len(prompts) == 80 == len(set(prompts))
    assert not any("<bot>" in p or "<human>" in p for p in prompts)
    assert load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5) == load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5)
    assert load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5, seed=1) != load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5)
    assert load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5) == prompts[:5]


# ---------------------------------------------------------------------------------------------
# General prompts loader
# ---------------------------------------------------------------------------------------------
def test_general_prompts_formats_dedupe_and_shuffle(tmp_path):
    oig = tmp_path / "chip.jsonl"
    oig.write_text("\n".join([
        json.dumps({"text": "<human>: What is 2+2?\n<bot>: 4\n<human>: and 3+3?\n<bot>: 6"}),
        "",
        json.dumps({"text": "<human>:   What is 2+2?  \n<bot>: four"}),  # duplicate once stripped
        json.dumps({"text": "<human>: \n<bot>: nothing asked"}),  # empty prompt: dropped
        json.dumps({"prompt": "Name a prime."}),
        json.dumps({"instruction": "Summarize the text.", "input": "It rained all day."}),
    ]), encoding="utf-8")
    prompts = load_general_prompts(oig, seed=0)
    assert sorted(prompts) == ["Name a prime.", "Summarize the text.\n\nIt rained all day.", "What is 2+2?"]
    txt = tmp_path / "p.txt"
    txt.write_text("a\n\nb\na\nc\n", encoding="utf-8")
    assert sorted(load_general_prompts(txt)) == ["a", "b", "c"]
    assert len(load_general_prompts(txt, n=2)) == 2
    assert load_general_prompts(txt, n=0) == []


@pytest.mark.parametrize("line,needle", [
    ("{not json", "line 2: not valid JSON"),
    ('{"text": "no speaker tags"}', "record 1: text: has no '<human>:' turn"),
    ('{"question": "x"}', "record 1: no 'prompt', 'instruction' or 'text' field"),
    ('{"prompt": 3}', "record 1: prompt: must be a string"),
    ('[1, 2]', "line 2: expected a JSON object"),
])
def test_general_prompts_errors_name_file_and_line(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.jsonl") as info:
        load_general_prompts(path)
    assert needle in str(info.value)


def test_general_prompts_rejects_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_general_prompts(tmp_path / "absent.jsonl")
    csv = tmp_path / "p.csv"
    csv.write_text("a\n", encoding="utf-8")
    with pytest.raises(InputError, match="expected a .jsonl"):
        load_general_prompts(csv)
    with pytest.raises(ValueError):
        load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=-1)


def test_general_prompts_json_list_of_objects(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"prompt": "Name a prime."}, {"text": "<human>: Hi there\n<bot>: Hello"},
                                {"instruction": "Translate.", "input": "Bonjour"}]), encoding="utf-8")
    assert sorted(load_general_prompts(path)) == ["Hi there", "Name a prime.", "Translate.\n\nBonjour"]
    # plain strings belong in a .txt file (one per line); in JSON every record is an object
    path.write_text(json.dumps(["Name a prime."]), encoding="utf-8")
    with pytest.raises(InputError, match=r"prompts.json: record 0: expected a JSON object, got str"):
        load_general_prompts(path)


def test_general_prompts_dedupe_ignores_case_and_spacing(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("What is a prime?\nwhat  is a PRIME?\nName a prime.\n", encoding="utf-8")
    assert sorted(load_general_prompts(path)) == ["Name a prime.", "What is a prime?"]

