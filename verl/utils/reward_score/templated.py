"""What every model-scored reward shares: its prompt template, its verdict preset, its structured-output
constraint, how it asks the server, and the start-up probe of that server.

Options (mixed into a reward's options model, like ``ClientSettings``):

- :class:`TemplateSettings`: ``template_file`` (a chat template file, ``verlkit.templates``; it
  replaces the reward's built-in ``template``), ``constrained`` (``auto`` = off, ``true``, ``false``:
  send a vLLM structured-output constraint) and ``reasoning_chars`` (free reasoning the constraint
  allows before the verdict; default per preset).
- :class:`VerdictSettings`: ``verdict`` (the parser preset, ``verl.utils.reward_score.verdicts``),
  ``score_max``, ``option_scores``, ``invalid``, ``verdict_mode`` (``label`` or ``prob``) and
  ``top_logprobs``.

Asking (:func:`ask`): with no constraint and no log-probabilities the request is exactly the plain
``client.chat`` call. With them, a request the server answers with HTTP 4xx is classified at once:
the same request is sent once more without the extra fields, and if that one succeeds the server
refused the constraint (or the log-probabilities), which raises :class:`ServerFeatureError` (a
``RewardOptionsError``: the run stops at its first step with the server's message, instead of
training on silently unconstrained or failed replies). A request that fails either way is an
ordinary failure (the reward's failure policy).

The probe (:func:`probe_server`, run by ``registry.check_options(..., probe=True)`` before training):
one request with a one-word choice constraint (``verlkit-probe-ok``), which catches servers that
refuse the ``structured_outputs`` field and servers that silently ignore it (vLLM before 0.10 knew
other field names and ignores unknown ones), then one request with the reward's own constraint on
its template rendered with sample values, which catches regexes the server's grammar engine rejects
and checks the reply matches; with ``verdict_mode=prob`` it also checks that log-probabilities come
back.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from verlkit.clients.llm import Completion
from verlkit.clients.structured import StructuredOutput, finish_reason, generated_tokens, logprob_fields
from verlkit.templates import ChatTemplate, TemplateError, builtin_template, load_template
from verl.utils.reward_score.options import RewardOptionsError
from verl.utils.reward_score.verdicts import PRESETS, PresetName, VerdictPreset

logger = logging.getLogger("verlkit.rewards")

# Free reasoning a constraint allows before the verdict, by preset, when ``reasoning_chars`` is unset.
DEFAULT_REASONING_CHARS = {"binary": 0, "option_letter": 0, "reward_value": 0, "total_score": 600}
THINK_REASONING_CHARS = 1500
PROBE_CHOICE = "verlkit-probe-ok"
# Sample values for rendering a template in the probe request (a short, well-formed case).
SAMPLE_VALUES = {
    "question": "What is 1 + 1?",
    "reference_answer": "2",
    "extracted_answer": "2",
    "response": "1 + 1 = 2, so the answer is \\boxed{2}.",
    "criteria": "10 points: the final answer is 2, with the addition shown.",
    "options": "(1) 1\n(2) 2\n(3) 3\n(4) 4",
    "num_options": "4",
    "hint": "Add the two numbers.",
}
_FLAGS = {"auto": "auto", "true": "true", "false": "false", "on": "true", "off": "false", "1": "true", "0": "false",
          "yes": "true", "no": "false"}


class ServerFeatureError(RewardOptionsError):
    """The server refuses or ignores a structured-output constraint or log-probabilities that the
    options ask for: a configuration error, raised before training (probe) or at the first step."""


class TemplateSettings(BaseModel):
    """Template and constraint options of a model-scored reward (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template_file: str | None = None
    constrained: Literal["auto", "true", "false"] = "auto"
    reasoning_chars: int | None = Field(None, ge=0)

    @field_validator("constrained", mode="before")
    @classmethod
    def _flag(cls, value: Any) -> Any:
        if isinstance(value, bool):
            return "true" if value else "false"
        return _FLAGS.get(str(value).strip().lower(), value)

    @field_validator("template_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @property
    def constraints_on(self) -> bool:
        """``auto`` is off: recipes turn constraints on where the served model is ours (CPU
        profile); a published checkpoint keeps the format it was trained to write."""
        return self.constrained == "true"


class VerdictSettings(BaseModel):
    """Verdict-preset options of a judging reward (see ``verl.utils.reward_score.verdicts``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    verdict: PresetName | None = None  # None: the template's default
    score_max: int | None = Field(None, ge=1)  # None: the template's default, else 10
    option_scores: dict[str, float] | None = None
    invalid: str | None = None
    verdict_mode: Literal["label", "prob"] = "label"
    top_logprobs: int = Field(20, ge=1)

    @field_validator("option_scores", mode="before")
    @classmethod
    def _scores_from_text(cls, value: Any) -> Any:
        """``"A=1,B=0"`` (a command line) as well as a mapping."""
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.replace(";", ",").split(",") if item.strip()]
            if not all(len(pair) == 2 for pair in pairs):
                raise ValueError("write option scores as A=1,B=0 or as a mapping")
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("invalid", mode="before")
    @classmethod
    def _no_invalid(cls, value: Any) -> Any:
        return None if value in ("", "none", "None") else value


def resolve_template(builtin: str, template_file: str | None, *, reward: str, fillable: set[str],
                     required: list[set[str]]) -> ChatTemplate:
    """The reward's template (the file when given, else the built-in one), checked against what the
    reward fills and requires. Raises :class:`TemplateError` (a ``ValueError``)."""
    template = load_template(template_file) if template_file else builtin_template(builtin)
    template.check(reward=reward, fillable=fillable, required=required)
    return template


def resolve_preset(settings: VerdictSettings, template: ChatTemplate, *, is_think_model: bool,
                   default: PresetName | None = None) -> VerdictPreset:
    """The verdict preset: the options first, then the template's ``defaults``, then ``default``."""
    defaults: Mapping[str, Any] = template.defaults
    unknown = sorted(set(defaults) - {"verdict", "score_max", "option_scores", "invalid"})
    if unknown:
        raise TemplateError(f"template {template.source}: defaults may set verdict, score_max, option_scores "
                            f"and invalid, not {', '.join(unknown)}")
    kind = settings.verdict or defaults.get("verdict") or default
    if kind is None:
        raise TemplateError(f"template {template.source} declares no verdict preset: set the option verdict "
                            f"({'|'.join(PRESETS)}) or defaults.verdict in the file")
    if kind not in PRESETS:
        raise TemplateError(f"template {template.source}: defaults.verdict must be one of {', '.join(PRESETS)}")
    scores = settings.option_scores if settings.option_scores is not None else defaults.get("option_scores")
    if scores is not None and not isinstance(scores, Mapping):
        raise TemplateError(f"template {template.source}: defaults.option_scores must be a mapping of letters to scores")
    try:
        score_max = int(settings.score_max or defaults.get("score_max") or 10)
        option_scores = tuple((str(k), float(v)) for k, v in (scores or {}).items())
    except (TypeError, ValueError) as e:
        raise TemplateError(f"template {template.source}: defaults: {e}") from None
    invalid = settings.invalid if "invalid" in settings.model_fields_set else defaults.get("invalid")
    return VerdictPreset(kind, score_max=score_max, option_scores=option_scores,
                         invalid=None if invalid is None else str(invalid), is_think_model=is_think_model)


def reasoning_chars_for(settings: TemplateSettings, kind: str, is_think_model: bool) -> int:
    if settings.reasoning_chars is not None:
        return settings.reasoning_chars
    return THINK_REASONING_CHARS if is_think_model else DEFAULT_REASONING_CHARS.get(kind, 0)


async def ask(client, messages: list[dict], *, constraint: StructuredOutput | None = None,
              top_logprobs: int | None = None, reward: str = "reward", **sampling: Any) -> Completion:
    """``client.chat(messages, **sampling)``, plus the constraint (its ``max_tokens`` replaces the
    sampling one: a shorter limit could cut a reply mid-format) and log-probabilities when given.
    Raises :class:`ServerFeatureError` when the server refuses them (see the module docstring)."""
    extra: dict[str, Any] = {}
    if constraint is not None:
        extra.update(constraint.request_fields())
        sampling["max_tokens"] = constraint.max_tokens
    if top_logprobs:
        extra.update(logprob_fields(top_logprobs))
    if not extra:
        return await client.chat(messages, **sampling)
    done = await client.chat(messages, extra_body=extra, **sampling)
    if not done.ok and (done.error or "").startswith("HTTP 4"):
        plain = await client.chat(messages, **sampling)
        if plain.ok:
            what = " and ".join(part for part, on in (("the structured-output constraint", constraint is not None),
                                                       ("log-probabilities", bool(top_logprobs))) if on)
            raise ServerFeatureError(f"{reward}: the server {client.config.base_url} (model {client.config.model!r}) "
                                     f"refuses {what}: {done.error}")
    return done


def probe_server(client, messages: list[dict], *, constraint: StructuredOutput | None, top_logprobs: int | None,
                 reward: str) -> None:
    """Check, with real requests, that the server enforces ``constraint`` and returns log-probabilities
    when asked (see the module docstring). Raises :class:`ServerFeatureError`; returns None when
    there is nothing to check."""
    import dataclasses

    from verlkit.clients.llm import LLMClient
    from verlkit.clients.loop import run_sync

    client = LLMClient(dataclasses.replace(client.config, cache_size=0))  # the server's answer now, never a cached one
    where = f"{reward}: the server {client.config.base_url} (model {client.config.model!r})"
    if constraint is not None:
        nonce = StructuredOutput(choice=(PROBE_CHOICE,), max_tokens=16)
        done = run_sync(client.chat(messages, max_tokens=nonce.max_tokens, temperature=0.0,
                                    extra_body=nonce.request_fields()))
        if not done.ok:
            raise ServerFeatureError(f"{where} failed the structured-output probe: {done.error}")
        if done.text != PROBE_CHOICE:
            raise ServerFeatureError(f"{where} ignores the structured_outputs request field (asked to write exactly "
                                     f"{PROBE_CHOICE!r}, it wrote {done.text[:80]!r}); vLLM >= 0.10 enforces it")
    if constraint is None and not top_logprobs:
        return
    extra: dict[str, Any] = dict(constraint.request_fields()) if constraint is not None else {}
    if top_logprobs:
        extra.update(logprob_fields(top_logprobs))
    max_tokens = constraint.max_tokens if constraint is not None else 16
    done = run_sync(client.chat(messages, max_tokens=max_tokens, temperature=0.0, extra_body=extra))
    if not done.ok:
        asked = constraint.describe() if constraint is not None else "log-probabilities"
        raise ServerFeatureError(f"{where} refuses {asked}: {done.error}")
    if constraint is not None and finish_reason(done.raw) != "length" and not constraint.admits(done.text):
        raise ServerFeatureError(f"{where} returned a reply that its constraint ({constraint.describe()}) does not "
                                 f"admit: {done.text[:200]!r}")
    if top_logprobs and generated_tokens(done.raw) is None:
        raise ServerFeatureError(f"{where} returned no log-probabilities (verdict_mode=prob needs them)")
    logger.info("%s: probe passed (constraint: %s, logprobs: %s)", where,
                constraint.describe() if constraint else "none", top_logprobs or "none")
