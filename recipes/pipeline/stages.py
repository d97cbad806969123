"""The pipeline's stages: their order, what each needs from the ones before it, and the end report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from recipes import format_table
from verlkit.evaluation.sample_size import shown

STAGES = ("prep", "sft", "dpo", "rm", "rloo", "judge", "eval")
TRAINED = ("sft", "dpo", "rm", "rloo", "judge")
RLOO_INITS = ("sft", "dpo")
EVALUABLE = ("sft", "dpo", "rloo")
# recipe.eval.judge.source (EVAL_JUDGE): who scores the win rate when no served judge is configured
JUDGE_SOURCES = ("judge_model", "training_reward")
# what a stage leaves in RUN_DIR for the stages after it
OUTPUTS = {
    "prep": ("data/manifest.json", "data/eval/prompts.parquet"),
    "sft": ("sft/hf/config.json",),
    "dpo": ("dpo/hf/config.json",),
    "rm": ("rm/hf/config.json",),
    "rloo": ("rloo/hf/config.json",),
    "judge": ("judge/hf/config.json",),
}


def parse_stages(stages: Sequence[str] | str) -> list[str]:
    """The selected stages in pipeline order (``"eval, sft"`` or a list); an unknown name is an error."""
    wanted = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if str(s).strip()]
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {','.join(STAGES)}")
    return [s for s in STAGES if s in wanted]


def stage_inputs(stage: str, rloo_init: str, eval_models: Sequence[str],
                 judge_source: str = "judge_model") -> list[tuple[str, str, str]]:  # fmt: skip
    """(producing stage, file in RUN_DIR, what is missing without it) for each input of ``stage``
    (``judge_source`` None: the evaluation is judged by a served judge)."""
    data = [("prep", OUTPUTS["prep"][0], "no prepared data")]
    if stage == "sft":
        return data
    if stage in ("dpo", "rm", "judge"):
        what = {"dpo": "DPO", "rm": "the reward model", "judge": "the win-rate judge"}[stage]
        return data + [("sft", OUTPUTS["sft"][0], f"no SFT model to start {what} from")]
    if stage == "rloo":
        return data + [("rm", OUTPUTS["rm"][0], "no reward model"),
                       (rloo_init, OUTPUTS[rloo_init][0], f"no {rloo_init} model to start RLOO from")]  # fmt: skip
    if stage == "eval":
        scorer = {"judge_model": [("judge", OUTPUTS["judge"][0], "no win-rate judge")],
                  "training_reward": [("rm", OUTPUTS["rm"][0], "no reward model")]}.get(judge_source, [])  # fmt: skip
        return data + [("prep", OUTPUTS["prep"][1], "no evaluation prompts")] + scorer + [
            (m, OUTPUTS[m][0], f"no {m} model to evaluate") for m in eval_models
        ]  # fmt: skip
    return []


def missing_inputs(selected: Sequence[str], run_dir: Path, rloo_init: str, eval_models: Sequence[str],
                   judge_source: str | None = "judge_model") -> list[str]:  # fmt: skip
    """What the selected stages need from stages that will not run and that RUN_DIR does not hold, one
    message each (empty: the run can go ahead). ``judge_source`` None: a served judge scores the win rate."""
    if judge_source is not None and judge_source not in JUDGE_SOURCES:
        return [f"EVAL_JUDGE (recipe.eval.judge.source) must be one of {JUDGE_SOURCES}, got {judge_source!r}"]
    if rloo_init not in RLOO_INITS:
        return [f"RLOO_INIT (recipe.rloo_init) must be one of {RLOO_INITS}, got {rloo_init!r}"]
    wrong = [m for m in eval_models if m not in EVALUABLE]
    if wrong:
        return [f"EVAL_MODELS (recipe.eval_models) may name {EVALUABLE}, got {wrong}"]
    problems: list[str] = []
    for stage in selected:
        for producer, relative, what in stage_inputs(stage, rloo_init, eval_models, judge_source):
            path = run_dir / relative
            message = f"{what} (missing {path}): run that stage first, or reuse its RUN_DIR"
            if producer not in selected and not path.exists() and message not in problems:
                problems.append(message)
    return problems


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _first_last(steps: dict | None, key: str) -> tuple[float | None, float | None]:
    if not steps:
        return None, None
    values = [m[key] for _, m in sorted(steps.items(), key=lambda kv: int(kv[0])) if key in m]
    return (values[0], values[-1]) if values else (None, None)


def report(run_dir: str | Path) -> tuple[str, dict]:
    """The run's outcome: first/last training metric of each stage, the reward model's held-out
    accuracy and each evaluated model's win/tie/loss against the reference (as a table and a dict)."""
    root = Path(run_dir)
    out: dict = {"stages": {}, "eval": {}}
    rows = [("stage", "metric", "first", "last")]
    tracked = {"sft": "train/loss", "dpo": "pref/dpo", "rm": "pref/bt", "rloo": "reward/rm_score/mean", "judge": "pref/bt"}
    for stage, key in tracked.items():
        first, last = _first_last(_read_json(root / stage / "metrics.json"), key)
        if first is not None:
            out["stages"][stage] = {"metric": key, "first": first, "last": last}
            rows.append((stage, key, f"{first:.4g}", f"{last:.4g}"))
    rm_eval = _read_json(root / "rm" / "eval.json")
    if rm_eval:
        out["reward_model_heldout_accuracy"] = rm_eval.get("accuracy")
        acc = rm_eval.get("accuracy")
        rows.append(("rm", f"held-out accuracy ({rm_eval.get('n_scored')} pairs)", "", "n/a" if acc is None else f"{acc:.3f}"))
    judge_eval = _read_json(root / "judge" / "eval.json")
    if judge_eval:
        acc = judge_eval.get("accuracy")
        out["judge_heldout_accuracy"] = acc
        rows.append(("judge", f"held-out accuracy ({judge_eval.get('n_scored')} pairs)", "", "n/a" if acc is None else f"{acc:.3f}"))
    for path in sorted((root / "eval").glob("*/winrate.json")):
        summary = _read_json(path)
        out["eval"][path.parent.name] = summary
        few = summary.get("n_compared") if summary.get("too_few") else None
        fmt = lambda v, few=few: shown(v, few)  # noqa: E731 -- too few judged pairs: no number printed
        wtl = summary.get("win_tie_loss", summary)
        ci = summary.get("ci") or [None, None]
        rows.append((f"eval {path.parent.name}", "win/tie/loss vs reference", "",
                     "/".join(fmt(wtl.get(k)) for k in ("win_rate", "tie_rate", "loss_rate"))))  # fmt: skip
        rows.append((f"eval {path.parent.name}", "reward difference [CI]", "",
                     f"{fmt(summary.get('mean_reward_difference'))} [{fmt(ci[0])}, {fmt(ci[1])}]"))  # fmt: skip
        rows.append((f"eval {path.parent.name}", "length ratio (tokens)", "", fmt(summary.get("length_ratio_tokens"))))
        judge = summary.get("judge")
        if judge:  # who judged, and whether it is the reward the model was trained against
            rows.append((f"eval {path.parent.name}", "judge", "", f"{judge.get('name')}: {judge.get('relation_words')}"))
    return format_table(rows), out
