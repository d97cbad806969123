"""Rubric-reward data (reference-methods §3.5) -> verl RL parquet.

Two subcommands::

    python -m data_prep.rubric tinyv --out data/polaris [--input FILE] [--data-source polaris_tinyv]
                                     [--math-val-source polaris_math | none]
    python -m data_prep.rubric grade --out data/rrm     [--input FILE]

``tinyv``: policy rows scored by a rubric grader / verifier. Input records (JSON, JSONL or parquet)
have ``problem``, ``answer``, ``criteria`` and optionally ``difficulty``, ``query_id``. Each row gets
a system message asking for step-by-step reasoning with the answer in ``\\boxed{}``, the problem as
the user message, ``reward_model.ground_truth`` = the answer and ``extra_info`` = {split, index,
answer, question, criteria}; the input fields are also kept as top-level columns, as in the
original data. ``--data-source`` must end with ``_tinyv`` (that suffix routes the reward).
``tinyv`` also writes ``test_math.parquet``: the test split's problems as rule-graded math rows
(``--math-val-source``, default ``polaris_math``, a source no reward routes), which a run scores with
the rule-based math grader (``reward_kwargs.routing.fallback=rule``, as the original graded its math
validation sets) and reports pass@1 on; ``--math-val-source none`` skips it.

``grade``: rows that train the rubric reward model (RRM) itself, ``data_source="grade"``. Input
records have ``question``, ``criteria``, ``answer`` (the candidate solution to grade) and a
reference score: ``score`` in [0, 1] or ``score_10`` in [0, 10]. The prompt is one user message,
the rubric grading prompt of ``verl.utils.reward_score.verifier_prompts.rubric_prompt`` (the same
one the rubric reward sends to the grader); ``reward_model.ground_truth`` is the reference score in
[0, 1].

Both split the input into train/test with ``--test-fraction`` and ``--seed`` (deterministic) and
write ``train.parquet`` and ``test.parquet`` into ``--out``, validated. Default ``--input``: the
bundled samples in ``data_prep/assets/``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from data_prep.common import ASSETS, DEFAULT_SEED, DataValidationError, chat, rl_row, split_train_test, write_parquet
from verlkit.records import InputError, read_records, require_field

TINYV_SUFFIX = "_tinyv"
DEFAULT_TINYV_SOURCE = "polaris_tinyv"
DEFAULT_MATH_VAL_SOURCE = "polaris_math"
# What a run must route its math validation rows with (and what they are validated under).
RULE_GRADED = {"routing": {"fallback": "rule"}}
GRADE_SOURCE = "grade"
TINYV_SAMPLE = ASSETS / "rubric_sample.jsonl"
GRADE_SAMPLE = ASSETS / "grade_sample.jsonl"
BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


def build_rubric_prompt(question: str, criteria: str, answer: str) -> str:
    """The RRM grading prompt (reference-methods §3.4) for (question, rubric, candidate answer).

    The one template the rubric reward sends to the grader at training time, so ``grade`` rows and
    ``*_tinyv`` rewards show the RRM the same prompt: total out of 10, ending ``Total Score: X/10``.
    """
    from verl.utils.reward_score.verifier_prompts import rubric_prompt

    return rubric_prompt(question, criteria, answer)


def _text(value: Any, *, source: str, index: int, field: str) -> str:
    """A str field; lists of str (e.g. rubric bullets) are joined one per line, numbers stringified."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "\n".join(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise InputError(f"expected str, got {type(value).__name__}", file=source, entry=index, field=field)


def tinyv_row(record: dict[str, Any], *, data_source: str, split: str, index: int, source: str) -> dict[str, Any]:
    problem = _text(require_field(record, "problem", file=source, entry=index), source=source, index=index, field="problem")
    answer = _text(require_field(record, "answer", file=source, entry=index, types=(str, int, float)),
                   source=source, index=index, field="answer")
    criteria = _text(require_field(record, "criteria", file=source, entry=index, types=(str, list)),
                     source=source, index=index, field="criteria")
    extra_columns = {"problem": problem, "answer": answer, "criteria": criteria}
    for optional in ("difficulty", "query_id"):
        if record.get(optional) is not None:
            extra_columns[optional] = record[optional]
    return rl_row(
        data_source,
        chat(problem, system=BOXED_INSTRUCTION),
        answer,
        ability="math",
        extra_info={"split": split, "index": index, "answer": answer, "question": problem, "criteria": criteria},
        **extra_columns,
    )


def math_val_row(record: dict[str, Any], *, data_source: str, index: int, source: str) -> dict[str, Any]:
    """A rule-graded validation row of a rubric record: the same prompt, the answer as ground truth."""
    problem = _text(require_field(record, "problem", file=source, entry=index), source=source, index=index, field="problem")
    answer = _text(require_field(record, "answer", file=source, entry=index, types=(str, int, float)),
                   source=source, index=index, field="answer")
    return rl_row(data_source, chat(problem, system=BOXED_INSTRUCTION), answer, ability="math",
                  extra_info={"split": "test", "index": index, "answer": answer, "question": problem})


def _check_math_val_source(data_source: str) -> None:
    from verl.utils.reward_score import registry

    for match in ("strict", "original"):
        spec = registry.resolve(data_source, match)
        if spec is not None:
            raise InputError(f"--math-val-source {data_source!r} is routed to the {spec.name!r} reward ({match} "
                             "matching); rule-graded rows need a source no reward routes")


def reference_score(record: dict[str, Any], *, source: str, index: int) -> float:
    """The reference score in [0, 1] from ``score`` ([0, 1]) or ``score_10`` ([0, 10])."""
    score, score_10 = record.get("score"), record.get("score_10")
    for name, value, top in (("score", score, 1.0), ("score_10", score_10, 10.0)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"expected a number, got {value!r}", file=source, entry=index, field=name)
        if not 0.0 <= value <= top:
            raise InputError(f"must be in [0, {top:g}], got {value}", file=source, entry=index, field=name)
    if score is None and score_10 is None:
        raise InputError("missing (give score in [0, 1] or score_10 in [0, 10])", file=source, entry=index,
                         field="score")
    if score is not None and score_10 is not None and abs(score - score_10 / 10.0) > 1e-9:
        raise InputError(f"{score} disagrees with score_10={score_10}", file=source, entry=index, field="score")
    return float(score) if score is not None else float(score_10) / 10.0


def grade_row(record: dict[str, Any], *, split: str, index: int, source: str) -> dict[str, Any]:
    question = _text(require_field(record, "question", file=source, entry=index), source=source, index=index, field="question")
    criteria = _text(require_field(record, "criteria", file=source, entry=index, types=(str, list)),
                     source=source, index=index, field="criteria")
    answer = _text(require_field(record, "answer", file=source, entry=index, types=(str, int, float)),
                   source=source, index=index, field="answer")
    score = reference_score(record, source=source, index=index)
    return rl_row(
        GRADE_SOURCE,
        chat(build_rubric_prompt(question, criteria, answer)),
        score,
        ability="rubric_grading",
        extra_info={"split": split, "index": index, "question": question, "criteria": criteria,
                    "candidate_answer": answer, "reference_score": score},
    )


def build(kind: str, input_path: Path, out_dir: Path, *, test_fraction: float, seed: int,
          data_source: str = DEFAULT_TINYV_SOURCE, math_val_source: str | None = DEFAULT_MATH_VAL_SOURCE) -> dict[str, Path]:
    """Read ``input_path``, split it, write ``train.parquet``/``test.parquet`` (and for ``tinyv`` with a
    ``math_val_source``, ``test_math.parquet``); ``extra_info.index`` is the record's index in the input file."""
    if kind == "tinyv" and not data_source.endswith(TINYV_SUFFIX):
        raise InputError(f"--data-source must end with {TINYV_SUFFIX!r} (that suffix routes the rubric reward), "
                         f"got {data_source!r}")
    if kind == "tinyv" and math_val_source:
        _check_math_val_source(math_val_source)
    records = list(enumerate(read_records(input_path)))
    parts = dict(zip(("train", "test"), split_train_test(records, test_fraction, seed)))
    written = {}
    for split, part in parts.items():
        if not part:
            continue
        if kind == "tinyv":
            rows = [tinyv_row(r, data_source=data_source, split=split, index=i, source=str(input_path)) for i, r in part]
        else:
            rows = [grade_row(r, split=split, index=i, source=str(input_path)) for i, r in part]
        written[split] = write_parquet(rows, out_dir / f"{split}.parquet")
    if kind == "tinyv" and math_val_source and parts["test"]:
        rows = [math_val_row(r, data_source=math_val_source, index=i, source=str(input_path)) for i, r in parts["test"]]
        written["test_math"] = write_parquet(rows, out_dir / "test_math.parquet", reward_options=RULE_GRADED)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.rubric", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind, sample, help_text in (("tinyv", TINYV_SAMPLE, "policy rows scored by a rubric grader (*_tinyv)"),
                                    ("grade", GRADE_SAMPLE, "rows that train the rubric grader (data_source=grade)")):
        p = sub.add_parser(kind, help=help_text)
        p.add_argument("--input", type=Path, default=sample, help=f"JSON/JSONL/parquet records (default: {sample.name})")
        p.add_argument("--out", type=Path, required=True, help="output directory")
        p.add_argument("--test-fraction", type=float, default=0.25)
        p.add_argument("--seed", type=int, default=DEFAULT_SEED)
        if kind == "tinyv":
            p.add_argument("--data-source", default=DEFAULT_TINYV_SOURCE, help="must end with _tinyv")
            p.add_argument("--math-val-source", default=DEFAULT_MATH_VAL_SOURCE,
                           help="data_source of test_math.parquet, the rule-graded validation rows (none: skip)")
    args = parser.parse_args(argv)

    try:
        math_val_source = getattr(args, "math_val_source", None)
        written = build(args.kind, args.input, args.out, test_fraction=args.test_fraction, seed=args.seed,
                        data_source=getattr(args, "data_source", DEFAULT_TINYV_SOURCE),
                        math_val_source=None if math_val_source in (None, "", "none") else math_val_source)
    except (InputError, DataValidationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in written.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
