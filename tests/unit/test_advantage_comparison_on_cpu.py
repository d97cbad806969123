"""``python -m verlkit.runs.advantages``: the trained advantages of a dump next to GRPO's on the same
batch. Expected values by hand."""

from __future__ import annotations

import json

import pytest

from verlkit.runs import advantages


def test_grpo_advantages_by_hand():
    # group a: scores 1, 1, 2, 1 -> mean 1.25, unbiased std 0.5 -> -0.5, -0.5, 1.5, -0.5
    # group b: 3, 1 -> mean 2, std sqrt(2) = 1.414214 -> ±0.707107; group c alone: (4 - 0) / 1
    got = advantages.grpo_advantages([1, 1, 2, 1, 3, 1, 4], ["a", "a", "a", "a", "b", "b", "c"])
    assert got == pytest.approx([-0.5, -0.5, 1.5, -0.5, 0.707107, -0.707107, 4.0], abs=1e-5)
    assert advantages.grpo_advantages([3, 1], ["b", "b"], norm_by_std=False) == [1.0, -1.0]


def test_table_and_cli_on_a_dump(tmp_path, capsys):
    dump = tmp_path / "adv.jsonl"
    rows = [
        {"step": 1, "uid": "u", "score": 1.0, "advantage": -0.69, "response_tokens": 3, "components": {"f": 1, "a": 0}},
        {"step": 1, "uid": "u", "score": 1.0, "advantage": -0.40, "response_tokens": 3, "components": {"f": 0, "a": 1}},
        {"step": 1, "uid": "pad", "score": 0.0, "advantage": 0.0, "response_tokens": 0},
        {"step": 2, "uid": "v", "score": 2.0, "advantage": 0.7, "response_tokens": 2, "components": {"f": 1, "a": 1}},
    ]
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert sorted(advantages.read_dump(dump)) == [1, 2] and len(advantages.read_dump(dump)[1]) == 2
    assert advantages.main([str(dump), "--step", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step 1" and out[1].split() == ["group", "a", "f", "score", "advantage", "grpo"]
    # equal scores: GRPO gives both 0, the dump's (gdpo) advantages differ
    assert [line.split()[-2:] for line in out[2:4]] == [["-0.6900", "+0.0000"], ["-0.4000", "+0.0000"]]
    (tmp_path / "empty.jsonl").write_text("")
    assert advantages.main([str(tmp_path / "empty.jsonl")]) == 1
