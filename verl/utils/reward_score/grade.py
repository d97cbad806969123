"""``grade``: reward for training the Rubric Reward Model (RRM) to score solutions out of 10.

The RRM reads (problem, rubric, candidate solution) and must end with a total score. Its reward is

    r = (1 - |s/10 - gt|)^2,     s = parsed total score clamped to [0, 10],  gt in [0, 1]

Fixes against the original: the score is clamped to [0, 10] before use (the original had no lower
clamp, so a negative score could earn a positive reward again: the square is not monotone past
|s/10 - gt| > 1), and the parser accepts the formats graders actually write instead of raising on
anything but ``<number>/10`` (which silently became a 0). An unparseable reply still scores 0, but is
flagged with ``parse_ok = 0`` so the rate is visible in the step metrics.

Parsing (``parse_total_score``): the text after the LAST ``Total Score`` (case-insensitive) that is
followed by a number is read,
ignoring markdown/LaTeX decoration (``**``, ``|``, ``[ ]``, ``$``, ``\\boxed{}``), separators (``:``,
``=``, ``is``) and a unit (``points``). A denominator (``7/10``, ``4/5``, ``7 out of 10``,
``\\frac{7}{10}``, or a leading ``(out of 5)``) other than 10 rescales the score to 10 points
(``4/5`` -> 8.0). With no ``Total Score`` marker, a reply that is only a score (``8``, ``8/10``) or whose
last line is ``<n> out of <d>`` / ``<n>/<d>`` is accepted.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar

from pydantic import Field

from verl.utils.reward_score.options import RewardOptions, parse_options


class GradeOptions(RewardOptions):
    """``reward_kwargs.grade.*``."""

    reward_name: ClassVar[str] = "grade"
    acc_tolerance: float = Field(0.1, ge=0.0)  # acc = 1 when |s/10 - gt| is at most this

# Decoration between the marker and the number (markdown bold/italics/tables, brackets, LaTeX).
_NOISE = re.compile(r"\\boxed\{|\\textbf\{|\\text\{|\\mathbf\{|[*_|\[\]$`{}#>]")
_NUMBER = r"[-+−]?\d+(?:[.,]\d+)?"
# What may sit between the marker and the number: separators, "is", "(out of 10)", "for the solution".
_LEAD = re.compile(
    r"^\s*(?:\(\s*(?:out\s+of|/)\s*(?P<pre_den>\d+(?:\.\d+)?)\s*(?:points?)?\s*\))?"
    r"\s*(?:for\s+(?:the|this)\s+\w+\s*)?"
    r"[:=\-–—]*\s*(?:is|of|equals|would\s+be|:)?\s*[:=]?\s*",
    re.IGNORECASE,
)
_SCORE = re.compile(
    rf"^(?P<num>{_NUMBER})(?!\d|[.,]\d|[eE]\d)\s*(?:points?|pts?\.?)?\s*"
    rf"(?:(?:/|out\s+of|of)\s*(?P<den>{_NUMBER}))?",
    re.IGNORECASE,
)
_FRAC_RAW = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_MARKER = re.compile(r"total\s+score", re.IGNORECASE)
_BARE = re.compile(rf"^\s*(?P<num>{_NUMBER})\s*(?:points?)?\s*(?:(?:/|out\s+of)\s*(?P<den>{_NUMBER}))?\s*\.?\s*$",
                   re.IGNORECASE)
_TAIL_WINDOW = 120  # characters after the marker that may hold the number


def _to_float(text: str) -> float:
    return float(text.replace("−", "-").replace(",", "."))


def _scaled(num: str, den: str | None, out_of: float) -> tuple[float, float] | None:
    """(score on the 10-point scale clamped to [0, 10], points per unit of ``num``), or None when
    the denominator (``den``, else ``out_of``) is not positive."""
    denominator = _to_float(den) if den is not None else out_of
    if denominator <= 0:
        return None
    value = _to_float(num)
    if denominator != 10:
        value = value / denominator * 10.0
    if not math.isfinite(value):
        return None
    return min(10.0, max(0.0, value)), 10.0 / denominator


def _blank(match: re.Match) -> str:
    # Decoration is blanked with as many spaces as it had characters, so that an index into the
    # cleaned text is the same index into the reply (the score's position, for probabilities).
    return " " * len(match.group(0))


def _find_after_marker(tail: str, out_of: float) -> tuple[float, int, float] | None:
    window = tail[:_TAIL_WINDOW]
    stripped = window.lstrip(" :=*")
    frac = _FRAC_RAW.match(stripped)
    if frac:  # "Total Score: \frac{7}{10}" before the brace noise is stripped
        try:
            found = _scaled(frac.group(1).strip(), frac.group(2).strip(), out_of)
        except ValueError:
            return None
        if found is None:
            return None
        start = len(window) - len(stripped) + frac.start(1) + (len(frac.group(1)) - len(frac.group(1).lstrip()))
        return found[0], start, found[1]
    cleaned = _NOISE.sub(_blank, window)
    lead = _LEAD.match(cleaned)
    pre_den = lead.group("pre_den") if lead else None
    offset = lead.end() if lead else 0
    match = _SCORE.match(cleaned[offset:])
    if not match:
        return None
    found = _scaled(match.group("num"), match.group("den") or pre_den, out_of)
    return None if found is None else (found[0], offset + match.start("num"), found[1])


def find_total_score(text: str, out_of: float = 10.0) -> tuple[float, int, float] | None:
    """``(score, start, unit)``: the total score of a grader's reply on the 10-point scale (clamped to
    [0, 10]), the index in ``text`` where its number starts, and the points (on the 10-point scale)
    per unit of that number; None if there is none. ``out_of``: the scale of a score written without
    a denominator (10 for our rubric prompt)."""
    if not isinstance(text, str) or not text:
        return None
    markers = list(_MARKER.finditer(text))
    if markers:
        # The last marker that is followed by a score ("Total Score: 7/10 ... see the Total Score
        # breakdown above" reads 7), so a trailing mention of the phrase does not lose the score.
        for marker in reversed(markers):
            found = _find_after_marker(text[marker.end():], out_of)
            if found is not None:
                return found[0], marker.end() + found[1], found[2]
        return None
    # No marker: the whole reply is a score, or its last line is "<n>/<d>" or "<n> out of <d>".
    cleaned = _NOISE.sub(_blank, text)
    bare = _BARE.match(cleaned.strip())
    if bare:
        found = _scaled(bare.group("num"), bare.group("den"), out_of)
        lead = len(cleaned) - len(cleaned.lstrip())
        return None if found is None else (found[0], lead + bare.start("num"), found[1])
    lines = [(m.start(), m.group(0)) for m in re.finditer(r"[^\n]+", cleaned) if m.group(0).strip()]
    if lines:
        line_start, line = lines[-1]
        found = list(re.finditer(rf"({_NUMBER})\s*(?:points?\s*)?(?:/|out\s+of)\s*({_NUMBER})", line, re.IGNORECASE))
        if found:
            scaled = _scaled(found[-1].group(1), found[-1].group(2), out_of)
            return None if scaled is None else (scaled[0], line_start + found[-1].start(1), scaled[1])
    return None


def parse_total_score(text: str, out_of: float = 10.0) -> float | None:
    """The total score out of 10 in a grader's reply, clamped to [0, 10]; None if there is none.
    ``out_of``: the scale of a score written without a denominator."""
    found = find_total_score(text, out_of)
    return None if found is None else found[0]


def validate_ground_truth(ground_truth) -> float:
    """The reference score as a float in [0, 1]; ValueError (a data error) otherwise."""
    try:
        gt = float(ground_truth)
    except (TypeError, ValueError):
        raise ValueError(f"grade: ground_truth must be a reference score in [0, 1], got {ground_truth!r}") from None
    if not (math.isfinite(gt) and 0.0 <= gt <= 1.0):
        raise ValueError(
            f"grade: ground_truth must be a reference score in [0, 1] (a score out of 10 divided by 10), got {gt!r}"
        )
    return gt


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **options) -> dict:
    """Reward for one RRM reply. ``acc`` = 1 when the predicted score is within ``acc_tolerance`` of gt."""
    acc_tolerance = parse_options(GradeOptions, options).acc_tolerance
    gt = validate_ground_truth(ground_truth)
    total = parse_total_score(solution_str)
    if total is None:
        return {"score": 0.0, "acc": 0.0, "parse_ok": 0.0, "grade_pred": math.nan}
    pred = total / 10.0
    error = abs(pred - gt)
    return {
        "score": (1.0 - error) ** 2,
        "acc": float(error <= acc_tolerance + 1e-9),
        "parse_ok": 1.0,
        "grade_pred": pred,
    }


def validate_row(row: dict) -> list[str]:
    """The row check of the ``grade`` family (``data_prep.validate`` calls it through the registry): the
    reference score must be a number in [0, 1]."""
    try:
        validate_ground_truth((row.get("reward_model") or {}).get("ground_truth"))
    except ValueError as e:
        return [f"reward_model.ground_truth: {e}"]
    return []
