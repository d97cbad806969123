"""``*_tinyv``: policy reward from a served verifier model, alone or combined with the rule check.

Setups (``v`` = verifier score in [0, 1], ``P`` = rule-based correctness in {0, 1}, ``w`` = weight):

- ``tinyv_only``: r = v
- ``addon``:      r = 1 if P else w * v      (the verifier is called only when the rule says wrong)
- ``mixed``:      r = w * v + (1 - w) * P
- ``hybrid``:     two models on the two sides of the rule check (module ``hybrid``): rule-wrong samples
  go to the binary verifier (rescue), rule-correct ones to the rubric model (flaw check)

Templates (``template``, built in; or ``template_file``, a chat template file of ``verlkit.templates``
filled from {question}, {reference_answer}, {extracted_answer}, {response}, {criteria}):

- ``rubric`` (RRM): question + rubric ``extra_info["criteria"]`` + the FULL response; verdict preset
  ``total_score``: v = total score out of 10 (parsed like the ``grade`` reward, clamped) / 10.
- ``tinyv`` (binary): question + ground truth + the answer extracted by the rule checker; verdict
  preset ``binary``: v = 1 for a final whole-word "True", 0 for "False" (``parse_verdict``). For
  think-style verifiers only the text after ``</think>`` counts.

Verdicts, constraints and probabilities (``verdict``, ``constrained``, ``verdict_mode=prob``): see
``verl.utils.reward_score.verdicts`` and ``templated``. With ``verdict_mode=prob`` v is the verdict's
value expected under the verdict token's probabilities (binary: P(True)); where the token cannot be
located v is the parsed verdict and ``verdict_prob_ok = 0``. A reply choosing the preset's
``invalid`` class is scored by ``on_failure`` like an unreachable verifier and counted in
``verdict_invalid``.

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
Where requests go: an explicit ``url`` option, else verl's reward router when verl runs the verifier
(``reward.reward_model.enable=True``; model name = the reward model's path), else
``$VERLKIT_VERIFIER_URL`` (``parse_served_options``).
Importing this module does no I/O; the HTTP client and rule-check workers start on first use.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, get_args

from pydantic import Field, model_validator

from verlkit.clients import rule_check
from verlkit.clients.llm import Completion, get_client
from verlkit.clients.settings import ClientSettings
from verlkit.clients.structured import StructuredOutput, generated_tokens
from verlkit.templates import ChatTemplate
from verl.utils.reward_score.math_rule import rule_failure_result
from verl.utils.reward_score.options import RewardOptions, parse_options, parse_served_options
from verl.utils.reward_score.templated import (
    SAMPLE_VALUES,
    TemplateSettings,
    VerdictSettings,
    ask,
    probe_server,
    reasoning_chars_for,
    resolve_preset,
    resolve_template,
)
from verl.utils.reward_score.verdicts import NO_VERDICT, Verdict, VerdictPreset, parse_verdict  # noqa: F401

URL_ENV = "VERLKIT_VERIFIER_URL"
MODEL_ENV = "VERLKIT_VERIFIER_MODEL"
DEFAULT_URL = "http://127.0.0.1:8000/v1"
Template = Literal["rubric", "tinyv"]
Setup = Literal["tinyv_only", "addon", "mixed", "hybrid"]
TEMPLATES, SETUPS = get_args(Template), get_args(Setup)
_ANSWER_TAIL_CHARS = 1000  # sent as "the answer" when the rule checker extracted none
BUILTIN_VERDICT = {"tinyv": "binary", "rubric": "total_score"}
# What this reward can put in a template, and what a template must use (the answer being judged).
FILLABLE = frozenset({"question", "reference_answer", "extracted_answer", "response", "criteria"})
REQUIRED = [{"extracted_answer", "response"}]


class TinyVOptions(RewardOptions, ClientSettings, TemplateSettings, VerdictSettings):
    """``reward_kwargs.tinyv.*``. The client settings (``url``, ``model``, ``max_concurrency``,
    ``timeout_s``, ``max_retries``, ``api_key_env``, ...) come from :class:`ClientSettings`; ``url`` and
    ``model`` fall back to ``$VERLKIT_VERIFIER_URL`` / ``$VERLKIT_VERIFIER_MODEL``. Template, verdict
    and constraint options come from :class:`TemplateSettings` and :class:`VerdictSettings`; the
    template is loaded and checked when the options are parsed."""

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

    @model_validator(mode="after")
    def _template_fits(self) -> "TinyVOptions":
        if self.template_file and "template" in self.model_fields_set:
            raise ValueError("give template (a built-in name) or template_file, not both")
        preset = self.preset  # loads and checks the template
        if preset.kind == "reward_value":
            raise ValueError("verdict=reward_value is for reward judges; a verifier's score must lie in [0, 1]")
        if any(not 0.0 <= score <= 1.0 for _, score in preset.option_scores):
            raise ValueError(f"option_scores must lie in [0, 1] for a verifier, got {dict(preset.option_scores)}")
        _ = self.constraint
        return self

    @functools.cached_property
    def chat_template(self) -> ChatTemplate:
        return resolve_template(self.template, self.template_file, reward="tinyv", fillable=FILLABLE, required=REQUIRED)

    @functools.cached_property
    def preset(self) -> VerdictPreset:
        default = None if self.template_file else BUILTIN_VERDICT[self.template]
        return resolve_preset(self, self.chat_template, is_think_model=self.is_think_model, default=default)

    @functools.cached_property
    def constraint(self) -> StructuredOutput | None:
        if not self.constraints_on:
            return None
        return self.preset.constraint(reasoning_chars_for(self, self.preset.kind, self.is_think_model))


def max_tokens_for(opts: TinyVOptions) -> int:
    """The reply budget without a constraint (with one, the constraint's own budget applies)."""
    if opts.max_tokens:
        return opts.max_tokens
    if opts.preset.kind == "total_score":
        return 2048
    return 512 if opts.is_think_model else 8


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
    """Does a run with these raw ``reward_kwargs.tinyv`` options put the row's rubric in the prompt?
    With ``setup=hybrid`` that is the rubric side's template, when any prompt is flaw-checked."""
    if str(options.get("setup") or "") == "hybrid":
        from verl.utils.reward_score.hybrid import RubricSide  # hybrid builds on this module

        side = options.get("rubric") if isinstance(options.get("rubric"), dict) else {}
        fields = RubricSide.model_fields
        share = side.get("share", fields["share"].default)
        template = side.get("template") or fields["template"].default
        return str(template) == "rubric" and float(share) > 0
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
                "problem's rubric; without it every row it grades would score 0 with reward_error=1)"]
    return []


def build_messages(opts: TinyVOptions, solution_str: str, ground_truth: str, extra_info: dict,
                   extracted: str | None) -> list[dict]:
    """The verifier's chat messages: the template filled from the row (values stripped)."""
    question = _question(extra_info)
    used = opts.chat_template.placeholders()
    values = {"question": question.strip(), "response": solution_str.strip()}
    if "criteria" in used:
        criteria = (extra_info or {}).get("criteria")
        if not isinstance(criteria, str) or not criteria.strip():
            raise ValueError(f"extra_info.criteria: missing or empty (the template {opts.chat_template.source} "
                             "uses {criteria}, the problem's rubric)")
        values["criteria"] = criteria.strip()
    if "reference_answer" in used:
        values["reference_answer"] = str(ground_truth).strip()
    if "extracted_answer" in used:
        answer = extracted if extracted else solution_str.strip()[-_ANSWER_TAIL_CHARS:]
        values["extracted_answer"] = (answer or "(no answer)").strip()
    return opts.chat_template.render(**values)


def parse_verifier_score(opts: TinyVOptions, reply: str | None) -> float | None:
    """v in [0, 1] from the verifier's reply, or None when it holds no score/verdict (or chose the
    invalid class)."""
    return opts.preset.parse(reply).value


@dataclass(frozen=True)
class VerifierAnswer:
    """One verifier call: the completion, its verdict, v in [0, 1] (None: no verdict or invalid)
    and ``prob_ok`` (NaN unless ``verdict_mode=prob``; 1 when v came from probabilities)."""

    completion: Completion
    verdict: Verdict
    v: float | None
    prob_ok: float = math.nan


async def ask_verifier(opts: TinyVOptions, messages: list[dict]) -> VerifierAnswer:
    """Ask the served verifier once (through the shared client) and read its verdict."""
    prob = opts.verdict_mode == "prob"
    completion = await ask(get_client(opts.client_config()), messages, constraint=opts.constraint,
                           top_logprobs=opts.top_logprobs if prob else None, reward="tinyv",
                           max_tokens=max_tokens_for(opts), temperature=opts.temperature)
    if not completion.ok:
        return VerifierAnswer(completion, NO_VERDICT, None)
    verdict = opts.preset.parse(completion.text)
    v = None if verdict.value is None else min(1.0, max(0.0, verdict.value))
    if not prob or v is None:
        return VerifierAnswer(completion, verdict, v)
    p = opts.preset.probability(completion.text, verdict, generated_tokens(completion.raw))
    return VerifierAnswer(completion, verdict, v if p is None else p, float(p is not None))


def check_options(options: Mapping[str, Any], probe: bool = False) -> None:
    """Parse the options (loading and checking the template) and, with ``probe``, check that the
    server enforces the constraint and returns log-probabilities where the options need them.
    Raises ``RewardOptionsError``; ``registry.check_options`` calls it before training."""
    if options.get("setup") == "hybrid":
        from verl.utils.reward_score import hybrid

        return hybrid.check_options(options, probe)
    opts = parse_options(TinyVOptions, options)
    if probe:
        probe_verifier(opts)


def probe_verifier(opts: TinyVOptions) -> None:
    """Check the served verifier with real requests where the options need server features (a
    constraint, log-probabilities); nothing to do otherwise (see ``templated.probe_server``)."""
    if opts.constraint is not None or opts.verdict_mode == "prob":
        probe_server(get_client(opts.client_config()), opts.chat_template.render(**SAMPLE_VALUES),
                     constraint=opts.constraint, top_logprobs=opts.top_logprobs if opts.verdict_mode == "prob" else None,
                     reward="tinyv")


async def _rule_check(opts: TinyVOptions, solution_str: str, ground_truth, result: dict) -> rule_check.RuleResult:
    """The rule check, recorded in ``result`` (``rule_correct`` NaN when the check itself failed)."""
    rule = await rule_check.check_async(solution_str, str(ground_truth), timeout_s=opts.rule_timeout_s)
    result.update(rule_correct=math.nan if rule.failed else float(rule.correct), rule_failed=float(rule.failed))
    return rule


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_router_address=None,
                        reward_model_tokenizer=None, **options) -> dict:
    if options.get("setup") == "hybrid":  # two models, two sides of the rule check: its own module
        from verl.utils.reward_score import hybrid

        return await hybrid.compute_score(data_source, solution_str, ground_truth, extra_info,
                                          reward_router_address, reward_model_tokenizer, **options)
    opts = parse_served_options(TinyVOptions, options, reward_router_address, reward_model_tokenizer)
    extra_info = extra_info or {}
    _question(extra_info)  # a data error is reported before any work
    nan = math.nan
    result = {"score": 0.0, "acc": 0.0, "parse_ok": nan, "verifier_called": 0.0, "verifier_ok": nan,
              "cache_hit": nan, "latency_s": nan, "rule_correct": nan, "verifier_failed": 0.0,
              "verdict_invalid": nan, "verdict_prob_ok": nan, "rule_failed": nan}

    rule = None
    # the formula or the prompt needs the rule check
    if opts.setup != "tinyv_only" or "extracted_answer" in opts.chat_template.placeholders():
        rule = await _rule_check(opts, solution_str, ground_truth, result)
        if rule.failed and opts.on_rule_failure == "error":
            return {**result, **rule_failure_result()}
    if opts.setup == "addon" and rule is not None and rule.correct:
        result.update(score=1.0, acc=1.0, **setup_terms(opts.setup, True, 0.0))
        return result

    messages = build_messages(opts, solution_str, ground_truth, extra_info, rule.extracted if rule else None)
    answer = await ask_verifier(opts, messages)
    completion = answer.completion
    result.update(verifier_called=1.0, verifier_ok=float(completion.ok), cache_hit=float(completion.cache_hit),
                  latency_s=completion.latency_s)
    if completion.ok:
        result.update(verdict_invalid=float(answer.verdict.invalid), verdict_prob_ok=answer.prob_ok)
    if not completion.ok or answer.verdict.invalid:
        # unreachable (after the client's retries) or the verifier declined to judge: on_failure
        if not completion.ok:
            result["verifier_failed"] = 1.0
        else:
            result["parse_ok"] = 1.0
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

    v = answer.v
    result["parse_ok"] = float(v is not None)
    v = 0.0 if v is None else v
    verifier_alone = rule is not None and rule.failed and opts.on_rule_failure == "verifier"
    setup = "tinyv_only" if verifier_alone else opts.setup
    score = combine(setup, opts.weight, v, rule.correct if rule else None)
    verdict = v >= 0.5 or (setup == "addon" and bool(rule and rule.correct))
    result.update(score=float(min(1.0, max(0.0, score))), acc=float(verdict),
                  **setup_terms(setup, rule.correct if rule else None, v))
    return result
