"""Prompt4Trust-style calibration reward: the policy writes a hint, a frozen downstream LLM answers.

Design (reference-methods §2.1-2.4): the policy reads a multiple-choice question and writes a
"calibration guidance prompt" (a hint). A frozen downstream model receives question + options + hint
and must end with the sentence ``the answer is N with confidence C`` (N an option number, C in
0-100); as in the original, the answer and the confidence are read separately (``the answer is 2. My
confidence is 80`` parses too), and a reply without a confidence does not parse. The policy is rewarded by a scoring rule of the downstream (answer, confidence) against the
gold option.

Routing: ``data_source == "medmcqa_cgp"`` or any source ending in ``_cgp`` (spec name ``cgp``).

Everything except :func:`compute_score` is a small pure function (prompt building, parsing,
scoring); the one network call goes through the shared client ``verlkit.clients.llm``.

Reward variants (option ``variant``), with p = confidence / 100 clamped to [0, 1]:

* ``log`` (seed v1): correct -> ln(clip(p, 1e-10, 1)); wrong -> ln(clip(1 - p, 1e-10, 1));
  unparseable -> ln(1e-12) = -27.631 (``UNPARSEABLE_LOG_SCORE``).
* ``log_penalized`` (seed v2, default as in Prompt4Trust): as ``log`` but a wrong answer gets an
  extra -1.
* ``brier`` (bounded, RLCR-style): 1[c] - (p - 1[c])^2 in [-1, 1]; unparseable -> -1
  (``UNPARSEABLE_BRIER_SCORE``, equal to the worst parseable reply: wrong at confidence 100).

Downstream failure (the client gave up after its bounded retries, ``Completion.ok`` is False) is
never scored as "unparseable" silently. The row is flagged ``downstream_ok=0`` and
``downstream_failed=1`` (counted per step, not only averaged) and option ``on_failure`` decides the score:

* ``"neutral"`` (default): the expected score of a reply that carries no information but is
  calibrated, i.e. a uniformly random option stated with confidence 1/K:
  (1/K)·s(correct, 1/K) + (1 - 1/K)·s(wrong, 1/K). It is neither the best nor the worst score, so
  an outage neither rewards nor punishes the hint much; ``acc`` is 0 and ``parse_ok``/``confidence``
  are NaN for the row (so parse-rate and confidence means only count real replies).
* ``"unparseable"``: the seed's behaviour (score as unparseable). Not recommended.
* ``"raise"``: raise :class:`DownstreamError`; the registry turns it into ``score=0,
  reward_error=1``.
* a number: that fixed score.

Score components (finite on every row the function returns, for per-component advantages such as
verl's ``gdpo``): ``accuracy_term`` (1 if the downstream answer is right, else 0) and
``calibration_term`` (the scoring rule's value of the stated confidence without the accuracy part:
ln p / ln(1 - p) for the log variants, -(p - 1[c])^2 for ``brier``; the sentinel's share for an
unparseable reply), so that::

    score = ACCURACY_COEFFICIENT[variant]·accuracy_term + calibration_term + SCORE_OFFSET[variant]

with coefficient/offset 0/0 (``log``), 1/-1 (``log_penalized``), 1/0 (``brier``). On a downstream
failure scored ``neutral`` or by a fixed number, ``accuracy_term`` is chance level 1/K (an outage says
nothing about accuracy) and ``calibration_term`` the rest of the failure score.

Template and constraint (``verl.utils.reward_score.templated``): the downstream prompt is the built-in
template ``cgp_downstream`` (``template_file=`` replaces it; placeholders {question}, {options},
{num_options}, {hint}, of which {question}, {options} and {hint} are required). With
``constrained=true`` the downstream reply is constrained to at most ``reasoning_chars`` characters
of reasoning (default 300) and then the line ``the answer is N with confidence C`` (N an option
number, C an integer 0-100) that :func:`parse_final_answer` reads (:func:`answer_constraint`).
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, Sequence, get_args

from pydantic import Field, model_validator

from verlkit.clients.llm import get_client
from verlkit.clients.settings import ClientSettings
from verlkit.clients.structured import StructuredOutput
from verlkit.templates import ChatTemplate, builtin_template
from verl.utils.reward_score.options import RewardOptions, parse_options, parse_served_options
from verl.utils.reward_score.templated import SAMPLE_VALUES, TemplateSettings, ask, probe_server, resolve_template

Variant = Literal["log", "log_penalized", "brier"]
OnFailure = Literal["neutral", "unparseable", "raise"]
VARIANTS = get_args(Variant)

LOG_CLIP = 1e-10
UNPARSEABLE_LOG_SCORE = math.log(1e-12)  # -27.631, the seed's format sentinel
UNPARSEABLE_BRIER_SCORE = -1.0
WRONG_PENALTY = 1.0  # the v2 ("log_penalized") extra penalty on a wrong answer
ACCURACY_COEFFICIENT = {"log": 0.0, "log_penalized": WRONG_PENALTY, "brier": 1.0}
SCORE_OFFSET = {"log": 0.0, "log_penalized": -WRONG_PENALTY, "brier": 0.0}


DEFAULT_REASONING_CHARS = 300  # free reasoning a constrained downstream reply may hold before its answer
# What this reward can put in a downstream template, and what such a template must use.
FILLABLE = frozenset({"question", "options", "num_options", "hint"})
REQUIRED = [{"question"}, {"options"}, {"hint"}]


class CGPOptions(RewardOptions, ClientSettings, TemplateSettings):
    """``reward_kwargs.cgp.*``: the downstream model (``url`` and ``model`` required, the other
    :class:`ClientSettings`), its prompt template and constraint (:class:`TemplateSettings`) and how
    its reply is sampled and scored."""

    reward_name: ClassVar[str] = "cgp"

    template: Literal["cgp_downstream"] = "cgp_downstream"

    variant: Variant = "log_penalized"
    temperature: float = Field(0.1, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    max_tokens: int = Field(256, ge=1)
    seed: int | None = None
    on_failure: OnFailure | float = "neutral"  # see the module docstring

    @model_validator(mode="after")
    def _template_fits(self) -> "CGPOptions":
        if self.template_file and "template" in self.model_fields_set:
            raise ValueError("give template (a built-in name) or template_file, not both")
        _ = self.chat_template
        return self

    @functools.cached_property
    def chat_template(self) -> ChatTemplate:
        return resolve_template(self.template, self.template_file, reward="cgp", fillable=FILLABLE, required=REQUIRED)

    def constraint(self, num_options: int) -> StructuredOutput | None:
        """The downstream reply's constraint for a question with ``num_options`` options, or None."""
        if not self.constraints_on:
            return None
        reasoning = DEFAULT_REASONING_CHARS if self.reasoning_chars is None else self.reasoning_chars
        return answer_constraint(num_options, reasoning)


class DownstreamError(RuntimeError):
    """The downstream model could not be reached (raised only with ``on_failure="raise"``)."""


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------
def render_options(options: Sequence[str]) -> str:
    """``(1) first`` ... one option per line, numbered from 1."""
    return "\n".join(f"({i}) {str(text).strip()}" for i, text in enumerate(options, start=1))


def build_policy_prompt(question: str, options: Sequence[str]) -> str:
    """The user message the policy sees: write a hint for another model, never answer yourself."""
    return (
        "You are writing guidance for another AI model that will answer the multiple-choice question "
        "below and then state how confident it is. Write a short hint that points it to the relevant "
        "facts and the reasoning steps it should check, so that its answer is accurate and its stated "
        "confidence is honest. Do not say which option is correct and do not tell it what confidence "
        "to report.\n\n"
        f"Question: {str(question).strip()}\n"
        f"Options:\n{render_options(options)}\n\n"
        "Hint:"
    )


def build_downstream_prompt(question: str, options: Sequence[str], hint: str | None) -> str:
    """The user message the downstream model sees (our built-in template). ``hint=None`` gives the
    no-hint baseline (``cgp_downstream_baseline``)."""
    name = "cgp_downstream" if hint is not None else "cgp_downstream_baseline"
    return downstream_messages(builtin_template(name), question, options, hint)[0]["content"]


def downstream_messages(template: ChatTemplate, question: str, options: Sequence[str],
                        hint: str | None) -> list[dict]:
    """The downstream model's chat messages: ``template`` filled with the question, its numbered
    options, their number and the hint (each stripped; no hint = an empty one)."""
    return template.render(question=str(question).strip(), options=render_options(options),
                           num_options=len(options), hint=(hint or "").strip())


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------
_NUMBER = r"[+-]?\d+(?:[.,]\d+)?"
# The answer and the confidence are read independently, as the original did (reference-methods §2.3:
# one search for "answer is N", one for "confidence C"), so "the answer is 2. My confidence is 80" and
# "Confidence: 80. The answer is (2)" parse like the requested "the answer is 2 with confidence 80".
# Case-insensitive; "option", "(...)", ":", "is"/"of"/"level" and "%" are allowed around the numbers.
ANSWER_RE = re.compile(r"answer\s+is\s*:?\s*(?:option\s*)?\(?\s*(" + _NUMBER + r")", re.IGNORECASE)
CONFIDENCE_RE = re.compile(
    r"confidence\s*(?:level\s*|score\s*)?(?:of|is|:|=)?\s*\(?\s*(" + _NUMBER + r")", re.IGNORECASE)


@functools.lru_cache(maxsize=32)
def answer_constraint(num_options: int, reasoning_chars: int = DEFAULT_REASONING_CHARS) -> StructuredOutput:
    """A structured-output constraint for a downstream reply that :func:`parse_final_answer` reads:
    up to ``reasoning_chars`` characters of reasoning, then (on its own line) ``the answer is N with
    confidence C`` with N in 1..num_options and C an integer 0..100."""
    if num_options < 1 or reasoning_chars < 0:
        raise ValueError(f"need num_options >= 1 and reasoning_chars >= 0, got {num_options}, {reasoning_chars}")
    answers = "|".join(str(n) for n in range(num_options, 0, -1))
    sentence = f"the answer is (?:{answers}) with confidence (?:100|[1-9]?[0-9])"
    longest = len(f"the answer is {num_options} with confidence 100")
    if reasoning_chars == 0:
        return StructuredOutput(regex=sentence, max_tokens=longest + longest // 10 + 16)
    chars = reasoning_chars + 1 + longest
    return StructuredOutput(regex=f"[\\s\\S]{{0,{reasoning_chars}}}\\n" + sentence, max_tokens=chars + chars // 10 + 16)


@dataclass(frozen=True)
class ParsedReply:
    """A downstream reply's final answer (1-based option) and confidence in [0, 1]."""

    answer: int
    confidence: float


def parse_final_answer(text: str, num_options: int = 4) -> ParsedReply | None:
    """The LAST stated answer (``answer is N``) and the LAST stated confidence (``confidence C``,
    ``confidence is C``, ``confidence: C%``) of ``text``, or None when either is missing.

    The original took the FIRST of each, so a "confidence 9" in the reasoning could win; the last is the
    reply's conclusion. The answer must be an integer option 1..K (``2.0`` counts as 2; ``2.5``, ``0``,
    ``5`` with K=4 do not parse). A negative confidence does not parse; C is clamped to [0, 100] and
    divided by 100. A bare fraction such as ``0.8`` is read on the 0-100 scale the prompt asks for (0.8 %).
    """
    if not isinstance(text, str) or not text:
        return None
    answers, confidences = ANSWER_RE.findall(text), CONFIDENCE_RE.findall(text)
    if not answers or not confidences:
        return None
    answer_raw, conf_raw = answers[-1], confidences[-1]
    try:
        answer_value = float(answer_raw.replace(",", "."))
        conf_value = float(conf_raw.replace(",", "."))
    except ValueError:
        return None
    if not math.isfinite(answer_value) or answer_value != int(answer_value):
        return None
    answer = int(answer_value)
    if not 1 <= answer <= num_options:
        return None
    if not math.isfinite(conf_value) or conf_value < 0:
        return None
    return ParsedReply(answer=answer, confidence=min(conf_value, 100.0) / 100.0)


def parse_gold(ground_truth: Any, num_options: int = 4) -> int:
    """Ground truth -> 1-based option index. Raises ValueError with the bad value."""
    try:
        value = float(str(ground_truth).strip())
    except ValueError:
        raise ValueError(f"ground_truth must be a 1-based option number, got {ground_truth!r}") from None
    if value != int(value) or not 1 <= int(value) <= num_options:
        raise ValueError(f"ground_truth must be an option number in 1..{num_options}, got {ground_truth!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------
def score_reply(parsed: ParsedReply | None, gold: int, variant: str = "log_penalized") -> float:
    """Reward for one parsed downstream reply (None = unparseable)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if parsed is None:
        return UNPARSEABLE_BRIER_SCORE if variant == "brier" else UNPARSEABLE_LOG_SCORE
    return score_outcome(parsed.answer == gold, parsed.confidence, variant)


def score_outcome(correct: bool, p: float, variant: str) -> float:
    """Scoring rule of confidence ``p`` in [0, 1] for a correct/wrong answer."""
    p = min(max(float(p), 0.0), 1.0)
    if variant == "brier":
        c = 1.0 if correct else 0.0
        return c - (p - c) ** 2
    if correct:
        return math.log(min(max(p, LOG_CLIP), 1.0))
    score = math.log(min(max(1.0 - p, LOG_CLIP), 1.0))
    return score - WRONG_PENALTY if variant == "log_penalized" else score


def neutral_score(variant: str, num_options: int = 4) -> float:
    """Expected score of an uninformed but calibrated reply: random option, confidence 1/K."""
    q = 1.0 / num_options
    return q * score_outcome(True, q, variant) + (1.0 - q) * score_outcome(False, q, variant)


def failure_score(on_failure: Any, variant: str, num_options: int = 4) -> float:
    """Score for a row whose downstream call failed (see module docstring)."""
    if on_failure == "neutral":
        return neutral_score(variant, num_options)
    if on_failure == "unparseable":
        return score_reply(None, 1, variant)
    return float(on_failure)


def score_terms(score: float, accuracy_term: float, variant: str) -> dict[str, float]:
    """``score`` split into its components (see the module docstring)."""
    calibration_term = score - ACCURACY_COEFFICIENT[variant] * accuracy_term - SCORE_OFFSET[variant]
    return {"accuracy_term": accuracy_term, "calibration_term": calibration_term}


def result_for(parsed: ParsedReply | None, gold: int, variant: str) -> dict[str, float]:
    """The pure part of a reward result (no client fields)."""
    score = score_reply(parsed, gold, variant)
    acc = float(parsed is not None and parsed.answer == gold)
    return {
        "score": score,
        "acc": acc,
        "parse_ok": float(parsed is not None),
        "confidence": parsed.confidence if parsed is not None else math.nan,
        **score_terms(score, acc, variant),
    }


# ---------------------------------------------------------------------------------------------
# Row checks
# ---------------------------------------------------------------------------------------------
def question_and_options(extra_info: dict[str, Any] | None) -> tuple[str, list[str]]:
    """``extra_info["question"]`` and ``extra_info["options"]`` (plain list of strings)."""
    extra_info = extra_info or {}
    question = extra_info.get("question")
    options = extra_info.get("options")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("extra_info.question: missing or empty")
    if options is None or isinstance(options, str) or len(options) < 2:
        raise ValueError(f"extra_info.options: need a list of at least 2 option strings, got {options!r}")
    return question, [str(o) for o in list(options)]


def validate_row(row: dict) -> list[str]:
    """The row check of the ``cgp`` family (``data_prep.validate`` calls it through the registry)."""
    problems = []
    try:
        _, options = question_and_options(row.get("extra_info"))
    except ValueError as e:
        return [str(e)]
    try:
        parse_gold((row.get("reward_model") or {}).get("ground_truth"), len(options))
    except ValueError as e:
        problems.append(f"reward_model.ground_truth: {e}")
    return problems


# ---------------------------------------------------------------------------------------------
# The edge: one downstream call per row through the shared client
# ---------------------------------------------------------------------------------------------
async def ask_downstream(client, messages: list[dict], opts: CGPOptions, num_options: int = 4):
    """One chat request; returns the client's ``Completion`` (never raises for server failures; a
    server that refuses the constraint raises ``ServerFeatureError``, a configuration error)."""
    return await ask(client, messages, constraint=opts.constraint(num_options), reward="cgp",
                     max_tokens=opts.max_tokens, temperature=opts.temperature, top_p=opts.top_p, seed=opts.seed)


def check_options(options: Mapping[str, Any], probe: bool = False) -> None:
    """Parse the options (loading and checking the template) and, with ``probe`` and constraints on,
    check with real requests that the downstream server enforces the constraint. Raises
    ``RewardOptionsError``; ``registry.check_options`` calls it before training."""
    opts = parse_options(CGPOptions, options)
    if probe and opts.constraints_on:
        probe_downstream(opts)


def probe_downstream(opts: CGPOptions) -> None:
    """One probe of the downstream server with the constraint (see ``templated.probe_server``)."""
    probe_server(get_client(opts.client_config()), opts.chat_template.render(**SAMPLE_VALUES),
                 constraint=opts.constraint(4), top_logprobs=None, reward="cgp")


async def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_router_address=None,
                        reward_model_tokenizer=None, **options) -> dict[str, float]:
    """Reward of one policy hint (``solution_str``) by the downstream model's calibrated answer.
    The downstream model is the ``url`` option's, else verl's reward router's (``reward.reward_model``)."""
    opts = parse_served_options(CGPOptions, options, reward_router_address, reward_model_tokenizer)
    question, choices = question_and_options(extra_info)
    gold = parse_gold(ground_truth, len(choices))
    messages = downstream_messages(opts.chat_template, question, choices, solution_str or "")
    started = time.monotonic()
    completion = await ask_downstream(get_client(opts.client_config()), messages, opts, len(choices))
    latency = getattr(completion, "latency_s", None)
    client_fields = {
        "cache_hit": float(bool(getattr(completion, "cache_hit", False))),
        "latency_s": float(latency) if latency is not None else time.monotonic() - started,
    }
    if not completion.ok:
        if opts.on_failure == "raise":
            raise DownstreamError(f"downstream model {opts.model!r} at {opts.url}: {completion.error}")
        score = failure_score(opts.on_failure, opts.variant, len(choices))
        chance = 0.0 if opts.on_failure == "unparseable" else 1.0 / len(choices)
        return {
            "score": score,
            "acc": 0.0,
            **score_terms(score, chance, opts.variant),
            "parse_ok": math.nan,
            "confidence": math.nan,
            "downstream_ok": 0.0,
            "downstream_failed": 1.0,
            **client_fields,
        }
    parsed = parse_final_answer(completion.text, len(choices))
    return {**result_for(parsed, gold, opts.variant), "downstream_ok": 1.0, "downstream_failed": 0.0, **client_fields}
