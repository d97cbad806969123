"""The metrics of quantitative C3PO feedback, the check of their values, and the verdict.

A quantitative feedback (``verlkit.c3po.feedback.Feedback``) names a metric of a response text and
a direction; evaluation measures the metric on the original model's (baseline) response and on the
trained model's response (``measure``) and says whether the trained one moved in the feedback's
direction (``compare``). Qualitative feedback is judged by an LLM instead
(``verlkit.c3po.prompts.judge_messages``). Everything here is pure; a bad metric value is an
``InputError`` naming the field, raised when the feedback is built.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Callable, Sequence

from verlkit.records import InputError

if TYPE_CHECKING:
    from verlkit.c3po.feedback import Feedback

__all__ = [
    "BOOLEAN_METRICS",
    "METRICS",
    "check_metric_value",
    "clean_ending",
    "compare",
    "measure",
]


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
# Metric value checks: each returns the normalized value or raises InputError naming the field.
# ---------------------------------------------------------------------------------------------
def _check_no_value(value: Any, metric: str, field: str) -> None:
    # A value here is a misunderstanding worth stopping for: evaluation compares against the
    # baseline response, so e.g. "length": 80 would suggest a threshold that is never applied.
    if value is not None:
        raise InputError(f"metric {metric!r} takes no value (omit it or use null), got {value!r}", field=field)
    return None


def _check_string_list(value: Any, metric: str, field: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise InputError(f"metric {metric!r} needs a non-empty list of strings, got {value!r}", field=field)
    for item in value:
        if not isinstance(item, str) or not item:
            raise InputError(f"metric {metric!r} needs non-empty strings, got item {item!r}", field=field)
    return tuple(value)


def _check_regex(value: Any, metric: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"metric {metric!r} needs a regular expression string, got {value!r}", field=field)
    try:
        re.compile(value)
    except re.error as exc:
        raise InputError(f"invalid regular expression {value!r}: {exc}", field=field) from None
    return value


def _check_string(value: Any, metric: str, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InputError(f"metric {metric!r} needs a non-empty string, got {value!r}", field=field)
    return value


def _check_cleanable_string(value: Any, metric: str, field: str) -> str:
    value = _check_string(value, metric, field)
    if not clean_ending(value):
        raise InputError(f"metric {metric!r}: {value!r} is empty once closing characters are stripped",
                            field=field)
    return value


_LANGUAGE_CODE = re.compile(r"[a-z]{2,3}(?:-[a-z]{2,4})?")


def _check_language(value: Any, metric: str, field: str) -> str:
    if not isinstance(value, str) or not _LANGUAGE_CODE.fullmatch(value):
        raise InputError(f"metric {metric!r} needs a lowercase ISO 639-1 code such as 'fr', got {value!r}",
                            field=field)
    try:
        import langdetect  # noqa: F401
    except ImportError:
        raise InputError("metric 'is_language' needs the langdetect package: pip install langdetect",
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


def check_metric_value(metric: str, value: Any, field: str) -> Any:
    """The value ``metric`` is measured with, normalized (lists become tuples), or an
    ``InputError`` naming ``field`` when the metric cannot use it. ``metric`` must be in METRICS."""
    return _VALUE_CHECKS[metric](value, metric, field)


# ---------------------------------------------------------------------------------------------
# Measuring and comparing
# ---------------------------------------------------------------------------------------------
def measure(feedback: Feedback, text: str) -> float:
    """The feedback's metric on a response. Several metrics: 1.0 iff all of them hold."""
    if not feedback.is_quantitative:
        raise InputError("qualitative feedback has no metric; judge it with an LLM", entry=feedback.name)
    if isinstance(feedback.metric, tuple):
        holds = all(METRICS[m](text, v) == 1.0 for m, v in zip(feedback.metric, feedback.metric_value))
        return _as_float(holds)
    return METRICS[feedback.metric](text, feedback.metric_value)


def compare(feedback: Feedback, baseline_value: float, trained_value: float) -> str:
    """"better" when the trained value moved strictly in the feedback's direction, "worse" when it
    moved against it, "tie" when equal. A tie is never success: when neither response applies the
    feedback (no emoji in either), nothing was learned (the original counted it as improved)."""
    if not feedback.is_quantitative:
        raise InputError("qualitative feedback has no metric to compare", entry=feedback.name)
    if math.isnan(baseline_value) or math.isnan(trained_value):
        raise ValueError(f"cannot compare NaN metric values ({baseline_value}, {trained_value})")
    if trained_value == baseline_value:
        return "tie"
    went_up = trained_value > baseline_value
    return "better" if went_up == (feedback.comparison == "greater_eq_than") else "worse"
