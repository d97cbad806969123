"""``*_tinyv``: policy reward from a served verifier model, alone or combined with the rule check.

Setups (``v`` = verifier score in [0, 1], ``P`` = rule-based correctness in {0, 1}, ``w`` = weight):

- ``tinyv_only``: r = v
- ``addon``:      r = 1 if P else w * v      (the verifier is called only when the rule says wrong)
- ``mixed``:      r = w * v + (1 - w) * P
- ``hybrid``:     two models on the two sides of the rule check (module ``hybrid``): rule-wrong samples
  go to the binary verifier (rescue), rule-correct ones to the rubric model (flaw check)

Templates:

- ``rubric`` (RRM): question + rubric ``extra_info["criteria"]`` + the FULL response; v = total score
  out of 10 (parsed like the ``grade`` reward, clamped) / 10.
- ``tinyv`` (binary): question + ground truth + the answer extracted by the rule checker; v = 1 for a
  final whole-word "True", 0 for "False" (``parse_verdict``). For think-style verifiers only the text
  after ``</think>`` counts.

Failures never crash training and never become a silent 0. A verifier the client could not reach
(after its bounded retries) sets ``verifier_failed = 1``, ``verifier_ok = 0`` and the row is scored
by ``on_failure``: ``rule`` (default) = the rule-based result P, ``zero`` = 0. A reply that arrived
but holds no verdict/score is a verifier answer of 0 with ``parse_ok = 0``. Parse failures are not
re-asked (at temperature 0 the same prompt gives the same reply).

A rule check that timed out or crashed (math-verify on a degenerate answer) is not a verdict either:
``rule_failed = 1``, ``rule_correct`` NaN, and ``on_rule_failure`` decides: ``verifier`` (default) = the
verifier's score alone stands for the row (r = v, whatever the setup); ``wrong`` = P counts as 0 (the
old behaviour, now counted); ``error`` = the row is a reward failure (``reward_error = 1``, score 0).
When the rule is all that is left (the verifier failed too, ``on_failure=rule``), ``wrong`` scores 0
and the other two flag the row as a reward failure.

Score components (finite on every row, for per-component advantages such as verl's ``gdpo``):
``tinyv_only``: ``verifier_term`` = v; ``addon``: ``rule_term`` = P, ``rescue_term`` = v on rule-wrong rows
(else 0), r = rule_term + w·rescue_term; ``mixed``: ``rule_term``, ``verifier_term``, r = (1-w)·rule_term +
w·verifier_term. A failed verifier call counts like the score it falls back to (``on_failure``).

Options (``+reward.custom_reward_function.reward_kwargs.tinyv.<option>=...``): see ``TinyVOptions``.
Importing this module does no I/O; the HTTP client and rule-check workers start on first use.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar, Literal, get_args

from pydantic import Field

from verlkit.clients import rule_check
from verlkit.clients.llm import get_client
from verlkit.clients.settings import ClientSettings
from verl.utils.reward_score.grade import parse_total_score
from verl.utils.reward_score.math_rule import rule_failure_result
from verl.utils.reward_score.options import RewardOptions, parse_options
from verl.utils.reward_score.verifier_prompts import rubric_prompt, tinyv_prompt

URL_ENV = "VERLKIT_VERIFIER_URL"
MODEL_ENV = "VERLKIT_VERIFIER_MODEL"
DEFAULT_URL = "http://127.0.0.1:8000/v1"
Template = Literal["rubric", "tinyv"]
Setup = Literal["tinyv_only", "addon", "mixed", "hybrid"]
TEMPLATES, SETUPS = get_args(Template), get_args(Setup)
_ANSWER_TAIL_CHARS = 1000  # sent as "the answer" when the rule checker extracted none


class TinyVOptions(RewardOptions, ClientSettings):
    """``reward_kwargs.tinyv.*``. The client settings (``url``, ``model``, ``max_concurrency``,
    ``timeout_s``, ``max_retries``, ``api_key_env``, ...) come from :class:`ClientSettings`; ``url`` and
    ``model`` fall back to ``$VERLKIT_VERIFIER_URL`` / ``$VERLKIT_VERIFIER_MODEL``."""

    reward_name: ClassVar[str] = "tinyv"
    env_defaults: ClassVar[dict[str, str]] = {"url": URL_ENV, "model": MODEL_ENV}

    url: str = DEFAULT_URL
    template: Template = "tinyv"
    setup: Setup = "addon"
    weight: float = Field(1.0, ge=0.0, le=1.0)
    on_failure: Literal["rule", "zero"] = "rule"
    on_rule_failure: Literal["verifier", "wrong", "error"] = "verifier"
    max_tokens: int = Field(0, ge=0)  # 0 = by template: tinyv 8 (512 for think models), rubric 2048
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    is_think_model: bool = False
    rule_timeout_s: float = Field(rule_check.DEFAULT_TIMEOUT_S, gt=0)


def max_tokens_for(opts: TinyVOptions) -> int:
    if opts.max_tokens:
        return opts.max_tokens
    if opts.template == "rubric":
        return 2048
    return 512 if opts.is_think_model else 8


# ---------------------------------------------------------------------------------------------
# Verdict parsing (binary verifier)
# ---------------------------------------------------------------------------------------------
_VERDICT_WORD = re.compile(r"\b(true|false)\b", re.IGNORECASE)
_NEGATION_BEFORE = re.compile(r"(?:\bnot|n't|\bnever|\bno)\s*[*_`'\"]*\s*$", re.IGNORECASE)
_MARKED = re.compile(
    r"\b(?:final\s+answer|answer|verdict|judg(?:e)?ment|decision|output|result)\s*(?:is)?\s*[:=\-]?\s*"
    r"(?:[*_`'\"(\[{]|\\boxed|\\text)*\s*(true|false)\b",
    re.IGNORECASE,
)
_DECORATION = re.compile(r"[*_`'\"\s.!()\[\]{}$]|\\boxed|\\text")


def parse_verdict(reply: str | None, is_think_model: bool = False) -> bool | None:
    """True/False if the reply's final verdict is a whole-word True/False, else None.

    Strict on purpose: "untrue", "not true", "isn't false" or a line naming both words without a
    marker are not verdicts. For think-style models only the text after the last ``</think>`` is
    read (no ``</think>`` = the model never finished thinking = no verdict).
    """
    if not isinstance(reply, str):
        return None
    text = reply
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif is_think_model:
        return None
    text = text.strip()
    if not text:
        return None
    # 1. The whole reply is the verdict ("True", "**False**.", "`True`", "\boxed{True}").
    bare = _DECORATION.sub("", text).lower()
    if bare in ("true", "false"):
        return bare == "true"
    # 2. The last explicitly marked verdict ("Answer: True", "Final answer: **False**").
    marked = list(_MARKED.finditer(text))
    if marked:
        last = marked[-1]
        if not _NEGATION_BEFORE.search(text[: last.start(1)]):
            return last.group(1).lower() == "true"
        return None
    # 3. The last line that holds a verdict word, if it holds only one kind and it is not negated.
    for line in reversed(text.splitlines()):
        words = list(_VERDICT_WORD.finditer(line))
        if not words:
            continue
        kinds = {w.group(1).lower() for w in words}
        if len(kinds) != 1:
            return None
        if any(_NEGATION_BEFORE.search(line[: w.start()]) for w in words):
            return None
        return kinds.pop() == "true"
    return None


# ---------------------------------------------------------------------------------------------
# The reward
# ---------------------------------------------------------------------------------------------
def combine(setup: str, weight: float, v: float, rule_correct: bool | None) -> float:
    """The setup's formula; ``rule_correct`` may be None only for ``tinyv_only``."""
    if setup == "tinyv_only":
        return v
    p = 1.0 if rule_correct else 0.0
    if setup == "addon":
        return 1.0 if rule_correct else weight * v
    return weight * v + (1.0 - weight) * p


def setup_terms(setup: str, rule_correct: bool | None, v: float) -> dict[str, float]:
    """The score's components for ``combine`` (see the module docstring)."""
    if setup == "tinyv_only":
        return {"verifier_term": v}
    p = 1.0 if rule_correct else 0.0
    if setup == "addon":
        return {"rule_term": p, "rescue_term": 0.0 if rule_correct else v}
    return {"rule_term": p, "verifier_term": v}


def _question(extra_info: dict) -> str:
    question = extra_info.get("question") if isinstance(extra_info, dict) else None
    if not isinstance(question, str) or not question.strip():
        raise ValueError("extra_info.question: missing or empty (the verifier prompt needs the question)")
    return question


def needs_criteria(options: dict) -> bool:
    """Does a run with these raw ``reward_kwargs.tinyv`` options put the row's rubric in the prompt?"""
    return str(options.get("template") or "tinyv") == "rubric"


def validate_row(row: dict, **options) -> list[str]:
    """The row check of the ``tinyv`` family (``data_prep.validate`` calls it through the registry with the
    run's ``tinyv`` options): the question, and the rubric ``criteria`` when the template uses them."""
    extra_info = row.get("extra_info") or {}
    try:
        _question(extra_info)
    except ValueError as e:
        return [str(e)]
    criteria = extra_info.get("criteria")
    if needs_criteria(options) and (not isinstance(criteria, str) or not criteria.strip()):
        return ["extra_info.criteria: missing or empty (template=rubric grades each response against the "
                "problem's rubric; without it every row would score 0 with reward_error=1)"]
    return []


def build_messages(opts: TinyVOptions, solution_str: str, ground_truth: str, extra_info: dict,
                   extracted: str | None) -> list[dict]:
    question = _question(extra_info)
    if opts.template == "rubric":
        criteria = (extra_info or {}).get("criteria")
        if not isinstance(criteria, str) or not criteria.strip():
            raise ValueError("extra_info.criteria: missing or empty (template=rubric needs the problem's rubric)")
        prompt = rubric_prompt(question, criteria, solution_str)
    else:
        answer = extracted if extracted else solution_str.strip()[-_ANSWER_TAIL_CHARS:]
        prompt = tinyv_prompt(question, str(ground_truth), answer or "(no answer)")
    return [{"role": "user", "content": prompt}]


def parse_verifier_score(opts: TinyVOptions, reply: str | None) -> float | None:
    """v in [0, 1] from the verifier's reply, or None when it holds no score/verdict."""
    if opts.template == "rubric":
        text = reply
        if isinstance(text, str) and "</think>" in text:
            text = text.rsplit("</think>", 1)[1]
        elif opts.is_think_model:
            return None
        total = parse_total_score(text)
        return None if total is None else total / 10.0
    verdict = parse_verdict(reply, opts.is_think_model)
    return None if verdict is None else float(verdict)


async def _rule_check(opts: TinyVOptions, solution_str: str, ground_truth, result: dict) -> rule_check.RuleResult:
    """The rule check, recorded in ``result`` (``rule_correct`` NaN when the check itself failed)."""
    rule = await rule_check.check_async(solution_str, str(ground_truth), timeout_s=opts.rule_timeout_s)
    result.update(rule_correct=math.nan if rule.failed else float(rule.correct), rule_failed=float(rule.failed))
    return rule


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, **options) -> dict:
    if options.get("setup") == "hybrid":  # two models, two sides of the rule check: its own module
        from verl.utils.reward_score import hybrid

        return await hybrid.compute_score(data_source, solution_str, ground_truth, extra_info, **options)
    opts = parse_options(TinyVOptions, options)
    extra_info = extra_info or {}
    _question(extra_info)  # a data error is reported before any work
    nan = math.nan
    result = {"score": 0.0, "acc": 0.0, "parse_ok": nan, "verifier_called": 0.0, "verifier_ok": nan,
              "cache_hit": nan, "latency_s": nan, "rule_correct": nan, "verifier_failed": 0.0, "rule_failed": nan}

    rule = None
    if opts.setup != "tinyv_only" or opts.template == "tinyv":  # formula or prompt needs the rule check
        rule = await _rule_check(opts, solution_str, ground_truth, result)
        if rule.failed and opts.on_rule_failure == "error":
            return {**result, **rule_failure_result()}
    if opts.setup == "addon" and rule is not None and rule.correct:
        result.update(score=1.0, acc=1.0, **setup_terms(opts.setup, True, 0.0))
        return result

    messages = build_messages(opts, solution_str, ground_truth, extra_info, rule.extracted if rule else None)
    completion = await get_client(opts.client_config()).chat(
        messages, max_tokens=max_tokens_for(opts), temperature=opts.temperature
    )
    result.update(verifier_called=1.0, verifier_ok=float(completion.ok), cache_hit=float(completion.cache_hit),
                  latency_s=completion.latency_s)
    if not completion.ok:
        result["verifier_failed"] = 1.0
        if opts.on_failure == "zero":
            result.update(score=0.0, acc=0.0, **setup_terms(opts.setup, False, 0.0))
            return result
        if rule is None:
            rule = await _rule_check(opts, solution_str, ground_truth, result)
        if rule.failed and opts.on_rule_failure != "wrong":  # neither judge could tell
            return {**result, **rule_failure_result()}
        result.update(score=float(rule.correct), acc=float(rule.correct),
                      **setup_terms(opts.setup, rule.correct, float(rule.correct)))
        return result

    v = parse_verifier_score(opts, completion.text)
    result["parse_ok"] = float(v is not None)
    v = 0.0 if v is None else v
    verifier_alone = rule is not None and rule.failed and opts.on_rule_failure == "verifier"
    setup = "tinyv_only" if verifier_alone else opts.setup
    score = combine(setup, opts.weight, v, rule.correct if rule else None)
    verdict = v >= 0.5 or (setup == "addon" and bool(rule and rule.correct))
    result.update(score=float(min(1.0, max(0.0, score))), acc=float(verdict),
                  **setup_terms(setup, rule.correct if rule else None, v))
    return result
