"""Data for the SFT → DPO → RLOO pipeline: SmolTalk-style chats and UltraFeedback-style preferences
-> the SFT, preference, RL and evaluation-prompt parquet files, plus a manifest.

Usage::

    python -m data_prep.pipeline --out DIR [--smoltalk FILE] [--ultrafeedback-train FILE]
        [--ultrafeedback-test FILE] [--seed 42] [--sft-size N] [--dpo-size N] [--rm-test-size N]
        [--rl-size N] [--eval-size N] [--skip-invalid] [--drop-eval-overlap]

Inputs are local ``.jsonl``/``.json``/``.parquet`` files (default: the bundled samples in
``data_prep/assets/pipeline/``):

* SmolTalk-style chats: ``messages`` = ``[{role, content}, ...]`` with roles system (first turn
  only), user and assistant; the first non-system turn is the user's and the chat ends with an
  assistant turn.
* UltraFeedback-binarized-style preferences: ``prompt`` (str), optional ``prompt_id`` (else the
  sha256 of the prompt text), ``chosen`` and ``rejected`` (each the FULL conversation: the prompt
  turns followed by the final assistant reply), optional ``score_chosen``/``score_rejected``.
  The final assistant turn is the reply; the turns before it are the prompt, and chosen and
  rejected must share exactly the same prompt turns. (The original put the whole list, prompt
  included, where the reply goes, so the prompt was trained on twice: reference-methods §5.7.)

Cleaning: per UltraFeedback file, a prompt seen before (same ``prompt_id`` or same prompt text) is
dropped, keeping its first record; a pair whose chosen reply equals its rejected reply is not used
for preferences (its prompt still serves RL and evaluation). Both are counted in the manifest.

Outputs under ``--out`` (each file validated with ``data_prep.validate`` before it is put in place):
``sft/train.parquet``, ``sft/val.parquet``, ``prefs/train.parquet``, ``prefs/test.parquet``,
``rl/train.parquet``, ``eval/prompts.parquet`` and ``manifest.json``; see docs/data-format.md.

No held-out prompt (``eval/prompts`` and ``prefs/test``) may appear in a training output (SFT,
``prefs/train``, ``rl/train``): the run stops naming both records, or, with
``--drop-eval-overlap``, training records that share a user turn with a held-out prompt are
removed before the training subsets are drawn (counted in the manifest).

Bad input stops the run before anything is written, naming file, record and field
(``chats.jsonl: record 4: messages[3].role: ...``); ``--skip-invalid`` skips and counts such
records instead.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from data_prep.common import (ASSETS, DEFAULT_SEED, file_sha256, rl_row, seeded_sample, split_train_test, text_sha256,
                              write_parquet)
from data_prep.validate import DataValidationError, format_problems, validate_rows
from verlkit.records import InputError, normalize_text, read_records, require_field, require_messages

SAMPLES = ASSETS / "pipeline"
DEFAULT_SMOLTALK = SAMPLES / "smoltalk_sample.jsonl"
DEFAULT_ULTRAFEEDBACK_TRAIN = SAMPLES / "ultrafeedback_train_sample.jsonl"
DEFAULT_ULTRAFEEDBACK_TEST = SAMPLES / "ultrafeedback_test_sample.jsonl"

DATA_SOURCE = "ultrafeedback"
ABILITY = "chat"
SFT_VAL_FRACTION = 0.1
# Output name -> (path under --out, validator kind).
OUTPUTS = {
    "sft/train": ("sft/train.parquet", "sft"),
    "sft/val": ("sft/val.parquet", "sft"),
    "prefs/train": ("prefs/train.parquet", "preference"),
    "prefs/test": ("prefs/test.parquet", "preference"),
    "rl/train": ("rl/train.parquet", "rl"),
    "eval/prompts": ("eval/prompts.parquet", "prompts"),
}
TRAINING_OUTPUTS = ("sft/train", "sft/val", "prefs/train", "rl/train")
HELD_OUT_OUTPUTS = ("eval/prompts", "prefs/test")
MAX_REPORTED_PROBLEMS = 10


class EvalLeakError(ValueError):
    """A held-out prompt appears in a training output; the message names both records."""


# ---------------------------------------------------------------------------------------------
# Parsed records. ``source``/``index`` are the input file and the record's 0-based index in it.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Chat:
    source: str
    index: int
    messages: list[dict[str, str]]

    def user_texts(self) -> set[str]:
        return {normalize_text(m["content"]) for m in self.messages if m["role"] == "user"}


@dataclass(frozen=True)
class PreferencePair:
    source: str
    index: int
    prompt_id: str
    prompt_text: str
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    score_chosen: float
    score_rejected: float

    def user_texts(self) -> set[str]:
        return {normalize_text(m["content"]) for m in self.prompt if m["role"] == "user"}


@dataclass(frozen=True)
class Sizes:
    """Rows wanted per output; None = all available rows."""

    sft: int | None = None
    dpo: int | None = None
    rm_test: int | None = None
    rl: int | None = None
    eval: int | None = None

    def as_dict(self) -> dict[str, int | None]:
        return {"sft": self.sft, "dpo": self.dpo, "rm_test": self.rm_test, "rl": self.rl, "eval": self.eval}


# ---------------------------------------------------------------------------------------------
# Parsing (pure: a record in, a parsed value or an InputError out)
# ---------------------------------------------------------------------------------------------
def parse_chat(record: dict[str, Any], *, source: str, index: int) -> Chat:
    """A SmolTalk-style record -> :class:`Chat`; an InputError names file, record and field."""
    messages = require_messages(record, "messages", file=source, entry=index)
    fail = functools.partial(InputError, file=source, entry=index, field="messages")
    roles = [m["role"] for m in messages]
    for position, role in enumerate(roles):
        if role == "system" and position != 0:
            raise InputError("a system turn is only allowed first", file=source, entry=index,
                             field=f"messages[{position}].role")
    conversation = roles[1:] if roles[0] == "system" else roles
    if not conversation or conversation[0] != "user":
        first = conversation[0] if conversation else "nothing"
        raise fail(f"the conversation must start with a user turn, starts with {first!r}")
    if "assistant" not in roles:
        raise fail(f"has no assistant turn, so there is nothing to train on (roles: {', '.join(roles)})")
    if roles[-1] != "assistant":
        # A trailing user turn has no reply: it would be a prompt with no target.
        raise fail(f"must end with an assistant turn, ends with {roles[-1]!r}")
    return Chat(source, index, messages)


def split_prompt_and_reply(messages: list[dict[str, str]], *, file: str, entry: int,
                           field: str) -> tuple[list[dict[str, str]], str]:
    """An UltraFeedback ``chosen``/``rejected`` message list -> (prompt turns, final reply text);
    ``file``, ``entry`` and ``field`` locate the errors."""
    fail = functools.partial(InputError, file=file, entry=entry, field=field)
    if messages[-1]["role"] != "assistant":
        raise fail(f"the last turn must be the assistant's reply, got role {messages[-1]['role']!r}")
    prompt = messages[:-1]
    if not prompt:
        raise fail("only a reply, no prompt turns before it")
    if prompt[-1]["role"] != "user":
        raise InputError(f"the turn before the reply must be the user's, got {prompt[-1]['role']!r}", file=file,
                         entry=entry, field=f"{field}[{len(prompt) - 1}].role")
    return prompt, messages[-1]["content"]


def _optional_score(record: dict[str, Any], name: str, *, source: str, index: int) -> float:
    value = record.get(name)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected a number, got {type(value).__name__}", file=source, entry=index, field=name)
    if math.isinf(value):
        raise InputError(f"not a finite number: {value!r}", file=source, entry=index, field=name)
    return float(value)


def _first_difference(a: list[dict[str, str]], b: list[dict[str, str]]) -> int:
    for position, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return position
    return min(len(a), len(b))


def parse_preference(record: dict[str, Any], *, source: str, index: int) -> PreferencePair:
    """An UltraFeedback-style record -> :class:`PreferencePair`; an InputError names file, record and field."""
    at = {"file": source, "entry": index}
    prompt_text = require_field(record, "prompt", **at)
    chosen_prompt, chosen = split_prompt_and_reply(require_messages(record, "chosen", **at), **at, field="chosen")
    rejected_prompt, rejected = split_prompt_and_reply(require_messages(record, "rejected", **at), **at,
                                                       field="rejected")
    if chosen_prompt != rejected_prompt:
        turn = _first_difference(chosen_prompt, rejected_prompt)
        raise InputError(f"its prompt turns differ from chosen's (first difference at turn {turn}); both must be "
                         "the same conversation followed by a different final reply", **at, field="rejected")
    # The prompt string must be one of the conversation's user turns; otherwise the record mixes
    # up two conversations and the pair is not a preference about this prompt.
    if prompt_text.strip() not in {m["content"].strip() for m in chosen_prompt if m["role"] == "user"}:
        raise InputError("does not match any user turn of chosen/rejected", **at, field="prompt")
    raw_id = record.get("prompt_id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        prompt_id = text_sha256(prompt_text)
    elif isinstance(raw_id, str):
        prompt_id = raw_id
    else:
        raise InputError(f"expected str, got {type(raw_id).__name__}", **at, field="prompt_id")
    return PreferencePair(
        source=source, index=index, prompt_id=prompt_id, prompt_text=prompt_text, prompt=chosen_prompt,
        chosen=chosen, rejected=rejected,
        score_chosen=_optional_score(record, "score_chosen", source=source, index=index),
        score_rejected=_optional_score(record, "score_rejected", source=source, index=index),
    )


def parse_all(records: Sequence[dict[str, Any]], parse, *, source: str, skip_invalid: bool) -> tuple[list, list[str]]:
    """Parse every record; with ``skip_invalid`` a bad record is skipped and its problem returned."""
    parsed, problems = [], []
    for index, record in enumerate(records):
        try:
            parsed.append(parse(record, source=source, index=index))
        except InputError as e:
            if not skip_invalid:
                raise
            problems.append(str(e))
    if not parsed:
        raise InputError("no usable records" + (f" ({len(problems)} invalid)" if problems else ""), file=source)
    return parsed, problems


# ---------------------------------------------------------------------------------------------
# Cleaning and selection (pure)
# ---------------------------------------------------------------------------------------------
def drop_duplicate_prompts(pairs: Iterable[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Keep the first record of each prompt (same prompt_id or same prompt text); count the rest.

    The original sampled prompts with repetition, so one prompt could be trained on many times and
    a test prompt could count twice."""
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    kept, dropped = [], 0
    for pair in pairs:
        text = normalize_text(pair.prompt_text)
        if pair.prompt_id in seen_ids or text in seen_texts:
            dropped += 1
            continue
        seen_ids.add(pair.prompt_id)
        seen_texts.add(text)
        kept.append(pair)
    return kept, dropped


def drop_identical_replies(pairs: Sequence[PreferencePair]) -> tuple[list[PreferencePair], int]:
    """Drop (and count) pairs whose chosen and rejected replies are the same text: they carry no
    preference, and a DPO or reward-model loss on them only adds noise."""
    kept = [p for p in pairs if p.chosen.strip() != p.rejected.strip()]
    return kept, len(pairs) - len(kept)


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
def find_leaks(held_out: dict[str, Sequence[PreferencePair]],
               training: dict[str, Sequence[Chat | PreferencePair]]) -> list[str]:
    """One message per (held-out prompt, training record) pair where the held-out prompt text is
    one of the training record's user turns (compared after ``normalize_text``)."""
    by_text: dict[str, list[tuple[str, Chat | PreferencePair]]] = {}
    for output, items in training.items():
        for item in items:
            for text in item.user_texts():
                by_text.setdefault(text, []).append((output, item))
    leaks = []
    for held_name, pairs in held_out.items():
        for pair in pairs:
            for output, item in by_text.get(normalize_text(pair.prompt_text), []):
                leaks.append(f"{pair.source}: record {pair.index} (held out in {held_name}, prompt_id {pair.prompt_id}) "
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

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        build = {"sft/train": sft_row, "sft/val": sft_row, "prefs/train": preference_row,
                 "prefs/test": preference_row, "rl/train": rl_prompt_row, "eval/prompts": eval_prompt_row}
        return {name: [build[name](item) for item in items] for name, items in self.items.items()}


def plan_outputs(chats: Sequence[Chat], train_pairs: Sequence[PreferencePair], test_pairs: Sequence[PreferencePair],
                 sizes: Sizes, seed: int = DEFAULT_SEED, drop_eval_overlap: bool = False) -> Plan:
    """Clean, select and check the parsed inputs. Raises EvalLeakError if a held-out prompt would
    be trained on (unless ``drop_eval_overlap`` removes those training records first)."""
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
    training = {
        "sft/train": sft_train,
        "sft/val": sft_val,
        "prefs/train": seeded_sample(pools["prefs"], sizes.dpo, seed),
        "rl/train": seeded_sample(pools["rl"], sizes.rl, seed),
    }
    leaks = find_leaks(held_out, training)
    if leaks:
        shown = "\n".join(leaks[:MAX_REPORTED_PROBLEMS])
        more = f"\n... and {len(leaks) - MAX_REPORTED_PROBLEMS} more" if len(leaks) > MAX_REPORTED_PROBLEMS else ""
        raise EvalLeakError(f"{len(leaks)} held-out prompt(s) would be trained on (pass --drop-eval-overlap to remove "
                            f"them from the training data instead):\n{shown}{more}")
    selected = training | held_out
    for name in OUTPUTS:
        if not selected[name]:
            raise InputError(f"{name}: no rows left to write (check the inputs and sizes)")
    plan.items = {name: selected[name] for name in OUTPUTS}
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
            skip_invalid: bool = False, drop_eval_overlap: bool = False) -> dict[str, Any]:
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
                        sizes, seed, drop_eval_overlap)
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
                       ("--rl-size", "rl/train"), ("--eval-size", "eval/prompts")):
        parser.add_argument(flag, type=_size, default=None, help=f"rows of {what} (seeded subset; default: all)")
    parser.add_argument("--skip-invalid", action="store_true", help="skip and count malformed input records")
    parser.add_argument("--drop-eval-overlap", action="store_true",
                        help="remove training records that contain a held-out prompt instead of stopping")
    args = parser.parse_args(argv)
    inputs = Inputs(args.smoltalk, args.ultrafeedback_train, args.ultrafeedback_test)
    sizes = Sizes(args.sft_size, args.dpo_size, args.rm_test_size, args.rl_size, args.eval_size)
    try:
        manifest = prepare(args.out, inputs, sizes, args.seed, args.skip_invalid, args.drop_eval_overlap)
    except (InputError, EvalLeakError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except DataValidationError as e:
        print("error: the prepared rows do not validate:", file=sys.stderr)
        for line in format_problems(e.problems):
            print(f"  {line}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{name}={info['rows']}" for name, info in manifest["outputs"].items())
    print(f"wrote {args.out}: {counts}")
    for name, info in manifest["inputs"].items():
        dropped = {k: v for k, v in info.items() if k.endswith(("_dropped", "_skipped")) and v}
        if dropped:
            print(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in dropped.items()))
    for problem in manifest["first_invalid_records"]:
        print(f"  skipped: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
