"""What one ``run_c3po.sh`` run trains and evaluates, and the comparison it ends with.

* **Units**: one LoRA adapter per selected feedback; with a second feedback (the original's
  ``--second_feedback_prefix``) also ONE adapter trained on the combined data of the two, evaluated on
  each feedback's test prompts (its adherence and overgeneralization in the combined model).
* **Sweep points** (the original's ``--sweep_params`` / ``--sweep_values``): dotted config names and
  one tuple of values per point; each point trains and evaluates every unit under its own directory
  ``RUN_DIR/sweep/<point>/`` (without a sweep: ``RUN_DIR/`` itself, one point).
* Sampled data is the run's, ``RUN_DIR/sample/<feedback>/``, shared by every point and unit: the
  sampler runs once per run.

Layout: ``<point root>/train/<unit>/`` (training parquet, checkpoints, adapter, logs) and
``<point root>/eval/<feedback>/<label>.json`` with label ``trained`` (the feedback's own adapter),
``combined`` (the adapter trained on the two feedbacks' data) or ``merged`` (``MERGE_ADAPTERS``: the
two feedbacks' own adapters concatenated, ``verlkit.c3po.adapters``). The comparison
(``RUN_DIR/comparison.{md,json,png}``) has one row per (point, feedback, model): in-scope adherence,
near- and out-of-scope overgeneralization, and the tie rates apart (a tie never counts as applying
the feedback).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from recipes import format_table
from recipes.compose import SettingError

SETS = ("in_scope", "near_scope", "out_of_scope")
COMBINED = "combined"
MERGED = "merged"
# the LoRA ranks a vLLM server accepts as max_lora_rank
VLLM_MAX_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class Point:
    """One sweep point: its directory name ("" without a sweep) and its config overrides."""

    name: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One adapter to train (``feedbacks``: one, or two for the combined adapter) at one sweep point."""

    point: Point
    unit: str  # the training directory's name: the feedback's slug, or "<a>+<b>"
    feedbacks: tuple[str, ...]
    label: str  # the evaluation's name: "trained" or "combined"
    train_dir: Path
    eval_dirs: dict[str, Path]  # feedback -> its evaluation directory at this point
    sample_dirs: tuple[Path, ...]  # the run's shared sampled data of each feedback
    adapter: str  # the name it is served under (unique in the run: adapters stay loaded)
    merge_of: tuple[Path, ...] = ()  # "merged": no training, the concatenation of these trained adapters


def sweep_values(raw: str) -> str:
    """``"(1e-4,8),(5e-4,16)"`` (one tuple per point) -> the hydra list ``[[1e-4,8],[5e-4,16]]``."""
    tuples = re.findall(r"\(([^()]*)\)", raw)
    if not tuples or re.sub(r"\([^()]*\)", "", raw).strip(" ,") != "":
        raise SettingError(f"expected tuples such as (1e-4,8),(5e-4,16), got {raw!r}")
    return "[" + ",".join("[" + ",".join(v.strip() for v in t.split(",")) + "]" for t in tuples) + "]"


def _value_text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def sweep_points(params, values) -> list[Point]:
    """The points of a sweep: ``params`` (dotted config names) and ``values`` (one tuple per point, a value
    per parameter); no parameters: the one point of a plain run."""
    params, values = list(params or []), [list(v) for v in (values or [])]
    if not params:
        if values:
            raise SettingError("sweep values without sweep parameters (recipe.sweep.params)")
        return [Point("")]
    if not values:
        raise SettingError(f"sweep parameters {params} without values (recipe.sweep.points: one tuple per point)")
    points, names = [], set()
    for i, point in enumerate(values):
        if len(point) != len(params):
            raise SettingError(f"sweep point {i} {tuple(point)} has {len(point)} values for {len(params)} "
                               f"parameters {params}")  # fmt: skip
        name = "_".join(f"{p.rsplit('.', 1)[-1]}-{_value_text(v)}" for p, v in zip(params, point))
        name = re.sub(r"[^A-Za-z0-9._+-]+", "-", name)
        if name in names:
            raise SettingError(f"sweep point {i} {tuple(point)} repeats an earlier point")
        names.add(name)
        points.append(Point(name, tuple(f"{p}={_value_text(v)}" for p, v in zip(params, point))))
    return points


def plan(run_dir: Path, slugs: list[str], combined: bool, points: list[Point], merged: bool = False) -> list[Job]:
    """Every adapter the run evaluates, in order: per point, each feedback's own, then the one trained on
    the combined data, then (``merged``) the concatenation of the two feedbacks' own adapters."""
    if (combined or merged) and len(slugs) != 2:
        raise SettingError(f"a combined or merged adapter needs exactly two feedbacks, got {slugs}")
    sample = {slug: run_dir / "sample" / slug for slug in slugs}
    units = [(slug, (slug,), "trained") for slug in slugs]
    units += [("+".join(slugs), tuple(slugs), COMBINED)] if combined else []
    units += [("+".join(slugs) + "-merged", tuple(slugs), MERGED)] if merged else []
    jobs = []
    for k, point in enumerate(points):
        root = run_dir / "sweep" / point.name if point.name else run_dir
        for unit, feedbacks, label in units:
            jobs.append(Job(point, unit, feedbacks, label, root / "train" / unit,
                            {f: root / "eval" / f for f in feedbacks}, tuple(sample[f] for f in feedbacks),
                            f"c3po-{unit}" + (f"-p{k}" if point.name else ""),
                            tuple(root / "train" / f for f in feedbacks) if label == MERGED else ()))  # fmt: skip
    return jobs


def server_lora_rank(configured: int, ranks: list[int], merged: bool) -> int:
    """The student server's max_lora_rank: at least every trained rank, twice the largest one when two
    adapters are merged by concatenation, rounded up to a rank vLLM accepts."""
    need = max([configured, *ranks]) if not merged else max(configured, 2 * max(ranks))
    return next((r for r in VLLM_MAX_LORA_RANKS if r >= need), need)


# ---- the comparison --------------------------------------------------------------------------------


def comparison_rows(run_dir: Path, points: list[Point]) -> list[dict]:
    """One row per evaluation JSON of the run (every point's, and the prompting baselines')."""
    rows = []
    roots = [(p.name, run_dir / "sweep" / p.name if p.name else run_dir) for p in points]
    if points[0].name:
        roots.append(("", run_dir))  # the prompting baselines do not depend on a point
    for point, root in roots:
        for path in sorted(root.glob("eval/*/*.json")):
            r = json.loads(path.read_text())
            summaries = {s: r["sets"][s]["summary"] for s in SETS}
            rows.append({"point": point or "-", "feedback": r["feedback"], "model": r.get("label", r["method"]),
                         "type": r["type"], "adherence": r["adherence"],
                         "overgeneralization_near": r["overgeneralization_near"],
                         "overgeneralization_out": r["overgeneralization_out"],
                         "ties": {s: summaries[s]["tie_rate"] for s in SETS},
                         "n_judged": {s: summaries[s].get("n_judged") for s in SETS},
                         "all_ties": {s: summaries[s].get("tie_reasons", {}) for s in SETS
                                      if summaries[s]["tie_rate"] == 1.0},
                         "file": str(path)})  # fmt: skip
    return rows


def comparison_table(rows: list[dict]) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    table = [("point", "feedback", "model", "type", "adherence", "overgen. near", "overgen. out",
              "ties in/near/out", "judged in/near/out")]  # fmt: skip
    for r in rows:
        table.append((r["point"], r["feedback"], r["model"], r["type"], fmt(r["adherence"]),
                      fmt(r["overgeneralization_near"]), fmt(r["overgeneralization_out"]),
                      "/".join(fmt(r["ties"][s]) for s in SETS), "/".join(str(r["n_judged"][s]) for s in SETS)))  # fmt: skip
    # a scope where every judged prompt was a tie says what the ties were, instead of reading like a result
    notes = []
    for r in rows:
        at = "" if r["point"] == "-" else f" @ {r['point']}"
        for scope, reasons in r.get("all_ties", {}).items():
            why = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in reasons.items()) or "reasons not recorded"
            notes.append(f"{r['feedback']} [{r['model']}]{at} {scope}: all {r['n_judged'][scope]} judged prompts are "
                         f"ties ({why})")  # fmt: skip
    return "\n".join([format_table(table), *notes])


def write_comparison(run_dir: Path, rows: list[dict], title: str) -> str:
    """``RUN_DIR/comparison.md`` (the table), ``.json`` (the rows) and ``.png`` (the plot); returns the table."""
    table = comparison_table(rows)
    (run_dir / "comparison.md").write_text(f"# {title}\n\n```\n{table}\n```\n")
    (run_dir / "comparison.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot_comparison(rows, title, run_dir / "comparison.png")
    return table


def plot_comparison(rows: list[dict], title: str, path: Path) -> None:
    """One panel per feedback; per (point, model) three bars (adherence, overgeneralization near/out),
    each with its tie share stacked on top, hatched. The legend sits below the panels, off the data."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feedbacks = list(dict.fromkeys(r["feedback"] for r in rows))
    if not feedbacks:
        return
    metrics = (("adherence", "in_scope", "#2a7fba", "in-scope adherence"),
               ("overgeneralization_near", "near_scope", "#d9822b", "near-scope overgen."),
               ("overgeneralization_out", "out_of_scope", "#7a5195", "out-of-scope overgen."))  # fmt: skip
    width = max(5.0, 1.1 * max(sum(r["feedback"] == f for r in rows) for f in feedbacks) + 1.5)
    fig, axes = plt.subplots(len(feedbacks), 1, figsize=(width, 2.8 * len(feedbacks) + 0.9), squeeze=False)
    for ax, feedback in zip(axes[:, 0], feedbacks):
        mine = [r for r in rows if r["feedback"] == feedback]
        for j, (key, set_name, color, label) in enumerate(metrics):
            xs = [i + (j - 1) * 0.27 for i in range(len(mine))]
            applied = [r[key] or 0.0 for r in mine]
            ties = [r["ties"][set_name] or 0.0 for r in mine]
            ax.bar(xs, applied, width=0.25, color=color, label=label)
            ax.bar(xs, ties, width=0.25, bottom=applied, color="white", edgecolor=color, hatch="///",
                   label="hatched: tie (not counted)" if j == 0 else None)  # fmt: skip
        ax.set_xticks(range(len(mine)))
        ax.set_xticklabels([r["model"] if r["point"] == "-" else f"{r['model']}\n{r['point']}" for r in mine], fontsize=7)
        ax.set_ylim(0, 1.0)
        ax.set_ylabel("share of judged prompts", fontsize=8)
        n = mine[0]["n_judged"]["in_scope"]
        ax.set_title(f"{feedback} ({mine[0]['type']}; in-scope n={n})", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
