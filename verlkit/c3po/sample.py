"""C3PO's sampling stage: from one sentence of feedback to in-scope, near-scope and out-of-scope data.

For every selected feedback (``verlkit.c3po.feedback``), with a teacher model and a completion
model behind OpenAI-compatible servers (the launcher's vLLM servers, or a hosted API whose key comes
from the environment):

1. **categories**: the teacher lists K = ceil(max(num_in_scope, num_near_scope) / prompts_per_category)
   categories that form a slightly larger superset of the feedback's domain;
2. **in-scope prompts**: per category, prompts inside both the category and the domain;
3. **near-scope prompts**: per category, prompts in the category but outside the domain;
4. **out-of-scope prompts**: ``num_out_of_scope`` general prompts from a local file, one seeded
   shuffle shared by every feedback (as in the original);
5. **completions** by the completion model for every prompt: ``baseline`` (the raw prompt),
   ``revised`` (the baseline rewritten to apply the feedback), ``in_context`` (prompt + the feedback)
   and ``cot`` (reason whether the feedback applies, then answer). Rows without a baseline, revised
   or in-context completion are dropped and counted (``cot`` may be missing).
6. each set is split train/test with a seeded shuffle (seed + the feedback's id: reproducible, and
   independent across feedbacks).

What differs from the original, on purpose: each feedback's prompts come only from its own
categories (the original flattened all feedbacks' lists and cut them into equal chunks, so a short
list shifted one feedback's prompts into the next); a malformed teacher reply is re-asked (at most
``max_reasks`` times, with the problem stated) and then counted, never an abort; splits are seeded;
every request and reply is appended to ``requests.jsonl`` as it arrives, so an interrupted run
resumes where it stopped and replays exactly the same data; servers that support it (vLLM) can be
asked to constrain replies to the expected format (``--teacher-constrained``), which lets even a
tiny local model produce parseable lists.

Output (``--out DIR``), readable JSON::

    DIR/<feedback slug>/feedback.json      the feedback
    DIR/<feedback slug>/categories.json    ["...", ...]
    DIR/<feedback slug>/in_scope.json      {"train": [row, ...], "test": [row, ...]}
    DIR/<feedback slug>/near_scope.json    same
    DIR/<feedback slug>/out_of_scope.json  same
    DIR/<feedback slug>/report.json        counts, re-asks, failures, shortfalls
    DIR/<feedback slug>/requests.jsonl     the resume log (request key -> reply)
    DIR/manifest.json                      the settings and every feedback's counts

Rows: ``{"prompt", "category", "baseline_response", "revised_response", "in_context_response",
"cot_response"}`` (``category`` is null for out-of-scope prompts). ``load_sample`` reads one
feedback's directory back; ``python -m data_prep.c3po DIR/<feedback slug> --out train.parquet``
turns it into the preference trainer's parquet. Requests, re-asks and the resume log are
``verlkit.c3po.endpoints``.

CLI: ``python -m verlkit.c3po.sample --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import math
import os
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from verlkit.c3po.constraints import categories_constraint, cot_constraint, prompt_list_constraint, revised_constraint
from verlkit.c3po.endpoints import CONSTRAIN_CHOICES, Asker, Endpoint, RequestCounters, RequestLog, use_constraints
from verlkit.c3po.feedback import Feedback, load_feedbacks, select_feedbacks, select_names
from verlkit.c3po.general_prompts import BUNDLED_FEEDBACKS, BUNDLED_GENERAL_PROMPTS, load_general_prompts
from verlkit.c3po.parsers import parse_categories, parse_cot, parse_prompt_list, parse_revised
from verlkit.c3po.prompts import (
    baseline_messages,
    categories_messages,
    cot_messages,
    in_context_messages,
    in_scope_prompts_messages,
    near_scope_prompts_messages,
    revise_messages,
)
from verlkit.records import InputError, normalize_text

logger = logging.getLogger("verlkit.c3po.sample")

SETS = ("in_scope", "near_scope", "out_of_scope")
REQUIRED_COMPLETIONS = ("baseline", "revised", "in_context")


@dataclass
class SampleConfig:
    """Sizes and decoding of the sampling stage. Defaults: the original's reference config."""

    num_in_scope: int = 960
    num_near_scope: int = 960
    num_out_of_scope: int = 960
    prompts_per_category: int = 32
    test_fraction: float = 0.1
    seed: int = 42
    max_reasks: int = 2
    temperature: float = 0.7
    top_p: float = 0.7
    teacher_max_tokens: int = 2048
    completion_max_tokens: int = 600
    # longest item / rewritten answer a constrained reply may hold (small servers: small values, so
    # that the reply's worst-case length fits the context)
    max_category_chars: int = 100
    max_prompt_chars: int = 200
    max_response_chars: int = 2000
    # per-request seeds make sampled replies reproducible on servers that honour them (not the
    # CPU build of vLLM, which crashes on seeded sampled requests); the resume log replays anyway
    request_seeds: bool = False

    def __post_init__(self) -> None:
        for name in ("num_in_scope", "num_near_scope", "num_out_of_scope", "prompts_per_category"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.max_reasks < 0:
            raise ValueError(f"max_reasks must be >= 0, got {self.max_reasks}")

    def check_constraints(self) -> None:
        """Build every structured-output constraint once, so that sizes no reply could satisfy are
        reported before the first request (raises ValueError)."""
        categories_constraint(self.num_categories, max_item_chars=self.max_category_chars)
        for revised in (False, True):
            prompt_list_constraint(self.prompts_per_category, revised=revised, max_item_chars=self.max_prompt_chars)
        revised_constraint(self.max_response_chars)
        cot_constraint(self.max_response_chars)

    @property
    def num_categories(self) -> int:
        return math.ceil(max(self.num_in_scope, self.num_near_scope) / self.prompts_per_category)


# ---- one feedback ---------------------------------------------------------------------------------


class FeedbackSampler:
    """Runs the whole chain for one feedback; all requests of a stage go out concurrently."""

    def __init__(self, feedback: Feedback, teacher: Endpoint, completion: Endpoint, config: SampleConfig,
                 log: RequestLog, progress: Callable[[str, int], Any] | None = None):  # fmt: skip
        self.fb = feedback
        self.teacher = teacher
        self.completion = completion
        self.config = config
        self.asker = Asker(max_reasks=config.max_reasks, temperature=config.temperature, top_p=config.top_p, log=log,
                           request_seeds=config.request_seeds)  # fmt: skip
        self.progress = progress or (lambda desc, total: _NullBar())

    @property
    def counts(self) -> RequestCounters:
        return self.asker.counts

    # -- prompts ------------------------------------------------------------------------------

    async def categories(self) -> list[str]:
        k = self.config.num_categories
        found = await self.asker.ask(
            self.teacher, "teacher", "categories", categories_messages(self.fb, k), self.config.teacher_max_tokens,
            parse=lambda t: parse_categories(t, k),
            constraint=categories_constraint(k, max_item_chars=self.config.max_category_chars),
        )  # fmt: skip
        if found is None:
            raise RuntimeError(f"feedback {self.fb.slug!r}: the teacher gave no usable list of {k} categories")
        return found

    async def prompt_lists(self, categories: list[str], near: bool) -> list[tuple[str, list[str]]]:
        n = self.config.prompts_per_category
        build = near_scope_prompts_messages if near else in_scope_prompts_messages
        name = "near_scope" if near else "in_scope"
        bar = self.progress(f"{self.fb.slug}: {name} prompts", len(categories))

        async def one(category: str):
            got = await self.asker.ask(
                self.teacher, "teacher", f"{name}:{category}", build(self.fb, category, n), self.config.teacher_max_tokens,
                parse=lambda t: parse_prompt_list(t, n, revised=near),
                constraint=prompt_list_constraint(n, revised=near, max_item_chars=self.config.max_prompt_chars),
            )  # fmt: skip
            bar.update(1)
            got = got or []
            if len(got) < n:
                self.counts.add("shortfalls", name, n - len(got))
            return category, got

        try:
            return list(await asyncio.gather(*(one(c) for c in categories)))
        finally:
            bar.close()

    # -- completions --------------------------------------------------------------------------

    async def complete(self, prompt: str, bar) -> dict[str, Any]:
        cfg, c, ask = self.config, self.completion, self.asker.ask
        baseline = await ask(c, "completion", "baseline", baseline_messages(prompt), cfg.completion_max_tokens)
        revised = None
        if baseline is not None:
            revised = await ask(
                c, "completion", "revised", revise_messages(self.fb, prompt, baseline), cfg.completion_max_tokens,
                parse=parse_revised, constraint=revised_constraint(cfg.max_response_chars),
            )  # fmt: skip
        in_context, cot = await asyncio.gather(
            ask(c, "completion", "in_context", in_context_messages(self.fb, prompt), cfg.completion_max_tokens),
            ask(c, "completion", "cot", cot_messages(self.fb, prompt), cfg.completion_max_tokens,
                parse=parse_cot, constraint=cot_constraint(cfg.max_response_chars)),
        )  # fmt: skip
        bar.update(1)
        return {"baseline_response": baseline, "revised_response": revised, "in_context_response": in_context,
                "cot_response": cot}  # fmt: skip

    async def completions(self, name: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        bar = self.progress(f"{self.fb.slug}: {name} completions", len(rows))
        try:
            done = await asyncio.gather(*(self.complete(r["prompt"], bar) for r in rows))
        finally:
            bar.close()
        kept = []
        for row, comp in zip(rows, done):
            if all(comp[f"{k}_response"] is not None for k in REQUIRED_COMPLETIONS):
                kept.append({**row, **comp})
            else:
                self.counts.add("dropped_rows", name)
        return kept

    # -- the chain ----------------------------------------------------------------------------

    async def run(self, general: list[str]) -> dict[str, Any]:
        cfg = self.config
        categories = await self.categories()
        in_lists, near_lists = await asyncio.gather(
            self.prompt_lists(categories, near=False), self.prompt_lists(categories, near=True)
        )
        in_rows = take_round_robin(in_lists, cfg.num_in_scope)
        seen = {normalize_text(r["prompt"]) for r in in_rows}
        # a prompt the teacher put on both sides is ambiguous: it stays in-scope only
        near_rows = take_round_robin(near_lists, cfg.num_near_scope, exclude=seen)
        out_rows = [{"prompt": p, "category": None} for p in general if normalize_text(p) not in seen][: cfg.num_out_of_scope]
        for name, rows, want in (("in_scope", in_rows, cfg.num_in_scope), ("near_scope", near_rows, cfg.num_near_scope),
                                 ("out_of_scope", out_rows, cfg.num_out_of_scope)):  # fmt: skip
            if len(rows) < want:
                self.counts.add("shortfalls", f"{name}_total", want - len(rows))
        sets = dict(zip(SETS, await asyncio.gather(
            self.completions("in_scope", in_rows), self.completions("near_scope", near_rows),
            self.completions("out_of_scope", out_rows),
        )))  # fmt: skip
        split_seed = split_seed_for(cfg.seed, self.fb)
        return {"categories": categories,
                "sets": {name: split(rows, cfg.test_fraction, split_seed) for name, rows in sets.items()}}


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _tqdm_bar(desc: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


def take_round_robin(lists: list[tuple[str, list[str]]], n: int, exclude: set[str] | None = None) -> list[dict[str, Any]]:
    """Up to ``n`` distinct prompts, one per category in turn, so a cut keeps every category."""
    seen = set(exclude or ())
    out: list[dict[str, Any]] = []
    queues = [(category, list(items)) for category, items in lists]
    while len(out) < n and any(q for _, q in queues):
        for category, queue in queues:
            while queue:
                prompt = queue.pop(0)
                if normalize_text(prompt) not in seen:
                    seen.add(normalize_text(prompt))
                    out.append({"prompt": prompt, "category": category})
                    break
            if len(out) >= n:
                break
    return out


def split_seed_for(seed: int, feedback: Feedback) -> int:
    """The split seed of one feedback: the run's seed mixed with the feedback's stable id."""
    return int(hashlib.sha256(f"{seed}:{feedback.id}".encode()).hexdigest()[:12], 16)


def split(rows: list[dict[str, Any]], test_fraction: float, seed: int) -> dict[str, list[dict[str, Any]]]:
    """Seeded shuffle, then the first ``ceil(test_fraction * n)`` rows are the test set (at least one
    row stays for training when there are two or more)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = min(math.ceil(test_fraction * len(rows)), max(len(rows) - 1, 0))
    return {"train": [rows[i] for i in order[n_test:]], "test": [rows[i] for i in order[:n_test]]}


# ---- files ----------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def feedback_dir(out: Path, feedback: Feedback) -> Path:
    return out / feedback.slug


def _read_sample_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no such file (did sampling finish for this feedback? see its report.json)",
                         file=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read: {e}", file=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e}", file=path) from None


def load_sample(path: Path) -> dict[str, Any]:
    """A sampled feedback directory back as ``{"feedback": Feedback, "categories", "sets": {...}}``;
    an ``InputError`` naming the file when one is missing or not what the sampling stage writes."""
    path = Path(path)
    feedback_file = path / "feedback.json"
    try:
        feedback = Feedback.from_dict(_read_sample_file(feedback_file))
    except InputError as e:
        raise e.located(feedback_file) from None
    except TypeError as e:  # a value of a type the record cannot even hold
        raise InputError(str(e), file=feedback_file) from None
    sets = {}
    for name in SETS:
        file = path / f"{name}.json"
        parts = _read_sample_file(file)
        if not isinstance(parts, dict):
            raise InputError(f"expected {{\"train\": [...], \"test\": [...]}}, got {type(parts).__name__}", file=file)
        for part in ("train", "test"):
            if not isinstance(parts.get(part), list):
                raise InputError("expected a list of rows", file=file, field=part)
        sets[name] = parts
    return {"feedback": feedback, "categories": _read_sample_file(path / "categories.json"), "sets": sets}


async def sample_feedback(feedback: Feedback, out: Path, teacher: Endpoint, completion: Endpoint,
                          config: SampleConfig, general: list[str], progress=None) -> dict[str, Any]:  # fmt: skip
    """Sample one feedback into ``out/<slug>/``; returns its report (``ok`` False on failure)."""
    fdir = feedback_dir(out, feedback)
    fdir.mkdir(parents=True, exist_ok=True)
    log = RequestLog(fdir / "requests.jsonl")
    sampler = FeedbackSampler(feedback, teacher, completion, config, log, progress)
    report: dict[str, Any] = {"feedback": feedback.slug, "id": feedback.id}
    try:
        result = await sampler.run(general)
    except RuntimeError as e:
        report.update(ok=False, error=str(e))
    else:
        _write_json(fdir / "feedback.json", feedback.to_dict())
        _write_json(fdir / "categories.json", result["categories"])
        for name, parts in result["sets"].items():
            _write_json(fdir / f"{name}.json", parts)
        report.update(ok=True, counts={name: {k: len(v) for k, v in parts.items()} for name, parts in result["sets"].items()},
                      categories=len(result["categories"]))  # fmt: skip
    report.update(asdict(sampler.counts))
    _write_json(fdir / "report.json", report)
    return report


async def sample_all(feedbacks: list[Feedback], out: Path, teacher: Endpoint, completion: Endpoint,
                     config: SampleConfig, general: list[str], progress=None) -> list[dict[str, Any]]:  # fmt: skip
    # one feedback after another: each feedback's requests already saturate the servers
    return [await sample_feedback(f, out, teacher, completion, config, general, progress) for f in feedbacks]


# ---- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verlkit.c3po.sample", description=__doc__.splitlines()[0])
    p.add_argument("--feedback", action="append", type=Path, help=f"feedback file(s) or directories (default {BUNDLED_FEEDBACKS})")
    p.add_argument("--feedback-prefix", default=None, help="only feedbacks whose name or content starts with this")
    p.add_argument("--feedback-category", default=None,
                   help="only feedbacks of these categories (scope and/or type, comma-separated: all must hold)")
    p.add_argument("--feedback-name", action="append", default=None,
                   help="only the feedback with this name (repeatable; after the prefix and category)")
    p.add_argument("--max-feedbacks", type=int, default=None, help="only the first N selected feedbacks")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--general-prompts", type=Path, default=BUNDLED_GENERAL_PROMPTS)
    for role in ("teacher", "completion"):
        p.add_argument(f"--{role}-url", required=True)
        p.add_argument(f"--{role}-model", required=True)
        p.add_argument(f"--{role}-api-key-env", default=None, help="NAME of the env var holding the key")
        p.add_argument(f"--{role}-constrained", choices=CONSTRAIN_CHOICES, default="auto")
    defaults = SampleConfig()
    for name in ("num_in_scope", "num_near_scope", "num_out_of_scope", "prompts_per_category", "max_reasks",
                 "teacher_max_tokens", "completion_max_tokens", "max_category_chars", "max_prompt_chars",
                 "max_response_chars", "seed"):  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name in ("test_fraction", "temperature", "top_p"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    p.add_argument("--request-seeds", action="store_true", help="seed every sampled request (not on the CPU build of vLLM)")
    p.add_argument("--max-concurrency", type=int, default=32)
    p.add_argument("--timeout-s", type=float, default=300.0)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    from verlkit.clients.loop import run_sync
    from verlkit.clients.llm import close_session

    try:
        feedbacks = select_feedbacks(load_feedbacks(args.feedback or [BUNDLED_FEEDBACKS]), args.feedback_prefix,
                                     args.feedback_category)  # fmt: skip
        if args.feedback_name:
            feedbacks = select_names(feedbacks, args.feedback_name)
        feedbacks = feedbacks[: args.max_feedbacks] if args.max_feedbacks else feedbacks
        config = SampleConfig(**{k: getattr(args, k) for k in SampleConfig.__dataclass_fields__})
        config.check_constraints()
        general = load_general_prompts(args.general_prompts, None, seed=config.seed)
    except (InputError, ValueError, OSError) as e:
        print(f"c3po sample: {e}", file=sys.stderr)
        return 2
    endpoints = {
        role: Endpoint(url=getattr(args, f"{role}_url"), model=getattr(args, f"{role}_model"),
                       api_key_env=getattr(args, f"{role}_api_key_env"),
                       constrained=use_constraints(getattr(args, f"{role}_constrained"), getattr(args, f"{role}_url")),
                       max_concurrency=args.max_concurrency, timeout_s=args.timeout_s)
        for role in ("teacher", "completion")
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    progress = None if args.no_progress else _tqdm_bar
    try:
        reports = run_sync(sample_all(feedbacks, args.out, endpoints["teacher"], endpoints["completion"], config,
                                      general, progress))  # fmt: skip
    finally:
        close_session()
    _write_json(args.out / "manifest.json", {
        "config": asdict(config), "general_prompts": str(args.general_prompts),
        "teacher": {"url": args.teacher_url, "model": args.teacher_model, "constrained": endpoints["teacher"].constrained},
        "completion": {"url": args.completion_url, "model": args.completion_model,
                       "constrained": endpoints["completion"].constrained},
        "feedbacks": reports,
    })  # fmt: skip
    for r in reports:
        if r["ok"]:
            print(f"{r['feedback']}: " + ", ".join(f"{k} {v['train']}+{v['test']}" for k, v in r["counts"].items())
                  + f" (requests {r['requests']}, replayed {r['replayed']}, re-asks {r['reasks']}, "
                  f"failures {r['request_failures'] + r['parse_failures']})")  # fmt: skip
        else:
            print(f"{r['feedback']}: FAILED: {r['error']}", file=sys.stderr)
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
