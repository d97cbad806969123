"""Data for the SFT → DPO → RLOO pipeline: SmolTalk-style chats and UltraFeedback-style preferences
-> the SFT, preference, judge, RL and evaluation-prompt parquet files, plus a manifest.

Usage::

    python -m data_prep.pipeline --out DIR [--smoltalk FILE] [--ultrafeedback-train FILE]
        [--ultrafeedback-test FILE] [--seed 42] [--sft-size N] [--dpo-size N] [--judge-size N]
        [--rm-test-size N] [--rl-size N] [--eval-size N] [--judge-fraction 0.25] [--skip-invalid]
        [--drop-eval-overlap]

Inputs are local ``.jsonl``/``.json``/``.parquet`` files (default: the bundled samples in
``data_prep/assets/pipeline/``), read and cleaned by :mod:`data_prep.pipeline_inputs` (formats,
parsing, dropping repeated prompts and pairs without a preference, all counted in the manifest).
This module plans, checks and writes the outputs.

Outputs under ``--out`` (each file validated with ``data_prep.validate`` before it is put in place):
``sft/train.parquet``, ``sft/val.parquet``, ``prefs/train.parquet`` (DPO and the RLOO reward
model), ``prefs/judge.parquet`` (the independent win-rate judge's reward model), ``prefs/test.parquet``,
``rl/train.parquet``, ``eval/prompts.parquet`` and ``manifest.json``; see docs/data-format.md.

The judge's pairs: a seeded ``--judge-fraction`` (default 0.25; 0 writes no ``prefs/judge``) of the
cleaned training pairs is kept apart before ``prefs/train`` is drawn, so the reward model that judges
the win rate never sees a pair, or a prompt, that the RLOO reward model (or DPO) was trained on. A
judge pair that shares a user turn with a remaining training pair is dropped (counted); the finished
outputs are then checked again and the run stops if ``prefs/judge`` and ``prefs/train`` share a prompt.

No held-out prompt (``eval/prompts`` and ``prefs/test``) may appear in a training output (SFT,
``prefs/train``, ``prefs/judge``, ``rl/train``): the run stops naming both records, or, with
``--drop-eval-overlap``, training records that share a user turn with a held-out prompt are
removed before the training subsets are drawn (counted in the manifest).

Bad input stops the run before anything is written, naming file, record and field
(``chats.jsonl: record 4: messages[3].role: ...``); ``--skip-invalid`` skips and counts such
records instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from data_prep.common import ASSETS, DEFAULT_SEED, file_sha256, rl_row, seeded_sample, split_train_test, write_parquet
from data_prep.pipeline_inputs import (Chat, PreferencePair, drop_duplicate_prompts, drop_identical_replies, parse_all,
                                       parse_chat, parse_preference)
from data_prep.validate import DataValidationError, format_problems, validate_rows
from verlkit.records import InputError, normalize_text, read_records

SAMPLES = ASSETS / "pipeline"
DEFAULT_SMOLTALK = SAMPLES / "smoltalk_sample.jsonl"
DEFAULT_ULTRAFEEDBACK_TRAIN = SAMPLES / "ultrafeedback_train_sample.jsonl"
DEFAULT_ULTRAFEEDBACK_TEST = SAMPLES / "ultrafeedback_test_sample.jsonl"

DATA_SOURCE = "ultrafeedback"
ABILITY = "chat"
SFT_VAL_FRACTION = 0.1
# The share of the cleaned training pairs kept apart for the win-rate judge's reward model: enough
# pairs for a few Bradley-Terry steps on the bundled samples (15 of 61), most left for DPO and RLOO's.
JUDGE_FRACTION = 0.25
# Output name -> (path under --out, validator kind).
OUTPUTS = {
    "sft/train": ("sft/train.parquet", "sft"),
    "sft/val": ("sft/val.parquet", "sft"),
    "prefs/train": ("prefs/train.parquet", "preference"),
    "prefs/judge": ("prefs/judge.parquet", "preference"),
    "prefs/test": ("prefs/test.parquet", "preference"),
    "rl/train": ("rl/train.parquet", "rl"),
    "eval/prompts": ("eval/prompts.parquet", "prompts"),
}
OPTIONAL_OUTPUTS = ("prefs/judge",)  # not written with --judge-fraction 0
TRAINING_OUTPUTS = ("sft/train", "sft/val", "prefs/train", "prefs/judge", "rl/train")
HELD_OUT_OUTPUTS = ("eval/prompts", "prefs/test")
MAX_REPORTED_PROBLEMS = 10


class EvalLeakError(ValueError):
    """A held-out prompt appears in a training output; the message names both records."""


class JudgeOverlapError(ValueError):
    """The judge's pairs share a prompt with the training pairs; the message names both records."""


@dataclass(frozen=True)
class Sizes:
    """Rows wanted per output; None = all available rows."""

    sft: int | None = None
    dpo: int | None = None
    rm_test: int | None = None
    rl: int | None = None
    eval: int | None = None
    judge: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"sft": self.sft, "dpo": self.dpo, "rm_test": self.rm_test, "rl": self.rl, "eval": self.eval,
                "judge": self.judge}


# ---------------------------------------------------------------------------------------------
# Selection (pure)
# ---------------------------------------------------------------------------------------------
def split_sft(chats: Sequence[Chat], sft_size: int | None, seed: int) -> tuple[list[Chat], list[Chat]]:
    """(train, val): a seeded ``SFT_VAL_FRACTION`` of the chats is held out first, so the
    validation chats never depend on ``sft_size``; train is then a seeded subset of ``sft_size``
    of the rest, and val is trimmed to keep roughly the same 1:9 ratio to it (at least one chat)."""
    if len(chats) < 2:
        raise InputError(f"SFT needs at least 2 chats (one for validation), got {len(chats)}")
    train_pool, val_pool = split_train_test(chats, SFT_VAL_FRACTION, seed)
    train = seeded_sample(train_pool, sft_size, seed)
    val_size = max(1, round(len(train) * SFT_VAL_FRACTION / (1 - SFT_VAL_FRACTION)))
    return train, seeded_sample(val_pool, val_size, seed)


# ---------------------------------------------------------------------------------------------
# Rows (pure)
# ---------------------------------------------------------------------------------------------
def sft_row(chat: Chat) -> dict[str, Any]:
    """verl's multi-turn SFT dataset reads ``messages`` and trains on the assistant turns."""
    return {"messages": chat.messages}


def preference_row(pair: PreferencePair) -> dict[str, Any]:
    """The preference trainer's pair row (verlkit/preference/data.py): replies as strings."""
    return {
        "prompt": pair.prompt,
        "chosen": pair.chosen,
        "rejected": pair.rejected,
        "prompt_id": pair.prompt_id,
        "score_chosen": pair.score_chosen,
        "score_rejected": pair.score_rejected,
    }


def rl_prompt_row(pair: PreferencePair, split: str = "train") -> dict[str, Any]:
    """A verl RL row scored by the trained reward model (data source ``ultrafeedback``)."""
    return rl_row(
        DATA_SOURCE, pair.prompt, "", ability=ABILITY, style="model",
        extra_info={
            "prompt_id": pair.prompt_id,
            "score_chosen": pair.score_chosen,
            "score_rejected": pair.score_rejected,
            "split": split,
            "index": pair.index,
            # verl hands the reward function the response and extra_info but not the prompt; the
            # reward model needs the conversation it is scoring a reply to.
            "prompt_messages": pair.prompt,
        },
    )


def eval_prompt_row(pair: PreferencePair) -> dict[str, Any]:
    return {"prompt": pair.prompt, "prompt_id": pair.prompt_id}


# ---------------------------------------------------------------------------------------------
# Held-out prompts must not be trained on (pure)
# ---------------------------------------------------------------------------------------------
def find_leaks(held_out: dict[str, Sequence[PreferencePair]], training: dict[str, Sequence[Chat | PreferencePair]],
               apart: str = "held out") -> list[str]:
    """One message per (held-out prompt, training record) pair where the held-out prompt text is
    one of the training record's user turns (compared after ``normalize_text``); ``apart`` says in
    the message how the first set is kept apart ("held out", "kept for the judge")."""
    by_text: dict[str, list[tuple[str, Chat | PreferencePair]]] = {}
    for output, items in training.items():
        for item in items:
            for text in item.user_texts():
                by_text.setdefault(text, []).append((output, item))
    leaks = []
    for held_name, pairs in held_out.items():
        for pair in pairs:
            for output, item in by_text.get(normalize_text(pair.prompt_text), []):
                leaks.append(f"{pair.source}: record {pair.index} ({apart} in {held_name}, prompt_id {pair.prompt_id}) "
                             f"is also in {output} as {item.source}: record {item.index}: {pair.prompt_text[:80]!r}")
    return leaks


def without_held_out(items: Sequence[Chat | PreferencePair], held_out_texts: set[str]) -> tuple[list, int]:
    kept = [item for item in items if not (item.user_texts() & held_out_texts)]
    return kept, len(items) - len(kept)


@dataclass
class Plan:
    """Everything the run will write, decided before anything is written."""

    items: dict[str, list] = field(default_factory=dict)  # output name -> Chat / PreferencePair list
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    eval_overlap_dropped: dict[str, int] = field(default_factory=dict)
    judge: dict[str, Any] = field(default_factory=dict)  # the judge split: fraction, rows, dropped, shared

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        build = {"sft/train": sft_row, "sft/val": sft_row, "prefs/train": preference_row, "prefs/judge": preference_row,
                 "prefs/test": preference_row, "rl/train": rl_prompt_row, "eval/prompts": eval_prompt_row}
        return {name: [build[name](item) for item in items] for name, items in self.items.items()}


def split_judge_pairs(pairs: Sequence[PreferencePair], fraction: float,
                      seed: int) -> tuple[list[PreferencePair], list[PreferencePair], int]:
    """(training pairs, the judge's pairs, judge pairs dropped): a seeded ``fraction`` of the pairs
    is the judge's; a judge pair sharing a user turn with a training pair is dropped, so no prompt
    is on both sides (the pairs are already one per prompt, but multi-turn prompts share turns)."""
    if fraction <= 0:
        return list(pairs), [], 0
    training, judge = split_train_test(pairs, fraction, seed)
    training_texts = {text for pair in training for text in pair.user_texts()}
    kept = [pair for pair in judge if not (pair.user_texts() & training_texts)]
    return training, kept, len(judge) - len(kept)


def _stop_on(problems: list[str], error: type[ValueError], what: str) -> None:
    if problems:
        shown = "\n".join(problems[:MAX_REPORTED_PROBLEMS])
        more = f"\n... and {len(problems) - MAX_REPORTED_PROBLEMS} more" if len(problems) > MAX_REPORTED_PROBLEMS else ""
        raise error(f"{len(problems)} {what}:\n{shown}{more}")


def plan_outputs(chats: Sequence[Chat], train_pairs: Sequence[PreferencePair], test_pairs: Sequence[PreferencePair],
                 sizes: Sizes, seed: int = DEFAULT_SEED, drop_eval_overlap: bool = False,
                 judge_fraction: float = JUDGE_FRACTION) -> Plan:
    """Clean, select and check the parsed inputs. Raises EvalLeakError if a held-out prompt would
    be trained on (unless ``drop_eval_overlap`` removes those training records first), and
    JudgeOverlapError if the judge's pairs share a prompt with ``prefs/train``."""
    if not 0.0 <= judge_fraction < 1.0:
        raise InputError(f"the judge's fraction of the training pairs must be in [0, 1), got {judge_fraction}")
    plan = Plan()
    train_prompts, train_duplicates = drop_duplicate_prompts(train_pairs)
    train_prefs, train_identical = drop_identical_replies(train_prompts)
    test_prompts, test_duplicates = drop_duplicate_prompts(test_pairs)
    test_prefs, test_identical = drop_identical_replies(test_prompts)
    plan.counts = {
        "ultrafeedback_train": {"duplicate_prompts_dropped": train_duplicates, "identical_replies_dropped": train_identical},
        "ultrafeedback_test": {"duplicate_prompts_dropped": test_duplicates, "identical_replies_dropped": test_identical},
    }

    # Held-out sets first: they never depend on the training sizes.
    held_out = {
        "eval/prompts": seeded_sample(test_prompts, sizes.eval, seed),
        "prefs/test": seeded_sample(test_prefs, sizes.rm_test, seed),
    }
    pools: dict[str, Sequence] = {"sft": chats, "prefs": train_prefs, "rl": train_prompts}
    if drop_eval_overlap:
        held_out_texts = {normalize_text(p.prompt_text) for pairs in held_out.values() for p in pairs}
        for name in list(pools):
            pools[name], plan.eval_overlap_dropped[name] = without_held_out(pools[name], held_out_texts)

    sft_train, sft_val = split_sft(pools["sft"], sizes.sft, seed)
    reward_pool, judge_pool, judge_dropped = split_judge_pairs(pools["prefs"], judge_fraction, seed)
    training = {
        "sft/train": sft_train,
        "sft/val": sft_val,
        "prefs/train": seeded_sample(reward_pool, sizes.dpo, seed),
        "rl/train": seeded_sample(pools["rl"], sizes.rl, seed),
    }
    if judge_fraction > 0:
        training["prefs/judge"] = seeded_sample(judge_pool, sizes.judge, seed)
    _stop_on(find_leaks(held_out, training), EvalLeakError, "held-out prompt(s) would be trained on (pass "
             "--drop-eval-overlap to remove them from the training data instead)")
    # The proof on the finished outputs that the judge never saw a prompt of the reward model's pairs.
    shared = find_leaks({"prefs/judge": training.get("prefs/judge", [])}, {"prefs/train": training["prefs/train"]},
                        apart="kept for the judge")  # fmt: skip
    _stop_on(shared, JudgeOverlapError, "prompt(s) of the judge's pairs are also in prefs/train")
    plan.judge = {"fraction": judge_fraction, "rows": len(training.get("prefs/judge", [])),
                  "overlap_dropped": judge_dropped, "prompts_shared_with_prefs_train": len(shared)}
    selected = training | held_out
    names = [name for name in OUTPUTS if name in selected]
    for name in names:
        if not selected[name]:
            raise InputError(f"{name}: no rows left to write (check the inputs, sizes and the judge's fraction)")
    plan.items = {name: selected[name] for name in names}
    return plan


# ---------------------------------------------------------------------------------------------
# I/O edge
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    smoltalk: Path = DEFAULT_SMOLTALK
    ultrafeedback_train: Path = DEFAULT_ULTRAFEEDBACK_TRAIN
    ultrafeedback_test: Path = DEFAULT_ULTRAFEEDBACK_TEST


def _check_rows_before_writing(rows: dict[str, list[dict[str, Any]]], out_dir: Path) -> None:
    """Validate every output in memory first, so a problem in the last file leaves no new file at all."""
    problems = []
    for name, output_rows in rows.items():
        relative, kind = OUTPUTS[name]
        columns = list(dict.fromkeys(key for row in output_rows for key in row))
        problems += validate_rows(output_rows, columns, name=str(out_dir / relative), kind=kind)
    if problems:
        raise DataValidationError(problems)


def prepare(out_dir: str | Path, inputs: Inputs = Inputs(), sizes: Sizes = Sizes(), seed: int = DEFAULT_SEED,
            skip_invalid: bool = False, drop_eval_overlap: bool = False,
            judge_fraction: float = JUDGE_FRACTION) -> dict[str, Any]:
    """Read, clean, select, check, write. Returns the manifest (also written to ``OUT/manifest.json``)."""
    out_dir = Path(out_dir)
    named_inputs = {"smoltalk": Path(inputs.smoltalk), "ultrafeedback_train": Path(inputs.ultrafeedback_train),
                    "ultrafeedback_test": Path(inputs.ultrafeedback_test)}
    parsers = {"smoltalk": parse_chat, "ultrafeedback_train": parse_preference, "ultrafeedback_test": parse_preference}
    parsed, input_info, problems = {}, {}, []
    for name, path in named_inputs.items():
        records = read_records(path)
        parsed[name], skipped = parse_all(records, parsers[name], source=str(path), skip_invalid=skip_invalid)
        problems += skipped
        input_info[name] = {"path": str(path), "sha256": file_sha256(path), "records": len(records),
                            "invalid_skipped": len(skipped)}

    plan = plan_outputs(parsed["smoltalk"], parsed["ultrafeedback_train"], parsed["ultrafeedback_test"],
                        sizes, seed, drop_eval_overlap, judge_fraction)
    rows = plan.rows()
    _check_rows_before_writing(rows, out_dir)
    for name, output_rows in rows.items():
        relative, kind = OUTPUTS[name]
        write_parquet(output_rows, out_dir / relative, kind=kind)

    for name, counts in plan.counts.items():
        input_info[name].update(counts)
    manifest = {
        "seed": seed,
        "inputs": input_info,
        "sizes_requested": sizes.as_dict(),
        "sft_val_fraction": SFT_VAL_FRACTION,
        "outputs": {name: {"path": OUTPUTS[name][0], "rows": len(output_rows)} for name, output_rows in rows.items()},
        "eval_overlap_dropped": plan.eval_overlap_dropped if drop_eval_overlap else None,
        "judge_split": plan.judge,
        "first_invalid_records": problems[:MAX_REPORTED_PROBLEMS],
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _size(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--smoltalk", type=Path, default=DEFAULT_SMOLTALK, help="SFT chats (messages)")
    parser.add_argument("--ultrafeedback-train", type=Path, default=DEFAULT_ULTRAFEEDBACK_TRAIN,
                        help="preference records for prefs/train and rl/train")
    parser.add_argument("--ultrafeedback-test", type=Path, default=DEFAULT_ULTRAFEEDBACK_TEST,
                        help="preference records for prefs/test and eval/prompts")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    for flag, what in (("--sft-size", "sft/train"), ("--dpo-size", "prefs/train"), ("--rm-test-size", "prefs/test"),
                       ("--rl-size", "rl/train"), ("--eval-size", "eval/prompts"), ("--judge-size", "prefs/judge")):
        parser.add_argument(flag, type=_size, default=None, help=f"rows of {what} (seeded subset; default: all)")
    parser.add_argument("--judge-fraction", type=float, default=JUDGE_FRACTION,
                        help="share of the cleaned training pairs kept apart for the win-rate judge's reward model "
                             "(prefs/judge, disjoint from prefs/train); 0: no judge split")
    parser.add_argument("--skip-invalid", action="store_true", help="skip and count malformed input records")
    parser.add_argument("--drop-eval-overlap", action="store_true",
                        help="remove training records that contain a held-out prompt instead of stopping")
    args = parser.parse_args(argv)
    inputs = Inputs(args.smoltalk, args.ultrafeedback_train, args.ultrafeedback_test)
    sizes = Sizes(args.sft_size, args.dpo_size, args.rm_test_size, args.rl_size, args.eval_size, args.judge_size)
    try:
        manifest = prepare(args.out, inputs, sizes, args.seed, args.skip_invalid, args.drop_eval_overlap,
                           args.judge_fraction)
    except (InputError, EvalLeakError, JudgeOverlapError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except DataValidationError as e:
        print("error: the prepared rows do not validate:", file=sys.stderr)
        for line in format_problems(e.problems):
            print(f"  {line}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{name}={info['rows']}" for name, info in manifest["outputs"].items())
    print(f"wrote {args.out}: {counts}")
    judge = manifest["judge_split"]
    if judge["fraction"]:
        print(f"  prefs/judge: {judge['rows']} pairs for the win-rate judge, no prompt shared with prefs/train "
              f"({judge['overlap_dropped']} dropped for sharing a user turn)")  # fmt: skip
    for name, info in manifest["inputs"].items():
        dropped = {k: v for k, v in info.items() if k.endswith(("_dropped", "_skipped")) and v}
        if dropped:
            print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in dropped.items()))
    for problem in manifest["first_invalid_records"]:
        print(f"  skipped: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
