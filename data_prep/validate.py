"""Check parquet files against verl's row schema before a trainer reads them.

Usage::

    python -m data_prep.validate FILE [FILE...] [--kind rl|sft|preference|prompts] [--max-problems 50]
                                 [--reward-options '{"tinyv": {"template": "rubric"}}']

Prints one line per problem, ``<file>: row <i>: <field>: <what is wrong>`` (file-level problems
omit the row), at most ``--max-problems`` per file followed by a count of the rest, and exits 1 if
any file has a problem, 0 otherwise.

Kinds:

* ``rl`` (default): verl's RL schema (``prompt``, ``data_source``, ``reward_model``, optional
  ``ability`` and ``extra_info``) plus what the row's ``data_source`` family needs: the source must
  be routed by our reward registry or upstream verl's dispatcher, and the family's row validator
  (its ``RewardSpec.row_validator``) is run on every row. What a row needs can depend on the run's
  reward options (``tinyv`` rows need ``extra_info.criteria`` under ``template=rubric``; ``routing``
  decides which sources are known): pass them as ``--reward-options`` (JSON ``{"<reward>": {...}}``,
  the run's ``reward_kwargs``), on top of ``$VERLKIT_REWARD_OPTIONS`` as the trainer reads it.
* ``sft``: a ``messages`` column of chat messages with at least one assistant turn.
* ``preference``: a ``prompt`` message list that does not end with an assistant turn; an optional
  ``kind`` (``pair`` when absent, ``near_scope`` or ``out_of_scope``: C3PO's constraint rows); a
  ``pair`` has ``chosen`` and ``rejected`` replies (different), a constraint row a ``response``,
  each a non-empty string or a message list with an assistant turn; optional ``prompt_id``
  (non-empty str) and ``score_chosen``/``score_rejected`` (numbers, NaN allowed).
* ``prompts``: prompts to generate from (evaluation): a ``prompt`` message list ending with a user
  turn and a ``prompt_id`` (non-empty str, unique in the file).

Python API: :func:`validate_files` / :func:`validate_file` return :class:`Problem` objects.

The family's row validator (``RewardSpec.row_validator``, ``validate_row(row: dict) -> list[str]``)
gets the row as plain Python objects (lists, dicts, str, numbers: no numpy arrays). Each returned
string is one problem and should start with the field path, e.g.
``"reward_model.ground_truth: must be a number in [0, 1], got 1.5"``; a message without a
``<field>: `` prefix is reported against the field ``row``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from verlkit.records import CHAT_ROLES, InputError, to_plain

KINDS = ("rl", "sft", "preference", "prompts")
REQUIRED_COLUMNS = {
    "rl": ("prompt", "data_source", "reward_model"),
    "sft": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "prompts": ("prompt", "prompt_id"),
}
# The row kinds of a preference file, as ``verlkit.preference.data`` reads them (not imported: it
# loads torch, and this validator runs as a quick command-line tool).
PREFERENCE_ROW_KINDS = ("pair", "near_scope", "out_of_scope")
DEFAULT_MAX_PROBLEMS = 50
_BATCH_ROWS = 4096


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file. ``row`` is the 0-based row index, None for file-level problems."""

    file: str
    row: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: " if self.row is None else f"{self.file}: row {self.row}: "
        return f"{where}{self.field}: {self.message}"


class DataValidationError(InputError):
    """Raised by writers (``data_prep.common.write_parquet``) when what they wrote does not validate;
    each of ``problems`` names its file, row and field."""

    def __init__(self, problems: list[Problem], max_problems: int = DEFAULT_MAX_PROBLEMS):
        self.problems = problems
        super().__init__("invalid data:\n" + "\n".join(format_problems(problems, max_problems)))

    def located(self, file=None, entry=None) -> DataValidationError:
        return self  # every problem already names its file and row


def _type_name(value: Any) -> str:
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)




def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, dict)):
        return len(value) == 0
    return False


# ---------------------------------------------------------------------------------------------
# Field checks. Each yields (field, message).
# ---------------------------------------------------------------------------------------------
def check_messages(field: str, value: Any, *, need_role: str | None = None) -> Iterator[tuple[str, str]]:
    """A non-empty list of {role, content} chat messages (optionally containing a ``need_role`` turn)."""
    if value is None:
        yield field, "missing"
        return
    if isinstance(value, str):
        yield field, ("expected a list of chat messages [{'role': ..., 'content': ...}], got a plain "
                      "string; wrap it as [{'role': 'user', 'content': <text>}]")
        return
    if not isinstance(value, list):
        yield field, f"expected a list of chat messages, got {_type_name(value)}"
        return
    if not value:
        yield field, "empty list of messages"
        return
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            yield where, f"expected a dict with 'role' and 'content', got {_type_name(message)}"
            continue
        role = message.get("role")
        if role not in CHAT_ROLES:
            yield f"{where}.role", f"must be one of {', '.join(CHAT_ROLES)}, got {role!r}"
        content = message.get("content")
        if not isinstance(content, str):
            yield f"{where}.content", ("missing" if content is None
                                      else f"expected str, got {_type_name(content)}")
    roles = [m.get("role") for m in value if isinstance(m, dict)]
    if need_role is not None and need_role not in roles:
        yield field, f"has no {need_role!r} message (roles: {', '.join(map(str, roles))})"


def _check_ground_truth(value: Any, style: Any = None) -> Iterator[tuple[str, str]]:
    field = "reward_model.ground_truth"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        yield field, "missing"
    elif isinstance(value, str):
        # A reward model scores the response alone, so model-style rows have no reference to give
        # (the empty string keeps the column a string column); rule-style rows always need one.
        if not value.strip() and style != "model":
            yield field, "empty string"
    elif _is_number(value):
        if not math.isfinite(value):
            yield field, f"not a finite number: {value!r}"
    elif isinstance(value, list):
        if not value:
            yield field, "empty list"
        bad = [_type_name(v) for v in value if not (isinstance(v, str) or _is_number(v))]
        if bad:
            yield field, f"list items must be str or numbers, got {', '.join(sorted(set(bad)))}"
    else:
        yield field, f"expected str, number or list, got {_type_name(value)}"


class _RegistryView:
    """Caches what the reward registry says per data_source (``is_known`` may call upstream verl), under
    the run's reward options (``{"<reward>": {...}, "routing": {...}}``)."""

    def __init__(self, reward_options: dict[str, dict[str, Any]] | None = None) -> None:
        from verl.utils.reward_score import registry

        self.registry = registry
        self.options, _ = registry.split_kwargs(reward_options or {})  # unknown namespaces are errors here too
        self.match = registry.routing_options(self.options).match
        self._known: dict[str, bool] = {}

    def is_known(self, data_source: str) -> bool:
        if data_source not in self._known:
            self._known[data_source] = bool(self.registry.is_known(data_source, self.options))
        return self._known[data_source]

    def spec(self, data_source: str):
        return self.registry.resolve(data_source, self.match)

    def options_for(self, spec) -> dict[str, Any]:
        return self.registry.options_for(spec, self.options)


def _takes_options(validator: Callable) -> bool:
    try:
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(validator).parameters.values())
    except (TypeError, ValueError):
        return False


def _family_problems(validator: Callable[..., list[str]], row: dict,
                     options: dict[str, Any]) -> Iterator[tuple[str, str]]:
    try:
        messages = (validator(row, **options) if _takes_options(validator) else validator(row)) or []
    except Exception as exc:  # a broken validator is a problem to report, not a crash of the validator
        name = f"{getattr(validator, '__module__', '?')}.{getattr(validator, '__qualname__', validator)}"
        yield "row", f"row validator {name} raised {exc!r}"
        return
    for message in messages:
        head, sep, rest = str(message).partition(": ")
        if sep and head and " " not in head:
            yield head, rest
        else:
            yield "row", str(message)


def check_rl_row(row: dict, columns: set[str], registry: _RegistryView) -> Iterator[tuple[str, str]]:
    """Problems of one RL row (plain Python values)."""
    if "prompt" in columns:
        yield from check_messages("prompt", row.get("prompt"), need_role="user")

    data_source = row.get("data_source")
    spec = None
    if "data_source" in columns:
        if data_source is None:
            yield "data_source", "missing"
        elif not isinstance(data_source, str):
            yield "data_source", f"expected str, got {_type_name(data_source)}"
        elif not data_source.strip():
            yield "data_source", "empty string"
        elif not registry.is_known(data_source):
            yield "data_source", (f"unknown data source {data_source!r}: no reward function routes it "
                                  f"(registered here: {registry.registry.describe_routes()}; plus upstream "
                                  "verl's own sources)")
        else:
            spec = registry.spec(data_source)

    if "ability" in columns:
        ability = row.get("ability")
        if ability is not None and not isinstance(ability, str):
            yield "ability", f"expected str, got {_type_name(ability)}"

    if "reward_model" in columns:
        reward_model = row.get("reward_model")
        if reward_model is None:
            yield "reward_model", "missing"
        elif not isinstance(reward_model, dict):
            yield "reward_model", f"expected a dict with 'ground_truth', got {_type_name(reward_model)}"
        else:
            style = reward_model.get("style")
            yield from _check_ground_truth(reward_model.get("ground_truth"), style)
            if style is not None and not isinstance(style, str):
                yield "reward_model.style", f"expected str, got {_type_name(style)}"

    extra_info = row.get("extra_info") if "extra_info" in columns else None
    if extra_info is not None and not isinstance(extra_info, dict):
        yield "extra_info", f"expected a dict, got {_type_name(extra_info)}"
        return  # the family's checks read extra_info's fields
    if spec is not None:
        try:
            spec.function()
            validator = spec.validator()
        except Exception as exc:  # training could not score this row either
            yield "data_source", f"reward {spec.name!r} for {data_source!r} cannot be loaded: {exc!r}"
            return
        if validator is not None:
            yield from _family_problems(validator, row, registry.options_for(spec))


def check_sft_row(row: dict, columns: set[str]) -> Iterator[tuple[str, str]]:
    if "messages" in columns:  # a missing column is reported once, at file level
        yield from check_messages("messages", row.get("messages"), need_role="assistant")


def _check_prompt_id(row: dict, columns: set[str]) -> Iterator[tuple[str, str]]:
    if "prompt_id" in columns:
        value = row.get("prompt_id")
        if not isinstance(value, str) or not value.strip():
            yield "prompt_id", "missing" if value is None else f"expected a non-empty str, got {value!r}"


def _last_role(messages: Any) -> Any:
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return messages[-1].get("role")
    return None


def _check_reply(field: str, value: Any) -> Iterator[tuple[str, str]]:
    """A reply is the assistant's text (what the preference trainer appends to the prompt) or a
    message list holding an assistant turn."""
    if isinstance(value, str):
        if not value.strip():
            yield field, "empty reply"
        return
    yield from check_messages(field, value, need_role="assistant")


def check_preference_row(row: dict, columns: set[str]) -> Iterator[tuple[str, str]]:
    if "prompt" in columns:
        prompt = row.get("prompt")
        yield from check_messages("prompt", prompt, need_role="user")
        # The reply is appended after the prompt; a prompt that already ends with an assistant turn
        # means a reply was left inside it (the bug of the original DPO data, reference-methods §5.7).
        if _last_role(prompt) == "assistant":
            yield "prompt", "ends with an assistant turn; the reply belongs in chosen/rejected"
    kind = row.get("kind") if "kind" in columns else None
    if _is_empty(kind):
        kind = "pair"  # no kind: a DPO pair, as the trainer reads it
    if kind not in PREFERENCE_ROW_KINDS:
        yield "kind", f"must be one of {', '.join(PREFERENCE_ROW_KINDS)}, got {kind!r}"
    elif kind == "pair":
        for field in ("chosen", "rejected"):
            if field in columns:
                yield from _check_reply(field, row.get(field))
        chosen, rejected = row.get("chosen"), row.get("rejected")
        if chosen is not None and chosen == rejected:
            yield "rejected", "identical to chosen"
    else:  # a constraint row: the original model's own reply, kept close by the constrained loss
        yield from _check_reply("response", row.get("response"))
    yield from _check_prompt_id(row, columns)
    for field in ("score_chosen", "score_rejected"):
        value = row.get(field)
        if field in columns and value is not None and not _is_number(value):
            yield field, f"expected a number (NaN when unknown), got {_type_name(value)}"


def check_prompt_row(row: dict, columns: set[str]) -> Iterator[tuple[str, str]]:
    """A prompt to generate a reply for: it must end with the user's turn."""
    if "prompt" in columns:
        prompt = row.get("prompt")
        yield from check_messages("prompt", prompt, need_role="user")
        role = _last_role(prompt)
        if role is not None and role != "user":
            yield "prompt", f"must end with a user turn (the model replies to it), ends with {role!r}"
    yield from _check_prompt_id(row, columns)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
class _ReadError(Exception):
    pass


def _iter_rows(path: Path) -> tuple[list[str], Iterator[dict]]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        columns = list(parquet.schema_arrow.names)
    except Exception as exc:
        raise _ReadError(exc) from exc

    def rows() -> Iterator[dict]:
        batches = parquet.iter_batches(batch_size=_BATCH_ROWS)
        while True:
            try:
                batch = next(batches, None)
                if batch is None:
                    return
                records = batch.to_pylist()
            except Exception as exc:
                raise _ReadError(exc) from exc
            yield from records

    return columns, rows()


def validate_rows(rows: Iterable[dict], columns: Iterable[str], *, name: str, kind: str = "rl",
                  registry: _RegistryView | None = None, reward_options: dict | None = None) -> list[Problem]:
    """Validate in-memory rows (e.g. ``df.to_dict("records")``; numpy arrays are fine)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    columns = set(columns)
    problems = [Problem(name, None, column, f"missing column (columns present: {', '.join(sorted(columns))})")
                for column in REQUIRED_COLUMNS[kind] if column not in columns]
    if kind == "rl":
        registry = registry or _RegistryView(reward_options)
    count = 0
    first_row_of_prompt_id: dict[str, int] = {}
    for index, row in enumerate(rows):
        count += 1
        row = to_plain(row)
        if kind == "rl":
            found = check_rl_row(row, columns, registry)
        elif kind == "sft":
            found = check_sft_row(row, columns)
        elif kind == "preference":
            found = check_preference_row(row, columns)
        else:
            found = list(check_prompt_row(row, columns))
            # Results are keyed by prompt_id downstream, so two rows with one id would collide.
            prompt_id = row.get("prompt_id")
            if isinstance(prompt_id, str) and prompt_id.strip():
                first = first_row_of_prompt_id.setdefault(prompt_id, index)
                if first != index:
                    found.append(("prompt_id", f"{prompt_id!r} already used by row {first}"))
        problems.extend(Problem(name, index, field, message) for field, message in found)
    if count == 0:
        problems.append(Problem(name, None, "rows", "no rows"))
    return problems


def validate_file(path: str | Path, kind: str = "rl", *, display_name: str | None = None,
                  registry: _RegistryView | None = None, reward_options: dict | None = None) -> list[Problem]:
    """All problems of one parquet file (``display_name`` is how the file is named in messages)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(path)
    name = display_name or str(path)
    if not path.is_file():
        return [Problem(name, None, "file", "no such file")]
    try:
        columns, rows = _iter_rows(path)
        return validate_rows(rows, columns, name=name, kind=kind, registry=registry, reward_options=reward_options)
    except _ReadError as exc:  # unreadable parquet: reported like any other problem
        return [Problem(name, None, "file", f"cannot read as parquet: {exc.__cause__}")]


def validate_files(paths: Iterable[str | Path], kind: str = "rl", reward_options: dict | None = None) -> list[Problem]:
    """All problems of all files, in file order (``reward_options``: the run's, see the module docstring)."""
    registry = _RegistryView(reward_options) if kind == "rl" else None
    problems: list[Problem] = []
    for path in paths:
        problems.extend(validate_file(path, kind, registry=registry))
    return problems


def format_problems(problems: list[Problem], max_per_file: int = DEFAULT_MAX_PROBLEMS) -> list[str]:
    """One line per problem, at most ``max_per_file`` per file, then a line counting the rest."""
    lines: list[str] = []
    shown: dict[str, int] = {}
    hidden: dict[str, int] = {}
    for problem in problems:
        if shown.get(problem.file, 0) < max_per_file:
            shown[problem.file] = shown.get(problem.file, 0) + 1
            lines.append(str(problem))
        else:
            hidden[problem.file] = hidden.get(problem.file, 0) + 1
    for file, count in hidden.items():
        lines.append(f"{file}: ... and {count} more problem(s) not listed")
    return lines


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object {"<reward>": {"<option>": value}}')
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.validate", description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", help="parquet files to check")
    parser.add_argument("--kind", choices=KINDS, default="rl", help="row schema (default: rl)")
    parser.add_argument("--max-problems", type=int, default=DEFAULT_MAX_PROBLEMS,
                        help="problems listed per file before the rest are only counted")
    parser.add_argument("--reward-options", type=_json_object, default=None, metavar="JSON",
                        help='the run\'s reward options, e.g. \'{"tinyv": {"template": "rubric"}}\' (rl only)')
    args = parser.parse_args(argv)
    try:
        problems = validate_files(args.files, kind=args.kind, reward_options=args.reward_options)
    except ValueError as e:  # an unknown reward namespace or a bad routing option: the run would fail too
        print(f"--reward-options: {e}", file=sys.stderr)
        return 2
    for line in format_problems(problems, args.max_problems):
        print(line)
    bad_files = {p.file for p in problems}
    for file in args.files:
        if str(file) not in bad_files:
            print(f"{file}: ok", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {len(bad_files)} of {len(args.files)} file(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
