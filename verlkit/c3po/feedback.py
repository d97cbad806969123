"""Feedback records for C3PO: the record, its file format, loading and selection.

A ``Feedback`` is one sentence of verbal feedback plus where it applies (``domain``) and what it asks
for (``effect``). Quantitative feedback also names a metric of a response text
(``verlkit.c3po.metrics``); qualitative feedback is judged by an LLM.

Feedback files (``.json``: one object or a list; ``.jsonl``: one object per line) are read with
``verlkit.records.read_records``, and every problem is a ``verlkit.records.InputError`` that names
the file, the entry and the field. The format is described in ``docs/c3po-feedback.md``.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from verlkit.c3po.metrics import BOOLEAN_METRICS, METRICS, check_metric_value
from verlkit.records import InputError, read_records

__all__ = [
    "CATEGORIES",
    "COMPARISONS",
    "FEEDBACK_ID_NAMESPACE",
    "FEEDBACK_SUFFIXES",
    "SCOPES",
    "TYPES",
    "Feedback",
    "load_feedbacks",
    "select_feedbacks",
    "select_names",
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
FEEDBACK_SUFFIXES = (".json", ".jsonl")

SLUG_MAX_CHARS = 60


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
        raise InputError(f"must be a non-empty string, got {value!r}", field=field)
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
            raise InputError(f"must be one of {', '.join(SCOPES)}, got {self.scope!r}", field="scope")
        if self.type not in TYPES:
            raise InputError(f"must be one of {', '.join(TYPES)}, got {self.type!r}", field="type")
        if self.type == "qualitative":
            for field in ("metric", "metric_value", "comparison"):
                if getattr(self, field) is not None:
                    raise InputError("qualitative feedback has no metric (it is judged by an LLM); "
                                        "remove it or set type to 'quantitative'", field=field)
        else:
            metric, value = self._checked_metric()
            object.__setattr__(self, "metric", metric)
            object.__setattr__(self, "metric_value", value)
            if self.comparison not in COMPARISONS:
                raise InputError(f"quantitative feedback needs one of {', '.join(COMPARISONS)}, "
                                    f"got {self.comparison!r}", field="comparison")
        if self.name is None:
            object.__setattr__(self, "name", slugify(self.content) or f"feedback-{self.id[:8]}")
        else:
            _require_text(self.name, "name")
            if not slugify(self.name):
                raise InputError(f"must contain letters or digits, got {self.name!r}", field="name")

    def _checked_metric(self) -> tuple[str | tuple[str, ...], Any]:
        metric = self.metric
        if metric is None:
            raise InputError(f"quantitative feedback needs a metric (one of {', '.join(METRICS)})",
                                field="metric")
        if isinstance(metric, str):
            if metric not in METRICS:
                raise InputError(f"unknown metric {metric!r} (known: {', '.join(METRICS)})", field="metric")
            return metric, check_metric_value(metric, self.metric_value, "metric_value")
        if not isinstance(metric, (list, tuple)) or not metric:
            raise InputError(f"must be a metric name or a non-empty list of names, got {metric!r}",
                                field="metric")
        values = self.metric_value
        if not isinstance(values, (list, tuple)) or len(values) != len(metric):
            raise InputError(f"a list of {len(metric)} metrics needs a list of {len(metric)} values "
                                f"(null for a metric without one), got {values!r}", field="metric_value")
        checked = []
        for i, (name, value) in enumerate(zip(metric, values)):
            if not isinstance(name, str) or name not in METRICS:
                raise InputError(f"unknown metric {name!r} (known: {', '.join(METRICS)})", field=f"metric[{i}]")
            if name not in BOOLEAN_METRICS:
                # Several metrics hold together ("all must hold"): a count cannot be one of them.
                raise InputError(f"metric {name!r} is numeric; only true/false metrics can be combined",
                                    field=f"metric[{i}]")
            checked.append(check_metric_value(name, value, f"metric_value[{i}]"))
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
            raise InputError(f"must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown key (known: {', '.join(sorted(known))})", field=unknown[0])
        for required in ("content", "domain", "effect"):
            if required not in data:
                raise InputError("is required", field=required)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that ``from_dict`` turns back into an equal record."""
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self)}


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def _entry_label(index: int, data: Any) -> str:
    if isinstance(data, dict) and isinstance(data.get("name"), str):
        return f"record {index} ({data['name']!r})"
    return f"record {index}"


def _feedback_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FEEDBACK_SUFFIXES)
        if not found:
            raise InputError("directory holds no .json or .jsonl file", file=path)
        return found
    if not path.exists():
        raise InputError("no such file or directory", file=path)
    if path.suffix not in FEEDBACK_SUFFIXES:
        raise InputError("expected a .json or .jsonl file, or a directory of them", file=path)
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
            # list_key=None: a feedback object is never a wrapper around a list
            for index, data in enumerate(read_records(file, list_key=None)):
                label = _entry_label(index, data)
                try:
                    feedback = Feedback.from_dict(data)
                except InputError as exc:
                    raise exc.located(file, label) from None
                except TypeError as exc:  # a value of a type the record cannot even hold
                    raise InputError(str(exc), file=file, entry=label) from None
                here = f"{file}: {label}"
                for seen, key, field in ((seen_ids, feedback.id, "content"), (seen_slugs, feedback.slug, "name")):
                    if key in seen:
                        what = "content, domain and effect" if field == "content" else f"slug {key!r}"
                        raise InputError(f"same {what} as {seen[key]}", file=file, entry=label, field=field)
                    seen[key] = here
                feedbacks.append(feedback)
    if not feedbacks:
        raise InputError(f"no feedback found in {', '.join(str(p) for p in paths) or 'no paths'}")
    return feedbacks


# A feedback's categories (the original's ``--feedback_category``): its scope and its type.
CATEGORIES = SCOPES + TYPES


def _category_terms(category: str) -> list[str]:
    terms = [t.strip().casefold() for t in category.split(",") if t.strip()]
    unknown = [t for t in terms if t not in CATEGORIES]
    if unknown:
        raise InputError(f"unknown feedback category {unknown[0]!r} (known: {', '.join(CATEGORIES)}; "
                         "several, comma-separated, must all hold)")  # fmt: skip
    return terms


def select_feedbacks(feedbacks: Sequence[Feedback], prefix: str | None, category: str | None = None) -> list[Feedback]:
    """The feedbacks whose name, slug or content starts with ``prefix`` (case-insensitive; all of them
    for None or "") and, with ``category``, that are in every category it names (comma-separated
    scopes and types, e.g. ``"regional,quantitative"``)."""
    if category and category.strip():
        terms = _category_terms(category)
        chosen = [fb for fb in feedbacks if all(t in (fb.scope, fb.type) for t in terms)]
        if not chosen:
            raise InputError(f"no feedback is in category {category!r}")
        feedbacks = chosen
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
        raise InputError(f"no feedback's name or content starts with {prefix!r}; available: {available}")
    return chosen


def select_names(feedbacks: Sequence[Feedback], names: Sequence[str]) -> list[Feedback]:
    """The feedbacks with these names (or slugs), in the order given; an unknown name is an error."""
    by_name = {key: fb for fb in feedbacks for key in (fb.name, fb.slug)}
    missing_names = [n for n in names if n not in by_name]
    if missing_names:
        raise InputError(f"no feedback named {missing_names[0]!r} among the selected ones")
    return list(dict.fromkeys(by_name[n] for n in names))
