"""Feedback records for C3PO: the file format, loading and selection, and quantitative metrics.

A ``Feedback`` is one sentence of verbal feedback plus where it applies (``domain``) and what it asks
for (``effect``). Quantitative feedback also names a metric of a response text; evaluation measures
the metric on the original model's (baseline) response and on the trained model's response and
reports whether the trained one moved in the feedback's direction (``compare``). Qualitative
feedback is judged by an LLM instead (``verlkit.c3po.prompts.judge_messages``).

The metric functions and ``measure``/``compare`` are pure. Loading reads files and reports every
problem as a ``FeedbackError`` that names the file, the entry and the field. The format is described
in ``docs/c3po-feedback.md``.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

__all__ = [
    "BOOLEAN_METRICS",
    "COMPARISONS",
    "FEEDBACK_ID_NAMESPACE",
    "METRICS",
    "SCOPES",
    "TYPES",
    "Feedback",
    "FeedbackError",
    "compare",
    "load_feedbacks",
    "measure",
    "select_feedbacks",
    "slugify",
]

# Fixed namespace of feedback ids: uuid5(NAMESPACE_URL, "verlkit:c3po:feedback"), written out so that
# ids never change even if that derivation were edited. id = uuid5(this, content \x1f domain \x1f
# effect); the unit separator keeps ("ab", "c") and ("a", "bc") apart.
FEEDBACK_ID_NAMESPACE = uuid.UUID("76344382-b08c-5b68-9d21-9933ac28dfa0")

SCOPES = ("global", "regional", "local")
TYPES = ("qualitative", "quantitative")
# greater_eq_than: the feedback wants the metric to go up (or become true) relative to the baseline;
# less_eq_than: to go down (or become false). The names are the original file format's.
COMPARISONS = ("greater_eq_than", "less_eq_than")

SLUG_MAX_CHARS = 60


class FeedbackError(ValueError):
    """A bad feedback entry, file or request. The message names file, entry and field when known."""

    def __init__(self, reason: str, *, file: str | Path | None = None, entry: str | None = None,
                 field: str | None = None) -> None:
        self.reason = reason
        self.file = str(file) if file is not None else None
        self.entry = entry
        self.field = field
        where = [part for part in (self.file, self.entry) if part]
        if field:
            where.append(f"field {field!r}")
        super().__init__(": ".join([*where, reason]))

    def located(self, file: str | Path | None, entry: str | None) -> FeedbackError:
        """The same problem with the file and entry it was found in (keeps what is already known)."""
        return FeedbackError(self.reason, file=self.file or file, entry=self.entry or entry, field=self.field)


# ---------------------------------------------------------------------------------------------
# Metrics: pure functions (text, value) -> float. Boolean metrics return 0.0 or 1.0.
# ---------------------------------------------------------------------------------------------
# Closing characters a response often ends with after its real last words: quotes, brackets and
# markdown emphasis ("... Bon appétit!**", '"... Bon appétit!"').
_CLOSING_CHARS = " \t\r\n\"'`*_)]}>»”’"

# A phone number written the usual ways. Digits alone are not enough (years, prices, ids), so it
# needs a shape: an international "+CC ..." number, a North American "(555) 123-4567" /
# "555-123-4567" / "1-800-555-0199" number, or a local "555-0199". The digit count (7..15, the
# E.164 maximum) is checked on each candidate.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
    r"|(?:1[ .-])?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
    r"|\d{3}-\d{4}"
    r")(?!\w)"
)


def _as_float(flag: bool) -> float:
    return 1.0 if flag else 0.0


def metric_length(text: str, value: Any = None) -> float:
    """Number of whitespace-separated words."""
    return float(len(text.split()))


def metric_length_chars(text: str, value: Any = None) -> float:
    """Number of characters (after stripping surrounding whitespace, which no reader sees)."""
    return float(len(text.strip()))


def metric_contains_any_strings(text: str, value: Sequence[str]) -> float:
    """True when at least one of the strings occurs in the text (case-sensitive substring)."""
    return _as_float(any(s in text for s in value))


def metric_contains_all_strings(text: str, value: Sequence[str]) -> float:
    """True when every string occurs in the text (case-sensitive substring)."""
    return _as_float(all(s in text for s in value))


def metric_contains_none_strings(text: str, value: Sequence[str]) -> float:
    """True when none of the strings occurs in the text (case-sensitive substring)."""
    return _as_float(not any(s in text for s in value))


def metric_regex_search(text: str, value: str) -> float:
    """True when the regular expression matches somewhere (Python ``re.search``; use ``(?i)`` for
    case-insensitive)."""
    return _as_float(re.search(value, text) is not None)


def metric_regex_search_false(text: str, value: str) -> float:
    """True when the regular expression matches nowhere."""
    return _as_float(re.search(value, text) is None)


def metric_starts_with(text: str, value: str) -> float:
    """True when the text starts with the string (exactly, leading whitespace counts)."""
    return _as_float(text.startswith(value))


def metric_ends_with(text: str, value: str) -> float:
    """True when the text ends with the string (exactly, trailing whitespace counts)."""
    return _as_float(text.endswith(value))


def clean_ending(text: str) -> str:
    """The text without trailing whitespace, closing quotes/brackets and markdown emphasis."""
    return text.rstrip(_CLOSING_CHARS)


def metric_ends_with_cleaned(text: str, value: str) -> float:
    """``ends_with`` after stripping trailing whitespace, closing quotes/brackets and ``*``/``_``
    from both the text and the expected ending (so an ending that itself closes a bracket works)."""
    return _as_float(clean_ending(text).endswith(clean_ending(value)))


def metric_contains_phone_number(text: str, value: Any = None) -> float:
    """True when the text contains something shaped like a phone number (see ``_PHONE_CANDIDATE``)."""
    for match in _PHONE_CANDIDATE.finditer(text):
        digits = sum(ch.isdigit() for ch in match.group(0))
        if 7 <= digits <= 15:
            return 1.0
    return 0.0


def metric_is_language(text: str, value: str) -> float:
    """True when langdetect detects the language ``value`` (an ISO 639-1 code such as "fr"; "zh"
    also accepts langdetect's "zh-cn"/"zh-tw"). Text without letters detects as nothing: False."""
    import langdetect  # lazily: an optional dependency, checked when the feedback is loaded

    # langdetect samples randomly; a fixed seed makes the same text always give the same answer.
    langdetect.DetectorFactory.seed = 0
    try:
        detected = langdetect.detect(text).lower()
    except langdetect.LangDetectException:
        return 0.0
    return _as_float(detected == value or detected.split("-")[0] == value)


METRICS: dict[str, Callable[[str, Any], float]] = {
    "length": metric_length,
    "length_chars": metric_length_chars,
    "contains_any_strings": metric_contains_any_strings,
    "contains_all_strings": metric_contains_all_strings,
    "contains_none_strings": metric_contains_none_strings,
    "regex_search": metric_regex_search,
    "regex_search_false": metric_regex_search_false,
    "starts_with": metric_starts_with,
    "ends_with": metric_ends_with,
    "ends_with_cleaned": metric_ends_with_cleaned,
    "contains_phone_number": metric_contains_phone_number,
    "is_language": metric_is_language,
}
BOOLEAN_METRICS = frozenset(METRICS) - {"length", "length_chars"}


# ---------------------------------------------------------------------------------------------
# Metric value checks: each returns the normalized value or raises FeedbackError naming the field.
# ---------------------------------------------------------------------------------------------
def _check_no_value(value: Any, metric: str, field: str) -> None:
    # A value here is a misunderstanding worth stopping for: evaluation compares against the
    # baseline response, so e.g. "length": 80 would suggest a threshold that is never applied.
    if value is not None:
        raise FeedbackError(f"metric {metric!r} takes no value (omit it or use null), got {value!r}", field=field)
    return None


def _check_string_list(value: Any, metric: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise FeedbackError(f"metric {metric!r} needs a non-empty list of strings, got {value!r}", field=field)
    for item in value:
        if not isinstance(item, str) or not item:
            raise FeedbackError(f"metric {metric!r} needs non-empty strings, got item {item!r}", field=field)
    return tuple(value)


def _check_regex(value: Any, metric: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise FeedbackError(f"metric {metric!r} needs a regular expression string, got {value!r}", field=field)
    try:
        re.compile(value)
    except re.error as exc:
        raise FeedbackError(f"invalid regular expression {value!r}: {exc}", field=field) from None
    return value


def _check_string(value: Any, metric: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise FeedbackError(f"metric {metric!r} needs a non-empty string, got {value!r}", field=field)
    return value


def _check_cleanable_string(value: Any, metric: str, field: str) -> str:
    value = _check_string(value, metric, field)
    if not clean_ending(value):
        raise FeedbackError(f"metric {metric!r}: {value!r} is empty once closing characters are stripped",
                            field=field)
    return value


_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:-[a-z]{2,4})?")


def _check_language(value: Any, metric: str, field: str) -> str:
    if not isinstance(value, str) or not _LANGUAGE_CODE.fullmatch(value):
        raise FeedbackError(f"metric {metric!r} needs a lowercase ISO 639-1 code such as 'fr', got {value!r}",
                            field=field)
    try:
        import langdetect  # noqa: F401
    except ImportError:
        raise FeedbackError("metric 'is_language' needs the langdetect package: pip install langdetect",
                            field="metric") from None
    return value


_VALUE_CHECKS: dict[str, Callable[[Any, str, str], Any]] = {
    "length": _check_no_value,
    "length_chars": _check_no_value,
    "contains_phone_number": _check_no_value,
    "contains_any_strings": _check_string_list,
    "contains_all_strings": _check_string_list,
    "contains_none_strings": _check_string_list,
    "regex_search": _check_regex,
    "regex_search_false": _check_regex,
    "starts_with": _check_string,
    "ends_with": _check_string,
    "ends_with_cleaned": _check_cleanable_string,
    "is_language": _check_language,
}
assert set(_VALUE_CHECKS) == set(METRICS)


# ---------------------------------------------------------------------------------------------
# The record
# ---------------------------------------------------------------------------------------------
def slugify(text: str, max_chars: int = SLUG_MAX_CHARS) -> str:
    """A lowercase ``a-z0-9-`` form of the text for file names; accents are folded ("é" -> "e").
    Long slugs are cut at a hyphen when one is in the second half, so names stay readable."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if len(slug) > max_chars:
        cut = slug[:max_chars]
        if slug[max_chars] != "-" and cut.rfind("-") >= max_chars // 2:
            cut = cut[: cut.rfind("-")]
        slug = cut.strip("-")
    return slug


def _require_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FeedbackError(f"must be a non-empty string, got {value!r}", field=field)
    return value


@dataclass(frozen=True)
class Feedback:
    """One piece of verbal feedback. Lists in ``metric``/``metric_value`` are stored as tuples so
    that the record stays hashable; ``to_dict`` gives them back as lists."""

    content: str
    domain: str
    effect: str
    scope: str = "regional"
    type: str = "qualitative"
    metric: str | tuple[str, ...] | None = None
    metric_value: Any = None
    comparison: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        for field in ("content", "domain", "effect"):
            _require_text(getattr(self, field), field)
        if self.scope not in SCOPES:
            raise FeedbackError(f"must be one of {', '.join(SCOPES)}, got {self.scope!r}", field="scope")
        if self.type not in TYPES:
            raise FeedbackError(f"must be one of {', '.join(TYPES)}, got {self.type!r}", field="type")
        if self.type == "qualitative":
            for field in ("metric", "metric_value", "comparison"):
                if getattr(self, field) is not None:
                    raise FeedbackError("qualitative feedback has no metric (it is judged by an LLM); "
                                        "remove it or set type to 'quantitative'", field=field)
        else:
            metric, value = self._checked_metric()
            object.__setattr__(self, "metric", metric)
            object.__setattr__(self, "metric_value", value)
            if self.comparison not in COMPARISONS:
                raise FeedbackError(f"quantitative feedback needs one of {', '.join(COMPARISONS)}, "
                                    f"got {self.comparison!r}", field="comparison")
        if self.name is None:
            object.__setattr__(self, "name", slugify(self.content) or f"feedback-{self.id[:8]}")
        else:
            _require_text(self.name, "name")
            if not slugify(self.name):
                raise FeedbackError(f"must contain letters or digits, got {self.name!r}", field="name")

    def _checked_metric(self) -> tuple[str | tuple[str, ...], Any]:
        metric = self.metric
        if metric is None:
            raise FeedbackError(f"quantitative feedback needs a metric (one of {', '.join(METRICS)})",
                                field="metric")
        if isinstance(metric, str):
            if metric not in METRICS:
                raise FeedbackError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})", field="metric")
            return metric, _VALUE_CHECKS[metric](self.metric_value, metric, "metric_value")
        if not isinstance(metric, (list, tuple)) or not metric:
            raise FeedbackError(f"must be a metric name or a non-empty list of names, got {metric!r}",
                                field="metric")
        values = self.metric_value
        if not isinstance(values, (list, tuple)) or len(values) != len(metric):
            raise FeedbackError(f"a list of {len(metric)} metrics needs a list of {len(metric)} values "
                                f"(null for a metric without one), got {values!r}", field="metric_value")
        checked = []
        for i, (name, value) in enumerate(zip(metric, values)):
            if not isinstance(name, str) or name not in METRICS:
                raise FeedbackError(f"unknown metric {name!r} (known: {', '.join(METRICS)})", field=f"metric[{i}]")
            if name not in BOOLEAN_METRICS:
                # Several metrics hold together ("all must hold"): a count cannot be one of them.
                raise FeedbackError(f"metric {name!r} is numeric; only true/false metrics can be combined",
                                    field=f"metric[{i}]")
            checked.append(_VALUE_CHECKS[name](value, name, f"metric_value[{i}]"))
        return tuple(metric), tuple(checked)

    @property
    def id(self) -> str:
        """Stable id: uuid5 in ``FEEDBACK_ID_NAMESPACE`` of content, domain and effect."""
        return str(uuid.uuid5(FEEDBACK_ID_NAMESPACE, "\x1f".join((self.content, self.domain, self.effect))))

    @property
    def slug(self) -> str:
        """Filesystem-safe name (from ``name``, which defaults to the content's slug)."""
        return slugify(self.name or self.content)

    @property
    def is_quantitative(self) -> bool:
        return self.type == "quantitative"

    @classmethod
    def from_dict(cls, data: Any) -> Feedback:
        """Build from a JSON object; unknown keys are an error (a typo would otherwise be ignored)."""
        if not isinstance(data, dict):
            raise FeedbackError(f"must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FeedbackError(f"unknown key (known: {', '.join(sorted(known))})", field=unknown[0])
        for required in ("content", "domain", "effect"):
            if required not in data:
                raise FeedbackError("is required", field=required)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_dict`` turns back into an equal record."""
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Measuring and comparing
# ---------------------------------------------------------------------------------------------
def measure(feedback: Feedback, text: str) -> float:
    """The feedback's metric on a response. Several metrics: 1.0 iff all of them hold."""
    if not feedback.is_quantitative:
        raise FeedbackError("qualitative feedback has no metric; judge it with an LLM", entry=feedback.name)
    if isinstance(feedback.metric, tuple):
        holds = all(METRICS[m](text, v) == 1.0 for m, v in zip(feedback.metric, feedback.metric_value))
        return _as_float(holds)
    return METRICS[feedback.metric](text, feedback.metric_value)


def compare(feedback: Feedback, baseline_value: float, trained_value: float) -> str:
    """"better" when the trained value moved strictly in the feedback's direction, "worse" when it
    moved against it, "tie" when equal. A tie is never success: when neither response applies the
    feedback (no emoji in either), nothing was learned (the original counted it as improved)."""
    if not feedback.is_quantitative:
        raise FeedbackError("qualitative feedback has no metric to compare", entry=feedback.name)
    if math.isnan(baseline_value) or math.isnan(trained_value):
        raise ValueError(f"cannot compare NaN metric values ({baseline_value}, {trained_value})")
    if trained_value == baseline_value:
        return "tie"
    went_up = trained_value > baseline_value
    return "better" if went_up == (feedback.comparison == "greater_eq_than") else "worse"


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def _entry_label(position: str, data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return f"{position} ({data['name']!r})"
    return position


def _read_entries(path: Path) -> Iterable[tuple[str, Any]]:
    """(position label, raw JSON value) for each entry of one file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FeedbackError(f"cannot read: {exc}", file=path) from None
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield f"line {number}", json.loads(line)
            except json.JSONDecodeError as exc:
                raise FeedbackError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=path,
                                    entry=f"line {number}") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FeedbackError(f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                            file=path) from None
    if isinstance(data, list):
        for index, item in enumerate(data):
            yield f"entry {index}", item
    else:
        yield "entry 0", data


def _feedback_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))
        if not found:
            raise FeedbackError("directory holds no .json or .jsonl file", file=path)
        return found
    if not path.exists():
        raise FeedbackError("no such file or directory", file=path)
    if path.suffix not in (".json", ".jsonl"):
        raise FeedbackError("expected a .json or .jsonl file, or a directory of them", file=path)
    return [path]


def load_feedbacks(paths: str | Path | Sequence[str | Path]) -> list[Feedback]:
    """Every feedback in the given files/directories, in order. A ``.json`` file holds one object
    or a list of objects, a ``.jsonl`` file one object per line, a directory its ``*.json`` and
    ``*.jsonl`` files in name order. Two entries with the same id or slug are an error."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)  # a generator is read twice
    feedbacks: list[Feedback] = []
    seen_ids: dict[str, str] = {}
    seen_slugs: dict[str, str] = {}
    for given in paths:
        for file in _feedback_files(Path(given)):
            for position, data in _read_entries(file):
                label = _entry_label(position, data)
                try:
                    feedback = Feedback.from_dict(data)
                except FeedbackError as exc:
                    raise exc.located(file, label) from None
                except TypeError as exc:  # a value of a type the record cannot even hold
                    raise FeedbackError(str(exc), file=file, entry=label) from None
                here = f"{file}: {label}"
                for seen, key, field in ((seen_ids, feedback.id, "content"), (seen_slugs, feedback.slug, "name")):
                    if key in seen:
                        what = "content, domain and effect" if field == "content" else f"slug {key!r}"
                        raise FeedbackError(f"same {what} as {seen[key]}", file=file, entry=label, field=field)
                    seen[key] = here
                feedbacks.append(feedback)
    if not feedbacks:
        raise FeedbackError(f"no feedback found in {', '.join(str(p) for p in paths) or 'no paths'}")
    return feedbacks


def select_feedbacks(feedbacks: Sequence[Feedback], prefix: str | None) -> list[Feedback]:
    """The feedbacks whose name, slug or content starts with ``prefix`` (case-insensitive); all of
    them for None or ""."""
    if not prefix or not prefix.strip():
        return list(feedbacks)
    wanted = prefix.strip().casefold()
    chosen = [
        fb for fb in feedbacks
        if (fb.name or "").casefold().startswith(wanted) or fb.slug.startswith(wanted)
        or fb.content.casefold().startswith(wanted)
    ]
    if not chosen:
        available = ", ".join(fb.name or fb.slug for fb in feedbacks) or "none"
        raise FeedbackError(f"no feedback's name or content starts with {prefix!r}; available: {available}")
    return chosen
