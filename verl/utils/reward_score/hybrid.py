"""``tinyv`` with ``setup=hybrid``: two served models on the two sides of the rule check, in one reward.

TinyV's ``addon`` asks a binary verifier only when the rule check says wrong, to rescue false
negatives. A rubric model catches the opposite error: a correct final answer reached through flawed
steps. ``hybrid`` does both:

- rule-wrong sample (P = 0) -> the **verifier** (template ``tinyv`` by default), v in [0, 1]:
  r = w_v · v                                          (rescue, as ``addon``)
- rule-correct sample (P = 1) of a prompt picked for the flaw check -> the **rubric** model
  (template ``rubric`` by default), s in [0, 1], flaw f = 1 - s (``mode=weighted``) or
  f = 1[s < flaw_threshold] (``mode=penalty``):  r = 1 - w_r · f
- rule-correct sample of any other prompt: r = 1 (no model call).

Which prompts get the flaw check: a share ``rubric.share`` of them, picked by a hash of the question
and the reference answer, so every sample of one GRPO group is judged under the same reward and a
prompt keeps its choice across epochs. The models' load per step is therefore
(1 - rule accuracy) for the verifier plus the flaw-checked share of the batch for the rubric model;
the step metrics ``reward/sent_to_verifier/mean`` and ``reward/sent_to_rubric/mean`` report both.

When a model gives no usable answer, its side falls back to the rule's verdict: an unparseable
verifier reply is no rescue (v = 0, as in ``addon``), an unparseable rubric reply is no penalty
(``parse_ok = 0`` either way). A model the client could not reach (after its bounded retries) sets
``verifier_failed = 1`` and the side's ``on_failure`` decides: ``rule`` (default) = the rule's result
(0 for a rule-wrong sample, 1 for a rule-correct one), ``zero`` = 0.

Score components (finite on every row, for verl's ``gdpo``): ``rule_term`` = P, ``rescue_term`` = v on
rule-wrong rows (else 0), ``soundness_term`` = 1 - f on rule-correct rows (else 0), with
r = (1 - w_r)·rule_term + w_r·soundness_term + w_v·rescue_term.

Options: ``reward_kwargs.tinyv.setup=hybrid`` plus ``reward_kwargs.tinyv.verifier.<option>`` and
``reward_kwargs.tinyv.rubric.<option>``. Each side takes tinyv's per-call options (``url``, ``model``
and the other client settings, ``template``, ``max_tokens``, ``temperature``, ``is_think_model``,
``weight``, ``on_failure``); client settings given at the top level (``reward_kwargs.tinyv.url=...``)
are the default of both sides. The rubric side adds ``mode``, ``flaw_threshold`` and ``share``.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, model_validator

from verlkit.clients import rule_check
from verlkit.clients.settings import ClientSettings
from verl.utils.reward_score import tinyv
from verl.utils.reward_score.math_rule import rule_failure_result
from verl.utils.reward_score.options import describe_errors, parse_options, parse_served_options

SIDES = ("verifier", "rubric")
# Decided by the hybrid itself, not per side.
_NOT_PER_SIDE = ("setup", "rule_timeout_s", "on_rule_failure", "verifier", "rubric")
# tinyv's options about one model call (template, decoding, weight, on_failure, ...): per side only.
_PER_SIDE = frozenset(tinyv.TinyVOptions.model_fields) - frozenset(ClientSettings.model_fields) - set(_NOT_PER_SIDE)


class _Side(tinyv.TinyVOptions):
    """One model of the hybrid: tinyv's options for one served model and how its answer is weighted."""

    env_defaults: ClassVar[dict[str, str]] = {}  # sides inherit the top level's url/model instead

    @model_validator(mode="before")
    @classmethod
    def _only_per_side_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            misplaced = sorted(k for k in _NOT_PER_SIDE if k in data)
            if misplaced:
                raise ValueError(f"{', '.join(misplaced)}: not an option of one side (set it at the top level)")
        return data


class VerifierSide(_Side):
    """``reward_kwargs.tinyv.verifier.*``: the binary verifier asked about rule-wrong samples;
    ``weight`` = w_v, the reward of a rescued sample."""

    reward_name: ClassVar[str] = "verifier"
    template: tinyv.Template = "tinyv"
    weight: float = Field(1.0, ge=0.0, le=1.0)


class RubricSide(_Side):
    """``reward_kwargs.tinyv.rubric.*``: the rubric model asked about rule-correct samples;
    ``weight`` = w_r, the largest penalty of a flawed one."""

    reward_name: ClassVar[str] = "rubric"
    template: tinyv.Template = "rubric"
    weight: float = Field(0.5, ge=0.0, le=1.0)
    mode: Literal["weighted", "penalty"] = "weighted"
    flaw_threshold: float = Field(0.7, ge=0.0, le=1.0)  # mode=penalty: flawed when s < this
    share: float = Field(0.5, ge=0.0, le=1.0)  # share of prompts whose rule-correct samples are checked


class HybridOptions(tinyv.TinyVOptions):
    """``reward_kwargs.tinyv.*`` with ``setup=hybrid``: top-level client settings (defaults of both
    sides), ``rule_timeout_s``, and the two sides."""

    setup: Literal["hybrid"] = "hybrid"
    model: str | None = None  # the sides need one; either side may name its own
    verifier: VerifierSide
    rubric: RubricSide

    @model_validator(mode="before")
    @classmethod
    def _build_sides(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        per_side = sorted(k for k in data if k in _PER_SIDE)
        if per_side:
            raise ValueError(f"{', '.join(per_side)}: set per side (verifier.<option>, rubric.<option>) "
                             "with setup=hybrid")
        shared = {k: v for k, v in data.items() if k in ClientSettings.model_fields and v not in (None, "")}
        out = dict(data)
        for name, side in (("verifier", VerifierSide), ("rubric", RubricSide)):
            given = data.get(name) or {}
            if not isinstance(given, dict):
                raise ValueError(f"{name}: must be a mapping of options, got {given!r}")
            try:
                out[name] = side.model_validate({**shared, **given})
            except ValidationError as e:
                raise ValueError(describe_errors(side, e)) from None
        return out


# ---------------------------------------------------------------------------------------------
# The pure part
# ---------------------------------------------------------------------------------------------
def flaw_checked(question: str, ground_truth: str, share: float) -> bool:
    """Whether this prompt's rule-correct samples go to the rubric model: a hash of the prompt, so
    the choice is the same for every sample of a group and every epoch."""
    if share >= 1.0:
        return True
    digest = hashlib.blake2b(f"{question}\x00{ground_truth}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def flaw(s: float, mode: str, flaw_threshold: float) -> float:
    """How flawed a rule-correct sample is, from the rubric score s in [0, 1]."""
    return 1.0 - s if mode == "weighted" else float(s < flaw_threshold)


def hybrid_terms(rule_correct: bool, verifier_score: float = 0.0, flaw_value: float = 0.0) -> dict[str, float]:
    """The score's components (see the module docstring)."""
    return {
        "rule_term": float(rule_correct),
        "rescue_term": 0.0 if rule_correct else verifier_score,
        "soundness_term": 1.0 - flaw_value if rule_correct else 0.0,
    }


def hybrid_score(terms: dict[str, float], verifier_weight: float, rubric_weight: float) -> float:
    return ((1.0 - rubric_weight) * terms["rule_term"] + rubric_weight * terms["soundness_term"]
            + verifier_weight * terms["rescue_term"])


# ---------------------------------------------------------------------------------------------
# The reward
# ---------------------------------------------------------------------------------------------
async def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_router_address=None,
                        reward_model_tokenizer=None, **options) -> dict:
    # top-level url/model (explicit, verl's reward router, environment) are the sides' defaults
    opts = parse_served_options(HybridOptions, options, reward_router_address, reward_model_tokenizer)
    extra_info = extra_info or {}
    problems = tinyv.validate_row({"extra_info": extra_info})  # a data error is reported before any work
    if problems:
        raise ValueError("; ".join(problems))
    nan = math.nan
    result = {"score": 0.0, "acc": 0.0, "parse_ok": nan, "verifier_called": 0.0, "verifier_ok": nan,
              "cache_hit": nan, "latency_s": nan, "rule_correct": nan, "verifier_failed": 0.0,
              "verdict_invalid": nan, "verdict_prob_ok": nan, "rule_failed": nan,
              "sent_to_verifier": 0.0, "sent_to_rubric": 0.0, "verifier_score": nan, "rubric_score": nan}

    rule = await rule_check.check_async(solution_str, str(ground_truth), timeout_s=opts.rule_timeout_s)
    result.update(rule_correct=nan if rule.failed else float(rule.correct), rule_failed=float(rule.failed))
    if rule.failed and opts.on_rule_failure == "error":
        return {**result, **rule_failure_result()}
    if rule.correct:
        side, key = opts.rubric, "rubric"
        if not flaw_checked(extra_info["question"], str(ground_truth), opts.rubric.share):
            return _finish(result, opts, hybrid_terms(True), acc=1.0)
        messages = tinyv.build_messages(side, solution_str, ground_truth, extra_info, None)
    else:  # rule-wrong, or a failed rule check (asked like a rule-wrong sample: the verifier may rescue it)
        side, key = opts.verifier, "verifier"
        messages = tinyv.build_messages(side, solution_str, ground_truth, extra_info, rule.extracted)

    result[f"sent_to_{key}"] = 1.0
    answer = await tinyv.ask_verifier(side, messages)  # the side's template, verdict preset, constraint
    completion = answer.completion
    result.update(verifier_called=1.0, verifier_ok=float(completion.ok), cache_hit=float(completion.cache_hit),
                  latency_s=completion.latency_s)
    if completion.ok:
        result.update(verdict_invalid=float(answer.verdict.invalid), verdict_prob_ok=answer.prob_ok)
    if not completion.ok or answer.verdict.invalid:  # unreachable or declined to judge: the side's on_failure
        if not completion.ok:
            result["verifier_failed"] = 1.0
        else:
            result["parse_ok"] = 1.0
        if side.on_failure == "zero":
            return _finish(result, opts, dict.fromkeys(("rule_term", "rescue_term", "soundness_term"), 0.0), acc=0.0)
        return _finish(result, opts, hybrid_terms(rule.correct), acc=float(rule.correct))

    value = answer.v
    result["parse_ok"] = float(value is not None)
    result[f"{key}_score"] = nan if value is None else value
    if rule.correct:
        f = 0.0 if value is None else flaw(value, opts.rubric.mode, opts.rubric.flaw_threshold)
        return _finish(result, opts, hybrid_terms(True, flaw_value=f), acc=1.0)
    v = 0.0 if value is None else value
    return _finish(result, opts, hybrid_terms(False, verifier_score=v), acc=float(v >= 0.5))


def check_options(options: dict[str, Any], probe: bool = False) -> None:
    """``tinyv.check_options`` for ``setup=hybrid``: parse both sides (loading their templates) and,
    with ``probe``, check each side's server where its options need server features."""
    opts = parse_options(HybridOptions, options)
    if probe:
        for side in (opts.verifier, opts.rubric):
            tinyv.probe_verifier(side)


def _finish(result: dict, opts: HybridOptions, terms: dict[str, float], acc: float) -> dict:
    score = hybrid_score(terms, opts.verifier.weight, opts.rubric.weight)
    result.update(terms, score=float(min(1.0, max(0.0, score))), acc=acc)
    return result
