"""Chat-message templates with named placeholders, loaded from YAML/JSON files or shipped built in.

File format (``.yaml``/``.yml`` or ``.json``)::

    description: TinyV-1.5B, the prompt it was trained on     # optional, free text
    defaults:                                                  # optional: defaults for the reward's
      verdict: binary                                          # verdict options (explicit options win)
    messages:
      - role: system                                           # system, user or assistant
        content: You are a careful grader.
      - role: user
        content: |-
          Question: {question}
          Reference answer: {reference_answer}
          Model answer: {extracted_answer}
          Reply with True or False.

A file may also be just the list of messages. ``{name}`` is a placeholder (``name`` a Python
identifier); ``{{`` and ``}}`` are literal braces; any other brace is literal text (so ``\\boxed{}``
needs no escaping, but ``\\frac{a}{b}`` does: ``\\frac{{a}}{{b}}``, else ``a`` and ``b`` read as
placeholders and the check reports them as unknown). Values are inserted as the reward gives them
(our rewards strip surrounding whitespace), in one pass: a value that itself contains ``{question}``
is not substituted again.

The placeholder vocabulary is :data:`PLACEHOLDERS`; which of them a template may use depends on the
reward that renders it (:meth:`ChatTemplate.check`). YAML tip: ``|-`` keeps the text exactly as
written without a trailing newline (``|`` adds one, and the newline is sent to the model).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
ROLES = ("system", "user", "assistant")

# name -> what a reward puts there. A reward fills a subset (ChatTemplate.check names it).
PLACEHOLDERS: dict[str, str] = {
    "question": "the problem or prompt being answered",
    "reference_answer": "the reference (ground-truth) answer",
    "extracted_answer": "the final answer the rule checker extracted from the response "
                        "(its last 1000 characters when none was found, '(no answer)' when empty)",
    "response": "the full response being judged",
    "criteria": "the problem's rubric (extra_info.criteria)",
    "options": "the multiple-choice options, one per line as '(1) ...'",
    "num_options": "the number of options",
    "hint": "the policy's hint for the downstream model (Prompt4Trust)",
}

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(ValueError):
    """A template file that cannot be read or does not fit the reward that uses it."""


@dataclass(frozen=True)
class ChatTemplate:
    """A list of (role, content) messages with ``{placeholder}`` fields. ``source`` names where it
    came from (``builtin:tinyv`` or a file path) in error messages."""

    messages: tuple[tuple[str, str], ...]
    source: str
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def placeholders(self) -> frozenset[str]:
        """Every placeholder name the messages use."""
        return frozenset(name for _, content in self.messages for name in _names(content))

    def check(self, *, reward: str, fillable: Iterable[str], required: Sequence[Iterable[str]] = ()) -> None:
        """Raise :class:`TemplateError` unless every placeholder is known and ``fillable`` by
        ``reward``, and each group of ``required`` (alternatives) is used by at least one name."""
        fillable = frozenset(fillable)
        used = self.placeholders()
        problems = []
        unknown = sorted(used - set(PLACEHOLDERS))
        if unknown:
            problems.append(
                "unknown placeholder(s) " + ", ".join(f"{{{n}}}" for n in unknown)
                + f" (known: {', '.join(f'{{{n}}}' for n in PLACEHOLDERS)}; write {{{{ and }}}} for literal braces)"
            )
        unfillable = sorted((used & set(PLACEHOLDERS)) - fillable)
        if unfillable:
            problems.append(
                ", ".join(f"{{{n}}}" for n in unfillable) + f" cannot be filled by the {reward} reward "
                f"(it fills {', '.join(f'{{{n}}}' for n in sorted(fillable))})"
            )
        for group in required:
            group = sorted(group)
            if not used & set(group):
                problems.append("missing required placeholder " + " or ".join(f"{{{n}}}" for n in group))
        if problems:
            raise TemplateError(f"template {self.source}: " + "; ".join(problems))

    def render(self, **values: Any) -> list[dict[str, str]]:
        """The chat messages with every placeholder replaced by its value. A placeholder without a
        value is a ``KeyError`` naming it (``check`` first to report it at start-up)."""
        text = {name: str(value) for name, value in values.items()}
        return [{"role": role, "content": _substitute(content, text, self.source)} for role, content in self.messages]


def _names(content: str) -> list[str]:
    return [m.group(1) for m in _TOKEN.finditer(content) if m.group(1)]


def _substitute(content: str, values: Mapping[str, str], source: str) -> str:
    def one(match: re.Match) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name not in values:
            raise KeyError(f"template {source}: no value for placeholder {{{name}}}")
        return values[name]

    return _TOKEN.sub(one, content)


def _from_data(data: Any, source: str) -> ChatTemplate:
    description, defaults = "", {}
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"messages", "description", "defaults"})
        if unknown:
            raise TemplateError(f"template {source}: unknown key(s) {', '.join(unknown)} "
                                "(a template file holds messages, and optionally description and defaults)")
        description = data.get("description") or ""
        defaults = data.get("defaults") or {}
        if not isinstance(description, str):
            raise TemplateError(f"template {source}: description must be text")
        if not isinstance(defaults, Mapping) or not all(isinstance(k, str) for k in defaults):
            raise TemplateError(f"template {source}: defaults must be a mapping of option names to values")
        data = data.get("messages")
    if not isinstance(data, list) or not data:
        raise TemplateError(f"template {source}: needs a non-empty list of messages ({{role, content}} each)")
    messages = []
    for i, message in enumerate(data, start=1):
        if not isinstance(message, Mapping) or set(message) != {"role", "content"}:
            raise TemplateError(f"template {source}: message {i} must have exactly the keys role and content")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise TemplateError(f"template {source}: message {i}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            raise TemplateError(f"template {source}: message {i}: content must be non-empty text")
        messages.append((role, content))
    return ChatTemplate(tuple(messages), source, description, dict(defaults))


def load_template(path: str | Path) -> ChatTemplate:
    """A template from a ``.yaml``/``.yml``/``.json`` file; :class:`TemplateError` names the file and
    what is wrong. Files are read once per process (by resolved path)."""
    resolved = Path(path).expanduser()
    try:
        resolved = resolved.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise TemplateError(f"template file {path}: not found") from None
    return _load_cached(str(resolved), str(path))


@functools.lru_cache(maxsize=64)
def _load_cached(resolved: str, shown: str) -> ChatTemplate:
    path = Path(resolved)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise TemplateError(f"template file {shown}: cannot be read ({e.strerror or e})") from None
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise TemplateError(f"template file {shown}: must end in .yaml, .yml or .json")
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # deferred: only template files need it

            data = yaml.safe_load(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError: the parser's message names the line
        kind = "JSON" if suffix == ".json" else "YAML"
        raise TemplateError(f"template file {shown}: not valid {kind}: {e}") from None
    return _from_data(data, shown)


def builtin_names() -> list[str]:
    """The names of the templates shipped in ``verlkit/templates/builtin``."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def builtin_template(name: str) -> ChatTemplate:
    """One of our templates by name (``tinyv``, ``rubric``, ``cgp_downstream``, ...)."""
    path = BUILTIN_DIR / f"{name}.yaml"
    if not path.is_file():
        raise TemplateError(f"no built-in template {name!r} (built in: {', '.join(builtin_names())})")
    template = _load_cached(str(path), str(path))
    return ChatTemplate(template.messages, f"builtin:{name}", template.description, template.defaults)
