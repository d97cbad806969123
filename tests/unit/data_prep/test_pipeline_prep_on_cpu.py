"""SFT → DPO → RLOO data prep (data_prep.pipeline): cleaning, seeded subsets, held-out prompts kept out
of training, the judge's pairs kept apart from the reward model's, and outputs that validate."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from support.files import read, write_jsonl
from support.pipeline_records import chat, pair, turn

from data_prep import pipeline
from data_prep.common import InputError, read_records
from data_prep.pipeline import EvalLeakError, Inputs, JudgeOverlapError, Sizes, prepare
from data_prep.pipeline_inputs import Chat, parse_preference
from data_prep.validate import validate_files, validate_rows

PARQUET_OUTPUTS = [relative for relative, _ in pipeline.OUTPUTS.values()]


def small_inputs(tmp_path: Path, *, train=None, test=None, chats=None) -> Inputs:
    chats = chats if chats is not None else [chat(f"chat question {i}") for i in range(10)]
    train = train if train is not None else [pair(f"train question {i}") for i in range(12)]
    test = test if test is not None else [pair(f"test question {i}") for i in range(6)]
    return Inputs(write_jsonl(tmp_path / "in" / "chats.jsonl", chats),
                  write_jsonl(tmp_path / "in" / "uf_train.jsonl", train),
                  write_jsonl(tmp_path / "in" / "uf_test.jsonl", test))


def test_bad_input_stops_before_anything_is_written_unless_skipped(tmp_path: Path) -> None:
    chats = [chat(f"chat question {i}") for i in range(10)]
    chats[4] = {"messages": [turn("user", "no reply")]}
    inputs = small_inputs(tmp_path, chats=chats)
    with pytest.raises(InputError, match=r"chats\.jsonl: record 4: messages: has no assistant turn"):
        prepare(tmp_path / "out", inputs)
    assert not (tmp_path / "out").exists()

    manifest = prepare(tmp_path / "out", inputs, skip_invalid=True)
    assert manifest["inputs"]["smoltalk"]["invalid_skipped"] == 1
    assert "record 4" in manifest["first_invalid_records"][0]
    assert manifest["outputs"]["sft/train"]["rows"] + manifest["outputs"]["sft/val"]["rows"] == 9


# ---------------------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------------------
def test_duplicate_prompts_and_identical_replies_are_dropped_and_counted(tmp_path: Path) -> None:
    train = [
        pair("first question", prompt_id="id-1"),
        pair("second question", prompt_id="id-2", chosen="Same text.", rejected="Same text."),
        pair("another text, same id", prompt_id="id-1"),                 # duplicate by prompt_id
        pair("  FIRST   question ", prompt_id="id-9"),                   # duplicate by text
        pair("third question"),
        pair("third question", chosen="A later, different pair."),      # duplicate by text (derived id)
        pair("fourth question", prompt_id="id-4"),
    ]
    # no judge split here, so every kept pair is in prefs/train (the judge split has tests of its own)
    manifest = prepare(tmp_path / "out", small_inputs(tmp_path, train=train), judge_fraction=0)
    counts = manifest["inputs"]["ultrafeedback_train"]
    assert (counts["records"], counts["duplicate_prompts_dropped"], counts["identical_replies_dropped"]) == (7, 3, 1)

    prefs = read(tmp_path / "out" / "prefs/train.parquet")
    assert [r["prompt"][0]["content"] for r in prefs] == ["first question", "third question", "fourth question"]
    assert prefs[1]["chosen"] == "A helpful and kind answer."  # the first record of a prompt is kept
    # The pair with identical replies has no preference, but its prompt still serves RL.
    rl = read(tmp_path / "out" / "rl/train.parquet")
    assert [r["prompt"][0]["content"] for r in rl] == ["first question", "second question", "third question",
                                                      "fourth question"]
    assert [r["extra_info"]["index"] for r in rl] == [0, 1, 4, 6]


def test_bundled_samples_exercise_the_cleaning(tmp_path: Path) -> None:
    assert len(read_records(pipeline.DEFAULT_SMOLTALK)) == 48
    assert len(read_records(pipeline.DEFAULT_ULTRAFEEDBACK_TRAIN)) == 64
    assert len(read_records(pipeline.DEFAULT_ULTRAFEEDBACK_TEST)) == 24
    assert pipeline.main(["--out", str(tmp_path / "out")]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    train = manifest["inputs"]["ultrafeedback_train"]
    assert (train["duplicate_prompts_dropped"], train["identical_replies_dropped"]) == (2, 1)
    rows = {name: info["rows"] for name, info in manifest["outputs"].items()}
    # 61 cleaned pairs: a quarter (round(15.25) = 15) kept for the judge, 46 for DPO and the reward model
    assert rows == {"sft/train": 43, "sft/val": 5, "prefs/train": 46, "prefs/judge": 15, "prefs/test": 24,
                    "rl/train": 62, "eval/prompts": 24}
    assert manifest["judge_split"] == {"fraction": 0.25, "rows": 15, "overlap_dropped": 0,
                                       "prompts_shared_with_prefs_train": 0}
    assert manifest["inputs"]["smoltalk"]["sha256"] == hashlib.sha256(pipeline.DEFAULT_SMOLTALK.read_bytes()).hexdigest()
    # Separable on purpose: every chosen reply is longer than every rejected one.
    prefs = read(tmp_path / "out" / "prefs/train.parquet")
    assert min(len(r["chosen"].split()) for r in prefs) > 3 * max(len(r["rejected"].split()) for r in prefs)
    assert max(len(r["chosen"].split()) for r in prefs) < 60
    assert len({r["rejected"] for r in prefs}) >= 5


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def test_outputs_validate_and_have_the_documented_shape(tmp_path: Path) -> None:
    conversation = [turn("system", "Be brief."), turn("user", "multi turn question")]
    train = [pair(f"train question {i}", score_chosen=8.5, score_rejected=2) for i in range(11)]
    train.append({"prompt": "multi turn question", "chosen": conversation + [turn("assistant", "A kind reply.")],
                  "rejected": conversation + [turn("assistant", "No.")]})
    out = tmp_path / "out"
    prepare(out, small_inputs(tmp_path, train=train), judge_fraction=0)  # every pair in prefs/train, in order
    for name, (relative, kind) in pipeline.OUTPUTS.items():
        if name != "prefs/judge":
            assert validate_files([out / relative], kind=kind) == [], relative
    assert not (out / "prefs/judge.parquet").exists()

    sft = read(out / "sft/train.parquet")
    assert list(sft[0]) == ["messages"] and sft[0]["messages"][-1]["role"] == "assistant"
    prefs = read(out / "prefs/train.parquet")
    assert list(prefs[0]) == ["prompt", "chosen", "rejected", "prompt_id", "score_chosen", "score_rejected"]
    assert prefs[0]["prompt"] == [turn("user", "train question 0")]
    assert (prefs[0]["chosen"], prefs[0]["rejected"]) == ("A helpful and kind answer.", "No idea.")
    assert (prefs[0]["score_chosen"], prefs[0]["score_rejected"]) == (8.5, 2.0)
    assert math.isnan(prefs[-1]["score_chosen"])
    assert prefs[-1]["prompt"] == conversation

    rl = read(out / "rl/train.parquet")
    last = rl[-1]
    assert last["data_source"] == "ultrafeedback" and last["ability"] == "chat"
    assert last["reward_model"] == {"style": "model", "ground_truth": ""}
    assert last["prompt"] == conversation
    info = last["extra_info"]
    assert info["prompt_messages"] == conversation
    assert (info["split"], info["index"], info["prompt_id"]) == ("train", 11, prefs[-1]["prompt_id"])
    assert {"score_chosen", "score_rejected"} <= set(info)

    evals = read(out / "eval/prompts.parquet")
    assert list(evals[0]) == ["prompt", "prompt_id"]
    assert {r["prompt"][0]["content"] for r in evals} == {f"test question {i}" for i in range(6)}
    assert len(read(out / "prefs/test.parquet")) == 6


def test_sft_validation_split(tmp_path: Path) -> None:
    chats = [Chat("c", i, [turn("user", f"q{i}"), turn("assistant", "a")]) for i in range(100)]
    train, val = pipeline.split_sft(chats, None, seed=42)
    assert (len(train), len(val)) == (90, 10)
    assert not {c.index for c in train} & {c.index for c in val}
    small_train, small_val = pipeline.split_sft(chats, 18, seed=42)
    assert (len(small_train), len(small_val)) == (18, 2)
    # The held-out chats do not move with the training size: a smaller run validates on a subset.
    assert {c.index for c in small_val} <= {c.index for c in val}
    assert len(pipeline.split_sft(chats[:3], None, seed=42)[1]) == 1
    with pytest.raises(InputError, match="at least 2 chats"):
        pipeline.split_sft(chats[:1], None, seed=42)


def test_same_seed_same_bytes_other_seed_other_subsets(tmp_path: Path) -> None:
    inputs = small_inputs(tmp_path, train=[pair(f"train question {i}") for i in range(40)],
                          test=[pair(f"test question {i}") for i in range(20)],
                          chats=[chat(f"chat question {i}") for i in range(40)])
    sizes = Sizes(sft=10, dpo=12, rm_test=5, rl=15, eval=8)
    prepare(tmp_path / "a", inputs, sizes, seed=7)
    prepare(tmp_path / "b", inputs, sizes, seed=7)
    prepare(tmp_path / "c", inputs, sizes, seed=8)
    for relative in PARQUET_OUTPUTS:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes(), relative
    assert read(tmp_path / "a" / "prefs/train.parquet") != read(tmp_path / "c" / "prefs/train.parquet")
    assert read(tmp_path / "a" / "eval/prompts.parquet") != read(tmp_path / "c" / "eval/prompts.parquet")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["sizes_requested"]["dpo"] == 12
    rows = {name: info["rows"] for name, info in manifest["outputs"].items()}
    # the judge's pairs: a quarter of the 40 (10), kept apart before prefs/train's 12 are drawn from the rest
    assert rows == {"sft/train": 10, "sft/val": 1, "prefs/train": 12, "prefs/judge": 10, "prefs/test": 5,
                    "rl/train": 15, "eval/prompts": 8}


# ---------------------------------------------------------------------------------------------
# Held-out prompts never reach training
# ---------------------------------------------------------------------------------------------
def test_eval_prompt_in_sft_chats_is_an_error(tmp_path: Path) -> None:
    chats = [chat(f"chat question {i}") for i in range(10)]
    chats[6] = {"messages": [turn("user", "hello"), turn("assistant", "hi"),
                             turn("user", "Test   question 2"), turn("assistant", "ok")]}
    with pytest.raises(EvalLeakError) as raised:
        prepare(tmp_path / "out", small_inputs(tmp_path, chats=chats))
    message = str(raised.value)
    assert "uf_test.jsonl: record 2" in message and "chats.jsonl: record 6" in message
    assert "eval/prompts" in message and "sft/" in message
    assert not (tmp_path / "out").exists()  # checked before anything is written


def test_eval_prompt_in_preference_train_is_an_error_or_dropped(tmp_path: Path) -> None:
    train = [pair(f"train question {i}") for i in range(12)]
    train[3] = pair("test question 4")
    inputs = small_inputs(tmp_path, train=train)
    assert pipeline.main(["--out", str(tmp_path / "out"), "--smoltalk", str(inputs.smoltalk),
                          "--ultrafeedback-train", str(inputs.ultrafeedback_train),
                          "--ultrafeedback-test", str(inputs.ultrafeedback_test)]) == 1
    with pytest.raises(EvalLeakError, match=r"uf_train\.jsonl: record 3") as raised:
        prepare(tmp_path / "out", inputs)
    assert "prefs/train" in str(raised.value) and "rl/train" in str(raised.value)

    manifest = prepare(tmp_path / "out", inputs, drop_eval_overlap=True)
    assert manifest["eval_overlap_dropped"] == {"sft": 0, "prefs": 1, "rl": 1}
    held_out = {r["prompt"][0]["content"] for r in read(tmp_path / "out" / "eval/prompts.parquet")}
    for relative in ("prefs/train.parquet", "rl/train.parquet"):
        assert not {r["prompt"][0]["content"] for r in read(tmp_path / "out" / relative)} & held_out


def test_find_leaks_is_exact_about_what_leaks() -> None:
    held = parse_preference(pair("What is tea?"), source="test.jsonl", index=0)
    similar = parse_preference(pair("What is green tea?"), source="train.jsonl", index=0)
    same = parse_preference(pair("what is  TEA?"), source="train.jsonl", index=1)
    assert pipeline.find_leaks({"eval/prompts": [held]}, {"rl/train": [similar]}) == []
    leaks = pipeline.find_leaks({"eval/prompts": [held]}, {"rl/train": [similar, same]})
    assert len(leaks) == 1 and "train.jsonl: record 1" in leaks[0]


# ---------------------------------------------------------------------------------------------
# The win-rate judge's pairs are kept apart from the reward model's
# ---------------------------------------------------------------------------------------------
def prompts_of(path: Path) -> set[str]:
    return {m["content"] for row in read(path) for m in row["prompt"] if m["role"] == "user"}


def test_judge_pairs_share_no_prompt_with_the_reward_models(tmp_path: Path) -> None:
    out = tmp_path / "out"
    manifest = prepare(out, small_inputs(tmp_path))  # 12 training pairs: 3 for the judge, 9 for prefs/train
    judge, reward = prompts_of(out / "prefs/judge.parquet"), prompts_of(out / "prefs/train.parquet")
    assert (len(judge), len(reward)) == (3, 9)
    assert not judge & reward
    assert judge | reward == {f"train question {i}" for i in range(12)}
    assert validate_files([out / "prefs/judge.parquet"], kind="preference") == []
    assert manifest["outputs"]["prefs/judge"] == {"path": "prefs/judge.parquet", "rows": 3}
    assert manifest["judge_split"]["prompts_shared_with_prefs_train"] == 0
    # RL prompts are all the training prompts: the judge scores the policy's replies, it does not train it
    assert len(read(out / "rl/train.parquet")) == 12


def test_a_judge_pair_sharing_a_user_turn_with_a_training_pair_is_dropped() -> None:
    single = parse_preference(pair("q1"), source="uf.jsonl", index=0)
    follow_up = [turn("user", "q1"), turn("assistant", "an answer"), turn("user", "q2")]
    multi = parse_preference({"prompt": "q2", "chosen": follow_up + [turn("assistant", "Kind.")],
                              "rejected": follow_up + [turn("assistant", "No.")]}, source="uf.jsonl", index=1)
    training, judge, dropped = pipeline.split_judge_pairs([single, multi], 0.5, seed=0)
    # whichever of the two the seed sends to the judge, it shares "q1" with the other: dropped
    assert (len(training), judge, dropped) == (1, [], 1)
    assert pipeline.split_judge_pairs([single, multi], 0.0, seed=0) == ([single, multi], [], 0)


def test_judge_pairs_overlapping_the_training_pairs_stop_the_run(tmp_path: Path, monkeypatch) -> None:
    """The check on the finished outputs is a proof, not a formality: hand it overlapping splits."""
    def overlapping(pairs, fraction, seed):
        return list(pairs), [pairs[2]], 0

    monkeypatch.setattr(pipeline, "split_judge_pairs", overlapping)
    with pytest.raises(JudgeOverlapError) as raised:
        prepare(tmp_path / "out", small_inputs(tmp_path))
    message = str(raised.value)
    assert "kept for the judge in prefs/judge" in message and "is also in prefs/train" in message
    assert message.count("uf_train.jsonl: record 2") == 2  # the judge's record and the training record
    assert not (tmp_path / "out").exists()


def test_no_judge_split_and_a_bad_fraction(tmp_path: Path) -> None:
    inputs = small_inputs(tmp_path)
    manifest = prepare(tmp_path / "none", inputs, judge_fraction=0)
    assert "prefs/judge" not in manifest["outputs"] and manifest["outputs"]["prefs/train"]["rows"] == 12
    assert not (tmp_path / "none" / "prefs/judge.parquet").exists()
    args = ["--smoltalk", str(inputs.smoltalk), "--ultrafeedback-train", str(inputs.ultrafeedback_train),
            "--ultrafeedback-test", str(inputs.ultrafeedback_test)]
    assert pipeline.main(["--out", str(tmp_path / "bad"), *args, "--judge-fraction", "1"]) == 1
    assert pipeline.main(["--out", str(tmp_path / "half"), *args, "--judge-fraction", "0.5", "--judge-size", "2"]) == 0
    assert len(read(tmp_path / "half" / "prefs/judge.parquet")) == 2
    assert len(read(tmp_path / "half" / "prefs/train.parquet")) == 6


# ---------------------------------------------------------------------------------------------
# Validator checks for the new row kinds
# ---------------------------------------------------------------------------------------------
def _problems(rows: list[dict], kind: str) -> set[tuple[int | None, str]]:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return {(p.row, p.field) for p in validate_rows(rows, columns, name="x", kind=kind)}


def test_validator_preference_rows_with_string_replies() -> None:
    prompt = [turn("user", "q")]
    rows = [
        {"prompt": prompt, "chosen": "good", "rejected": "bad", "prompt_id": "a", "score_chosen": math.nan},
        {"prompt": prompt, "chosen": "same", "rejected": "same", "prompt_id": "b", "score_chosen": 1.0},
        {"prompt": prompt + [turn("assistant", "a reply left in the prompt")], "chosen": "x", "rejected": "y",
         "prompt_id": "c", "score_chosen": 1.0},
        {"prompt": prompt, "chosen": " ", "rejected": [turn("assistant", "fine")], "prompt_id": "", "score_chosen": "9"},
    ]
    assert _problems(rows, "preference") == {(1, "rejected"), (2, "prompt"), (3, "chosen"), (3, "prompt_id"),
                                             (3, "score_chosen")}


def test_validator_prompt_rows() -> None:
    rows = [
        {"prompt": [turn("system", "s"), turn("user", "q")], "prompt_id": "a"},
        {"prompt": [turn("user", "q"), turn("assistant", "a")], "prompt_id": "b"},
        {"prompt": [turn("user", "q2")], "prompt_id": "a"},
        {"prompt": [turn("user", "q3")], "prompt_id": None},
    ]
    assert _problems(rows, "prompts") == {(1, "prompt"), (2, "prompt_id"), (3, "prompt_id")}
    assert _problems([{"prompt": [turn("user", "q")]}], "prompts") == {(None, "prompt_id")}


def test_validator_accepts_an_empty_ground_truth_only_for_model_style_rows() -> None:
    def rl(style: str) -> dict:
        return {"data_source": pipeline.DATA_SOURCE, "prompt": [turn("user", "q")],
                "reward_model": {"style": style, "ground_truth": ""},
                "extra_info": {"prompt_messages": [turn("user", "q")]}}

    assert _problems([rl("model")], "rl") == set()
    assert _problems([rl("rule")], "rl") == {(0, "reward_model.ground_truth")}
    no_prompt = rl("model")
    no_prompt["extra_info"] = {"prompt_messages": []}
    assert (0, "extra_info.prompt_messages") in _problems([no_prompt], "rl")


def test_trainers_datasets_read_the_outputs(tmp_path: Path, tiny_model_dir: Path) -> None:
    """What the SFT and preference trainers load: verl's multi-turn SFT dataset (loss on assistant
    turns only) and the project's preference dataset (string replies after the prompt)."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from verlkit.preference.data import KIND_CHOSEN, KIND_REJECTED, PreferenceDataset
    from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset

    out = tmp_path / "out"
    prepare(out, sizes=Sizes(sft=8, dpo=6))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    sft = MultiTurnSFTDataset(str(out / "sft/train.parquet"), tokenizer, OmegaConf.create({"max_length": 256}))
    assert len(sft) == 8
    first = read(out / "sft/train.parquet")[0]["messages"]
    item = sft[0]
    trained_on = tokenizer.decode(item["input_ids"][item["loss_mask"].bool()])
    assert first[-1]["content"] in trained_on
    assert all(m["content"] not in trained_on for m in first if m["role"] != "assistant")

    prefs = PreferenceDataset(str(out / "prefs/train.parquet"), tokenizer, {"max_length": 256})
    assert len(prefs) == 6 and prefs.kind_counts() == {KIND_CHOSEN: 6, KIND_REJECTED: 6}
    row = read(out / "prefs/train.parquet")[0]
    chosen = prefs.items[0]["sequences"][0]
    reply = tokenizer.decode([t for t, m in zip(chosen["input_ids"], chosen["loss_mask"]) if m])
    assert reply.startswith(row["chosen"]) and row["prompt"][-1]["content"] not in reply
