"""run_c3po.sh's second feedback, category selection and sweeps (issue 17.1): the jobs a run plans (one run
directory per sweep point, the sampled data shared), the driver's single sampling, and the comparison
table and plot, without launching anything."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_c3po_recipe_on_cpu import compose_c3po

from recipes.c3po import plan as c3po_plan
from recipes.c3po import run as c3po
from recipes.compose import SettingError
from recipes.driver import RecipeError

GRID = [[1e-4, 8], [1e-4, 16], [5e-4, 8], [5e-4, 16]]  # a 2x2 sweep: one tuple per point


def test_sweep_values_are_tuples_one_per_point():
    assert c3po_plan.sweep_values("(1e-4,8),(5e-4, 16)") == "[[1e-4,8],[5e-4,16]]"
    for bad in ("1e-4,8", "(1e-4,8) 5", ""):
        with pytest.raises(SettingError, match="expected tuples"):
            c3po_plan.sweep_values(bad)


def test_knobs_and_arguments_compose_the_sweep_the_second_feedback_and_the_category():
    cfg = compose_c3po(["/s", "concise", "lcdpo", "bon"], {
        "SWEEP_PARAMS": "optim.lr,model.lora_rank", "SWEEP_VALUES": "(1e-4,8),(1e-4,16),(5e-4,8),(5e-4,16)",
        "FEEDBACK_CATEGORY": "regional"})  # fmt: skip
    assert list(cfg.recipe.sweep.params) == ["optim.lr", "model.lora_rank"]
    assert [list(v) for v in cfg.recipe.sweep.points] == GRID
    assert (cfg.recipe.feedback_prefix, cfg.recipe.second_feedback_prefix) == ("concise", "bon")
    assert cfg.recipe.feedback_category == "regional"
    assert c3po.selected_feedbacks(cfg) == ["concise-boss-emails", "bon-appetit-recipes"]


def test_a_2x2_sweep_has_one_run_directory_per_point_and_shares_the_sampled_data():
    points = c3po_plan.sweep_points(["optim.lr", "model.lora_rank"], GRID)
    assert [p.name for p in points] == ["lr-0.0001_lora_rank-8", "lr-0.0001_lora_rank-16", "lr-0.0005_lora_rank-8",
                                        "lr-0.0005_lora_rank-16"]  # fmt: skip
    assert points[3].overrides == ("optim.lr=0.0005", "model.lora_rank=16")
    run = Path("/runs/c")
    jobs = c3po_plan.plan(run, ["concise-boss-emails", "bon-appetit-recipes"], True, points)
    assert len(jobs) == 4 * 3  # per point: each feedback's adapter and the combined one
    roots = {job.train_dir.parents[1] for job in jobs}
    assert roots == {run / "sweep" / p.name for p in points}
    assert len({job.train_dir for job in jobs}) == 12 and len({job.adapter for job in jobs}) == 12
    combined = [job for job in jobs if job.label == "combined"]
    assert [job.train_dir for job in combined] == [run / "sweep" / p.name / "train" / "concise-boss-emails+bon-appetit-recipes"
                                                   for p in points]  # fmt: skip
    assert combined[0].eval_dirs == {"concise-boss-emails": run / "sweep" / points[0].name / "eval" / "concise-boss-emails",
                                     "bon-appetit-recipes": run / "sweep" / points[0].name / "eval" / "bon-appetit-recipes"}  # fmt: skip
    # every job reads the run's one sample directory per feedback
    assert {d for job in jobs for d in job.sample_dirs} == {run / "sample" / "concise-boss-emails",
                                                            run / "sample" / "bon-appetit-recipes"}  # fmt: skip
    # each point's values reach the trainer's config (they come last, after the user's overrides)
    for point, (lr, rank) in zip(points, GRID):
        cfg = compose_c3po(["/s", "", "", "", "--", "optim.lr=1", *point.overrides])
        assert (cfg.optim.lr, cfg.model.lora_rank) == (lr, rank)


def test_no_sweep_is_one_point_in_the_run_directory_itself():
    [point] = c3po_plan.sweep_points([], [])
    jobs = c3po_plan.plan(Path("/r"), ["a"], False, [point])
    assert [(j.train_dir, j.eval_dirs, j.adapter, j.label) for j in jobs] == [
        (Path("/r/train/a"), {"a": Path("/r/eval/a")}, "c3po-a", "trained")]
    with pytest.raises(SettingError, match="2 values for 1 parameters"):
        c3po_plan.sweep_points(["optim.lr"], [[1, 2]])
    with pytest.raises(SettingError, match="without values"):
        c3po_plan.sweep_points(["optim.lr"], [])
    with pytest.raises(SettingError, match="exactly two feedbacks"):
        c3po_plan.plan(Path("/r"), ["a", "b", "c"], True, [point])


def test_second_feedback_selection():
    cfg = compose_c3po(["/s", "bon", "", "concise"])
    assert c3po.selected_feedbacks(cfg) == ["bon-appetit-recipes", "concise-boss-emails"]
    with pytest.raises(RecipeError, match="both feedback prefixes select concise-boss-emails"):
        c3po.selected_feedbacks(compose_c3po(["/s", "concise", "", "Be more"]))
    with pytest.raises(RecipeError, match="needs a first one"):
        c3po.selected_feedbacks(compose_c3po(["/s", "", "", "bon"]))
    with pytest.raises(RecipeError, match="no feedback is in category 'local'"):
        c3po.selected_feedbacks(compose_c3po(["/s"], {"FEEDBACK_CATEGORY": "local"}))
    cfg = compose_c3po(["/s"], {"FEEDBACK_CATEGORY": "quantitative", "MAX_FEEDBACKS": "2"})
    assert c3po.selected_feedbacks(cfg) == ["bon-appetit-recipes", "emoji-texts-to-friends"]


def models(tmp_path) -> tuple[str, str]:
    """Student and teacher model directories (never loaded: the servers are stood in for)."""
    for name in ("student", "teacher"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    return str(tmp_path / "student"), str(tmp_path / "teacher")


def test_the_driver_samples_once_for_every_point_and_combination(monkeypatch, tmp_path):
    """The driver on a 2x2 sweep with a second feedback: the sampler runs once, and all 12 jobs ask for
    their training data from that one sample directory (servers and training are stood in for: every
    job here reports no training data, so nothing is trained)."""
    from recipes import driver, settings

    monkeypatch.setenv("VK_PROFILE", "cpu")
    monkeypatch.setattr(settings, "cpu_profile_environment", lambda: None)
    served = SimpleNamespace(base_url="http://127.0.0.1:9/v1", model_name="m")
    monkeypatch.setattr(driver.Run, "serve_together", lambda self, *specs: [served for _ in specs])
    monkeypatch.setattr(c3po, "probe_judge", lambda *args: None)  # no judge server here
    sampler_calls, jobs = [], []

    def sample(argv):
        sampler_calls.append(argv)
        return 0

    monkeypatch.setattr("verlkit.c3po.sample.main", sample)
    monkeypatch.setattr(c3po, "training_data", lambda job, out: jobs.append(job))
    student, teacher = models(tmp_path)
    env = {"SWEEP_PARAMS": "optim.lr,model.lora_rank", "SWEEP_VALUES": "(1e-4,8),(1e-4,16),(5e-4,8),(5e-4,16)",
           "TEACHER": teacher, "RUN_DIR": str(tmp_path / "run")}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RecipeError, match="no feedback was trained"):
        c3po.body(__import__("contextlib").ExitStack(), [student, "concise", "lcdpo", "bon"])
    assert len(sampler_calls) == 1
    assert sampler_calls[0].count("--feedback-name") == 2 and "bon-appetit-recipes" in sampler_calls[0]
    assert len(jobs) == 12
    assert {d for job in jobs for d in job.sample_dirs} == {tmp_path / "run" / "sample" / "concise-boss-emails",
                                                            tmp_path / "run" / "sample" / "bon-appetit-recipes"}  # fmt: skip
    assert (tmp_path / "run" / "comparison.md").exists()


def test_a_misspelt_sweep_parameter_stops_the_run_before_anything_starts(monkeypatch, tmp_path):
    from recipes import driver, settings

    monkeypatch.setenv("VK_PROFILE", "cpu")
    monkeypatch.setattr(settings, "cpu_profile_environment", lambda: None)
    monkeypatch.setattr(driver.Run, "open", lambda *a, **k: pytest.fail("the run directory was opened"))
    monkeypatch.setenv("SWEEP_PARAMS", "optim.learning_rate")
    monkeypatch.setenv("SWEEP_VALUES", "(1e-4)")
    monkeypatch.setenv("TEACHER", "/t")
    with pytest.raises(RecipeError, match="sweep point learning_rate-0.0001: Could not override .optim.learning_rate."):
        c3po.body(None, ["/s"])


def result(feedback, label, adherence, near, out, ties, n=4):
    sets = dict(zip(("in_scope", "near_scope", "out_of_scope"), ties))
    return {"feedback": feedback, "method": "trained", "label": label, "type": "quantitative", "adherence": adherence,
            "overgeneralization_near": near, "overgeneralization_out": out,
            "sets": {s: {"summary": {"tie_rate": t, "n_judged": n}} for s, t in sets.items()}}  # fmt: skip


def test_the_comparison_has_one_row_per_point_feedback_and_model_with_ties_apart(tmp_path):
    points = c3po_plan.sweep_points(["optim.lr"], [[1e-4], [5e-4]])
    files = {
        f"sweep/{points[0].name}/eval/a/trained.json": result("a", "trained", 0.5, 0.25, 0.0, (0.25, 0.5, 1.0)),
        f"sweep/{points[0].name}/eval/a/combined.json": result("a", "combined", 0.75, 0.5, None, (0.0, 0.0, 0.0)),
        f"sweep/{points[1].name}/eval/a/trained.json": result("a", "trained", 1.0, 0.0, 0.0, (0.0, 0.0, 0.0)),
        "eval/a/in_context.json": {**result("a", "in_context", 0.25, 0.0, 0.0, (0.5, 0.5, 0.5)), "method": "in_context"},
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(data))
    rows = c3po_plan.comparison_rows(tmp_path, points)
    table = c3po_plan.write_comparison(tmp_path, rows, "C3PO lcdpo: student tiny, N = 4").splitlines()
    assert [line.split() for line in table[1:]] == [
        ["lr-0.0001", "a", "combined", "quantitative", "0.75", "0.50", "n/a", "0.00/0.00/0.00", "4/4/4"],
        ["lr-0.0001", "a", "trained", "quantitative", "0.50", "0.25", "0.00", "0.25/0.50/1.00", "4/4/4"],
        ["lr-0.0005", "a", "trained", "quantitative", "1.00", "0.00", "0.00", "0.00/0.00/0.00", "4/4/4"],
        ["-", "a", "in_context", "quantitative", "0.25", "0.00", "0.00", "0.50/0.50/0.50", "4/4/4"],
        "a [trained] @ lr-0.0001 out_of_scope: all 4 judged prompts are ties (reasons not recorded)".split(),
    ]
    assert "C3PO lcdpo: student tiny, N = 4" in (tmp_path / "comparison.md").read_text()
    assert len(json.loads((tmp_path / "comparison.json").read_text())) == 4
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_merged_adapters_are_planned_after_the_singles_and_need_twice_the_rank():
    jobs = c3po_plan.plan(Path("/r"), ["a", "b"], True, [c3po_plan.Point("")], merged=True)
    assert [(j.unit, j.label) for j in jobs] == [("a", "trained"), ("b", "trained"), ("a+b", "combined"),
                                                 ("a+b-merged", "merged")]  # fmt: skip
    assert jobs[3].merge_of == (Path("/r/train/a"), Path("/r/train/b")) and jobs[0].merge_of == ()
    assert c3po_plan.server_lora_rank(64, [64], merged=False) == 64
    assert c3po_plan.server_lora_rank(64, [64], merged=True) == 128
    assert c3po_plan.server_lora_rank(64, [8, 100], merged=False) == 128  # vLLM accepts 128, not 100


def test_the_driver_merges_the_two_trained_adapters_and_evaluates_them_on_both_feedbacks(monkeypatch, tmp_path):
    """Training and serving are stood in for (the trained adapters are random PEFT files); what runs for
    real: the plan, the concatenation, and the order load -> evaluate with the right labels."""
    from support.lora_files import write_adapter

    from recipes import driver, settings

    monkeypatch.setenv("VK_PROFILE", "cpu")
    monkeypatch.setattr(settings, "cpu_profile_environment", lambda: None)
    specs, events = [], []

    def serve(self, spec):
        specs.append(spec)
        return SimpleNamespace(base_url="http://127.0.0.1:9/v1", model_name=spec.name)

    def train(run, s, job, where, launcher, env, nproc):
        write_adapter(job.train_dir / "adapter", rank=4, alpha=8, seed=len(events))
        events.append(("trained", job.unit))
        return True

    monkeypatch.setattr(driver.Run, "serve", serve)
    monkeypatch.setattr(driver.Run, "serve_together", lambda self, *specs: [serve(self, spec) for spec in specs])
    monkeypatch.setattr(c3po, "probe_judge", lambda *args: None)  # no judge server here
    monkeypatch.setattr("verlkit.c3po.sample.main", lambda argv: 0)
    monkeypatch.setattr(c3po, "train_adapter", train)
    monkeypatch.setattr("verlkit.serving.load_lora_adapter", lambda url, name, path: events.append(("loaded", name)))
    monkeypatch.setattr("verlkit.c3po.evaluate.main", lambda argv: events.append(
        ("evaluated", argv[argv.index("--label") + 1], Path(argv[argv.index("--sample-dir") + 1]).name)) or 0)
    student, teacher = models(tmp_path)
    for key, value in {"TEACHER": teacher, "RUN_DIR": str(tmp_path / "run"), "MERGE_ADAPTERS": "1"}.items():
        monkeypatch.setenv(key, value)
    assert c3po.body(__import__("contextlib").ExitStack(), [student, "concise", "lcdpo", "bon"]) == 0
    assert specs[0].name == "student" and specs[0].max_lora_rank == 128
    merged = "c3po-concise-boss-emails+bon-appetit-recipes-merged"
    assert events[-3:] == [("loaded", merged), ("evaluated", "merged", "concise-boss-emails"),
                           ("evaluated", "merged", "bon-appetit-recipes")]  # fmt: skip
    assert [e for e in events if e[0] == "trained"] == [("trained", "concise-boss-emails"), ("trained", "bon-appetit-recipes"),
                                                        ("trained", "concise-boss-emails+bon-appetit-recipes")]  # fmt: skip
    config = json.loads((tmp_path / "run" / "train" / "concise-boss-emails+bon-appetit-recipes-merged" / "adapter"
                         / "adapter_config.json").read_text())  # fmt: skip
    assert config["r"] == 8
