"""RLCR-style calibration reward: the policy answers and states its own confidence.

Design (reference-methods §2.9): the response must be

    <think>...</think> <answer>...</answer> <analysis>...</analysis> <confidence>...</confidence>

with nothing after the last ``</confidence>`` (the opening ``<think>`` may be part of the prompt),
and the last ``<confidence>`` must parse as a float in [0, 1]. Then, with q that confidence::

    reward = 0.5·format + 0.5·acc + 0.5·(1 - (acc - q)^2)

where ``acc`` is 0 and the Brier term is 0 when the format fails. The score lies in [0, 1.5]; a
malformed response scores 0, a well-formed one at least 0.5.

Accuracy: multiple choice (``extra_info["options"]`` present, ground truth = 1-based option number
as a string) accepts ``2``, ``(2)``, ``2.``, ``Option 2``, the letter ``B``/``(B)``, the option's
text, or ``2) <option text>``; math (``extra_info["answer_type"] == "math"``) uses math-verify in a
worker process killed after ``rule_timeout_s`` (``verlkit.clients.rule_check``), or equal normalized
text; anything else: normalized exact match (lowercase, no punctuation/articles/extra spaces).

A math check that timed out or crashed is not a verdict: ``rule_failed = 1`` (0 for a math row that
was checked, NaN otherwise) and ``on_rule_failure`` decides: ``wrong`` (default) scores the answer as
wrong, ``error`` flags the row as a reward failure (``reward_error = 1``, score 0).

Routing: ``data_source == "medmcqa_rlcr"`` or any source ending in ``_rlcr`` (spec name ``rlcr``).
Result keys: score, acc, format_ok, confidence (q, NaN if it did not parse), brier ((acc - q)^2, the
Brier score of the row, lower is better; the reward term is 1 - brier; NaN if format fails), rule_failed.
Options: ``reward_kwargs.rlcr.{rule_timeout_s, on_rule_failure}`` (the weights are the method's, not knobs).

Score components (finite on every row that is scored, for per-component advantages such as verl's
``gdpo``): ``format_term`` (format), ``accuracy_term`` (acc), ``brier_term`` (1 - brier, 0 when the
format fails); score = 0.5·format_term + 0.5·accuracy_term + 0.5·brier_term.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, ClassVar, Literal, Sequence

from pydantic import Field

from verl.utils.reward_score.math_rule import rule_failure_result
from verl.utils.reward_score.options import RewardOptions, parse_options
from verlkit.clients import rule_check

FORMAT_WEIGHT = ACCURACY_WEIGHT = BRIER_WEIGHT = 0.5
COMPONENTS = ("format_term", "accuracy_term", "brier_term")  # weighted by the three weights above
OnRuleFailure = Literal["wrong", "error"]


class RLCROptions(RewardOptions):
    """``reward_kwargs.rlcr.*``: how math answers are checked. The weights are the method's, not a knob."""

    reward_name: ClassVar[str] = "rlcr"
    rule_timeout_s: float = Field(rule_check.DEFAULT_TIMEOUT_S, gt=0)
    on_rule_failure: OnRuleFailure = "wrong"

SYSTEM_PROMPT = (
    "Work through the question in four tagged sections, in this order and with nothing after the "
    "last one:\n"
    "<think> your step-by-step reasoning </think>\n"
    "<answer> your final answer only </answer>\n"
    "<analysis> what could make your answer wrong: the specific facts you are unsure of and any "
    "option you could not rule out; do not change the answer here </analysis>\n"
    "<confidence> the probability that your answer is correct, a number between 0 and 1 such as 0.7 "
    "</confidence>"
)
MCQ_ANSWER_INSTRUCTION = "In <answer>, give the number of the option you choose, for example <answer>2</answer>."

# Whole response: optional <think>, then the four sections in order, nothing after. Matched as a chain
# of section boundaries, each searched from where the previous one ended: one regex with four lazy
# ``.*?`` groups backtracks quadratically and worse (a 128k-character response repeating
# "</think><answer>" took 9 s); the earliest boundary is always the best choice, so this is exact.
_OPENING = re.compile(r"\s*(?:<think>)?")
_BOUNDARIES = tuple(re.compile(p) for p in (r"</think>\s*<answer>", r"</answer>\s*<analysis>",
                                            r"</analysis>\s*<confidence>"))  # fmt: skip
_CLOSING = re.compile(r"</confidence>\s*\Z")


def well_formed(text: str) -> bool:
    """The response is ``[<think>] ... </think> <answer> ... </answer> <analysis> ... </analysis>
    <confidence> ... </confidence>`` with nothing after (any text inside the sections)."""
    pos = _OPENING.match(text).end()
    for boundary in _BOUNDARIES:
        found = boundary.search(text, pos)
        if found is None:
            return False
        pos = found.end()
    closing = _CLOSING.search(text, pos)
    return closing is not None


_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_CONFIDENCE_RE = re.compile(r"<confidence>(.*?)</confidence>", re.DOTALL)


def build_user_prompt(question: str, options: Sequence[str] | None = None) -> str:
    """The user message for one question (options numbered ``(1)``..)."""
    text = f"Question: {str(question).strip()}"
    if options:
        rendered = "\n".join(f"({i}) {str(o).strip()}" for i, o in enumerate(options, start=1))
        text += f"\nOptions:\n{rendered}\n\n{MCQ_ANSWER_INSTRUCTION}"
    return text


def parse_response(text: str) -> tuple[str, float] | None:
    """(last answer, last confidence) if the response is well formed, else None."""
    if not isinstance(text, str) or not well_formed(text):
        return None
    answer = _ANSWER_RE.findall(text)[-1].strip()
    conf_raw = _CONFIDENCE_RE.findall(text)[-1].strip()
    if not answer:
        return None
    try:
        confidence = float(conf_raw)
    except ValueError:
        return None
    if not (math.isfinite(confidence) and 0.0 <= confidence <= 1.0):
        return None
    return answer, confidence


def normalize_text(text: str) -> str:
    """Lowercase, drop punctuation, articles and extra whitespace (SQuAD/HotpotQA style)."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_OPTION_MARKER_RE = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*:?\s*)?(?:(?:option|choice)\s*)?"
    r"[\(\[]?\s*(?P<marker>\d+|[a-z])(?P<close>\s*[\)\]])?(?P<tail>.*)$",
    re.IGNORECASE | re.DOTALL,
)


def choice_index(answer: str, options: Sequence[str]) -> int | None:
    """The 1-based option an answer names, or None.

    A marker (number or letter) counts only when it stands alone or is set off from the rest, and
    any text after it must then be that option's text: ``2``, ``(B)``, ``Option 2: aspirin``.
    Otherwise the whole answer is compared with each option's text.
    """
    cleaned = answer.strip().strip("*_`").strip()
    normalized_options = [normalize_text(o) for o in options]
    m = _OPTION_MARKER_RE.match(cleaned)
    tail = m.group("tail") if m else ""
    if m and (not tail or m.group("close") or tail[0] in ".:-" or tail[0].isspace()):
        marker = m.group("marker").lower()
        index = int(marker) if marker.isdigit() else ord(marker) - ord("a") + 1
        rest = tail.strip().lstrip(".:-").strip()
        if 1 <= index <= len(options) and (not rest or normalize_text(rest) == normalized_options[index - 1]):
            return index
        if not rest:
            return None  # a lone marker that names no option
    target = normalize_text(cleaned)
    if target:
        for i, option in enumerate(normalized_options, start=1):
            if target == option:
                return i
    return None


def math_equal(answer: str, ground_truth: str, timeout_s: float = rule_check.DEFAULT_TIMEOUT_S) -> bool | None:
    """math-verify equivalence (or equal normalized text); None when the check timed out or crashed.

    Runs in ``rule_check``'s killable worker: math-verify's own timeouts rely on SIGALRM, unusable in
    reward threads, and without one a degenerate answer could hang the reward forever."""
    text = answer.strip()
    if "\\boxed" not in text and "$" not in text:
        text = f"${text}$"
    rule = rule_check.check(text, str(ground_truth), timeout_s=timeout_s)
    if rule.failed:
        return None
    return rule.correct or normalize_text(answer) == normalize_text(str(ground_truth))


def is_correct(answer: str, ground_truth: Any, extra_info: dict[str, Any] | None,
               timeout_s: float = rule_check.DEFAULT_TIMEOUT_S) -> bool | None:
    """Is the answer right? None only for a math check that did not finish."""
    extra_info = extra_info or {}
    if extra_info.get("answer_type") == "math":
        return math_equal(answer, str(ground_truth), timeout_s)
    options = extra_info.get("options")
    if options is not None and not isinstance(options, str) and len(options) > 0:
        try:
            gold = int(float(str(ground_truth).strip()))
        except ValueError:
            return False
        return choice_index(answer, [str(o) for o in options]) == gold
    return normalize_text(answer) == normalize_text(str(ground_truth))


def score_response(text: str, ground_truth: Any, extra_info: dict[str, Any] | None = None,
                   rule_timeout_s: float = rule_check.DEFAULT_TIMEOUT_S,
                   on_rule_failure: OnRuleFailure = "wrong") -> dict[str, float]:
    """The full reward result for one response (pure but for the math check's worker process)."""
    parsed = parse_response(text)
    if parsed is None:
        return {"score": 0.0, "acc": 0.0, "format_ok": 0.0, "confidence": math.nan, "brier": math.nan,
                "rule_failed": math.nan, "format_term": 0.0, "accuracy_term": 0.0, "brier_term": 0.0}
    answer, confidence = parsed
    correct = is_correct(answer, ground_truth, extra_info, rule_timeout_s)
    is_math = (extra_info or {}).get("answer_type") == "math"
    rule_failed = float(correct is None) if is_math else math.nan
    if correct is None and on_rule_failure == "error":
        return {**rule_failure_result(), "format_ok": 1.0, "confidence": confidence, "brier": math.nan}
    acc = 1.0 if correct else 0.0
    brier = (acc - confidence) ** 2
    score = FORMAT_WEIGHT * 1.0 + ACCURACY_WEIGHT * acc + BRIER_WEIGHT * (1.0 - brier)
    return {"score": score, "acc": acc, "format_ok": 1.0, "confidence": confidence, "brier": brier,
            "rule_failed": rule_failed, "format_term": 1.0, "accuracy_term": acc, "brier_term": 1.0 - brier}


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **options) -> dict[str, float]:
    """verl custom-reward entry point."""
    opts = parse_options(RLCROptions, options)
    return score_response(solution_str, ground_truth, extra_info, opts.rule_timeout_s, opts.on_rule_failure)


def validate_row(row: dict) -> list[str]:
    """The row check of the ``rlcr`` family (``data_prep.validate`` calls it through the registry): MC
    rows need a ground truth naming an option."""
    extra_info = row.get("extra_info") or {}
    options = extra_info.get("options")
    if extra_info.get("answer_type") == "math" or not options:
        return []
    gt = (row.get("reward_model") or {}).get("ground_truth")
    try:
        gold = int(float(str(gt).strip()))
    except ValueError:
        return [f"reward_model.ground_truth: must be a 1-based option number, got {gt!r}"]
    if not 1 <= gold <= len(options):
        return [f"reward_model.ground_truth: must be in 1..{len(options)}, got {gt!r}"]
    return []
