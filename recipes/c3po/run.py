"""``bash run_c3po.sh``: C3PO — learn one sentence of feedback without overgeneralizing.

Settings: ``recipes/c3po/config/c3po.yaml`` (the reference configuration on the preference trainer's
config; the ``method`` group picks the objective) and ``c3po_cpu.yaml`` (the CPU default). The run:
the student (LoRA-enabled) and teacher servers, sampling (``verlkit.c3po.sample``), then per feedback:
its training parquet, one LoRA adapter trained by ``verlkit.preference.train``, the adapter exported,
loaded into the running student server and evaluated (``verlkit.c3po.evaluate``); a table at the end.

| method | objective (reference-methods.md §4.4) |
|---|---|
| ``lcdpo`` | C3PO: DPO(revised ≻ baseline) + σ_soft·L_KD(out-of-scope) + σ_hard·L_KD(near) |
| ``dpo`` | DPO on the in-scope pairs only |
| ``sft`` | SFT on the revised in-scope responses (supervised context distillation) |
| ``sft_neg`` | SFT + NLL of the baseline responses on near/out-of-scope prompts (σ 0.5/0.5) |
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

from recipes.c3po.plan import MERGED, comparison_rows, plan, server_lora_rank, sweep_points, sweep_values, write_comparison
from recipes.checkpoints import latest_checkpoint, merge_checkpoint
from recipes.compose import Setting, SettingError, boolean, integer, items, number, quoted, tool_arguments
from recipes.driver import RecipeError, devices_except, gpu_indices, log, parse_devices
from recipes.driver import main as run_recipe
from recipes.settings import RecipeSettings

CONFIG_DIR = Path(__file__).resolve().parent / "config"
METHODS = ("lcdpo", "dpo", "sft", "sft_neg")
USAGE = ("usage: bash run_c3po.sh [student_model] [feedback_prefix] [lcdpo|dpo|sft|sft_neg] [second_feedback_prefix] "
         "[-- trainer overrides]")
TRAINER = "verlkit.preference.train"


def _method(raw: str) -> str:
    if raw not in METHODS:
        raise SettingError(f"unknown method {raw!r}")
    return raw


POSITIONAL = (
    ("student_model", Setting("recipe.student")),
    ("feedback_prefix", Setting("recipe.feedback_prefix")),
    ("method", Setting("method", _method)),
    ("second_feedback_prefix", Setting("recipe.second_feedback_prefix")),
)


def constrain_flag(raw) -> str:
    """auto | on | off from a knob or a config value (also true/false, 1/0, yes/no, YAML booleans)."""
    from verlkit.c3po.endpoints import CONSTRAIN_CHOICES

    lowered = str(raw).strip().lower()
    if lowered in CONSTRAIN_CHOICES:
        return lowered
    return "on" if boolean(lowered) else "off"


def constrain_choice(raw: str) -> str:
    """JUDGE_CONSTRAINED as a config value."""
    return quoted(constrain_flag(raw))


# The documented environment knobs (header of run_c3po.sh, docs/c3po.md).
KNOBS = {
    "RUN_DIR": Setting("recipe.run_dir"),
    "LOGGER": Setting("trainer.logger", items),
    "TEACHER": Setting("recipe.teacher.model"),
    "TEACHER_URL": Setting("recipe.teacher.url"),
    "TEACHER_API_KEY_ENV": Setting("recipe.teacher.api_key_env"),
    "TEACHER_NAME": Setting("recipe.teacher.served_name"),
    "TEACHER_TP": Setting("recipe.teacher.tensor_parallel_size", integer),
    "TEACHER_DEVICES": Setting("recipe.teacher.devices"),
    "STUDENT_DEVICES": Setting("recipe.student_server.devices"),
    "TRAIN_DEVICES": Setting("recipe.train_devices"),
    "JUDGE_URL": Setting("recipe.judge.url"),
    "JUDGE_MODEL": Setting("recipe.judge.model"),
    "JUDGE_API_KEY_ENV": Setting("recipe.judge.api_key_env"),
    "JUDGE_CONSTRAINED": Setting("recipe.judge.constrained", constrain_choice),
    "FEEDBACK_FILE": Setting("recipe.feedback_file"),
    "FEEDBACK_CATEGORY": Setting("recipe.feedback_category"),
    "SECOND_FEEDBACK_PREFIX": Setting("recipe.second_feedback_prefix"),
    "SWEEP_PARAMS": Setting("recipe.sweep.params", items),
    "SWEEP_VALUES": Setting("recipe.sweep.points", sweep_values),
    "MERGE_ADAPTERS": Setting("recipe.merge_adapters", lambda raw: "true" if boolean(raw) else "false"),
    "GENERAL_PROMPTS": Setting("recipe.sample.general_prompts"),
    "MAX_FEEDBACKS": Setting("recipe.max_feedbacks", integer),
    "NUM_PROMPTS": Setting("recipe.sample.num_in_scope", integer),
    "PROMPTS_PER_CATEGORY": Setting("recipe.sample.prompts_per_category", integer),
    "TEST_FRACTION": Setting("recipe.sample.test_fraction", number),
    "EVAL_LIMIT": Setting("recipe.eval.limit", integer),
    "EVAL_BASELINES": Setting("recipe.baselines", items),
    "NPROC": Setting("recipe.nproc", integer),
    "NNODES": Setting("recipe.nnodes", integer),
}


def probe_judge(url: str, model: str, api_key_env: str | None, constrained: str) -> None:
    """With the judge constrained, one request with its constraint checks that the server enforces it
    (``templated.probe_server``): a refused constraint stops the run here, not as a run of unusable
    verdicts."""
    from verl.utils.reward_score.options import RewardOptionsError
    from verl.utils.reward_score.templated import probe_server
    from verlkit.c3po.constraints import judge_constraint
    from verlkit.c3po.endpoints import use_constraints
    from verlkit.c3po.feedback import Feedback
    from verlkit.c3po.prompts import judge_messages
    from verlkit.clients.llm import close_session, get_client
    from verlkit.clients.settings import ClientSettings
    from verlkit.clients.structured import StructuredOutput

    if not use_constraints(constrained, url):
        return
    c = judge_constraint()
    feedback = Feedback(content="Be concise", domain="emails", effect="be more concise", name="probe")
    messages = judge_messages(feedback, "Email my boss that I am late.", "I am late, sorry.",
                              "Dear boss, I am writing to let you know that I will be late today.")
    client = get_client(ClientSettings(url=url, model=model, api_key_env=api_key_env, timeout_s=120.0,
                                       max_retries=2).client_config())  # fmt: skip
    try:
        probe_server(client, messages, constraint=StructuredOutput(regex=c.regex, max_tokens=c.max_tokens),
                     top_logprobs=None, reward="c3po judge")  # fmt: skip
    except RewardOptionsError as e:
        raise RecipeError(f"recipe.judge: {e}", code=2) from None
    finally:
        close_session()


def place_devices(all_gpus: list[str], student: list[str], teacher: list[str], train: list[str], hosted_teacher: bool):
    """(student server, teacher server, training) GPUs: the student server takes the second-to-last GPU
    (the only one on a 1-GPU machine), a served teacher the last one, training the rest."""
    student = student or (all_gpus[-2:-1] if len(all_gpus) >= 2 else all_gpus[:1])
    teacher = [] if hosted_teacher else (teacher or all_gpus[-1:])
    train = train or devices_except(all_gpus, student + teacher)
    if not train:
        raise RecipeError(f"no GPU left for training (student server: {','.join(student)}, teacher: "
                          f"{','.join(teacher) or 'hosted'})", code=2)  # fmt: skip
    return student, teacher, train


def judge_endpoint(judge, teacher_url: str, teacher_name: str, teacher_key_env: str | None):
    """(url, model, key env) of the judge: a separate judge (JUDGE_URL) brings its own key; the default
    judge is the teacher, with the teacher's key. The model defaults to the teacher's name either way."""
    if judge.url:
        return judge.url, judge.model or teacher_name, judge.api_key_env or None
    return teacher_url, judge.model or teacher_name, teacher_key_env or None


def batch_rows(rows: int, configured: int, nproc: int) -> int:
    """Rows per step: at most the feedback's rows (a larger batch would give no step at all), rounded up
    to whole rows per process."""
    batch = max(1, min(rows, configured))
    return batch + (-batch) % nproc


def selected_feedbacks(cfg) -> list[str]:
    """The slugs of the feedbacks the run trains, in order (RecipeError code 2 if none or unreadable). With
    a second feedback prefix: the first feedback each prefix selects (within the category), two distinct."""
    from verlkit.c3po.feedback import load_feedbacks, select_feedbacks
    from verlkit.c3po.general_prompts import BUNDLED_FEEDBACKS
    from verlkit.records import InputError

    r = cfg.recipe
    try:
        feedbacks = load_feedbacks([Path(r.feedback_file or BUNDLED_FEEDBACKS)])
        if r.second_feedback_prefix:
            if not r.feedback_prefix:
                raise RecipeError("a second feedback prefix needs a first one (2nd argument)", code=2)
            slugs = [select_feedbacks(feedbacks, prefix, r.feedback_category)[0].slug
                     for prefix in (r.feedback_prefix, r.second_feedback_prefix)]  # fmt: skip
            if slugs[0] == slugs[1]:
                raise RecipeError(f"both feedback prefixes select {slugs[0]}: a second feedback must differ", code=2)
            return slugs
        chosen = select_feedbacks(feedbacks, r.feedback_prefix or None, r.feedback_category)
    except InputError as e:
        raise RecipeError(f"run_c3po: {e}", code=2) from None
    slugs = [f.slug for f in chosen][: r.max_feedbacks or None]
    if not slugs:
        raise RecipeError("no feedback selected", code=2)
    return slugs


def body(stack: contextlib.ExitStack, argv) -> int:
    from verlkit.serving import ServerSpec, ServerStartError, load_lora_adapter

    s = RecipeSettings("c3po", CONFIG_DIR, KNOBS, POSITIONAL, argv, USAGE)
    s.require({"recipe.student": "a student model (1st argument)"})
    teacher = s.cfg.recipe.teacher
    if not (teacher.url or teacher.model):
        raise RecipeError(f"set TEACHER (a model directory) or TEACHER_URL (a hosted API). {USAGE}", code=2)
    student_devices, teacher_devices, train_devices = [], [], []
    if s.profile == "gpu":
        student_devices, teacher_devices, train_devices = place_devices(
            gpu_indices(), parse_devices(s.cfg.recipe.student_server.devices), parse_devices(teacher.devices),
            parse_devices(s.cfg.recipe.train_devices), bool(teacher.url))  # fmt: skip
    nproc = s.cfg.recipe.nproc or len(train_devices)
    slugs = selected_feedbacks(s.cfg)
    try:
        points = sweep_points(s.cfg.recipe.sweep.params, s.cfg.recipe.sweep.points)
    except SettingError as e:
        raise RecipeError(f"run_c3po: {e}", code=2) from None
    for point in (p for p in points if p.name):  # a misspelt parameter stops the run before anything starts
        try:
            s.compose(*point.overrides)
        except Exception as e:  # noqa: BLE001 - hydra's override and config errors have no common base
            raise RecipeError(f"run_c3po: sweep point {point.name}: {e}", code=2) from None
    combined = bool(s.cfg.recipe.second_feedback_prefix)
    merged = combined and bool(s.cfg.recipe.merge_adapters)
    run = s.open_run(stack)
    # the models to load (a hosted teacher, and the judge, are names at their APIs)
    s.resolve_models({"recipe.student": "student", **({} if teacher.url else {"recipe.teacher.model": "teacher"})})
    cfg, profile = s.cfg, s.profile
    teacher, method = cfg.recipe.teacher, cfg.recipe.method
    jobs = plan(run.run_dir, slugs, combined, points, merged)
    log(f"feedbacks: {' '.join(slugs)}{' (+ one adapter on their combined data)' if combined else ''}; method: "
        f"{method}; sweep points: {', '.join(p.name for p in points if p.name) or 'none'}")  # fmt: skip

    # --- servers (started side by side where they may: Run.serve_together): the student writes the completions
    # and serves the trained adapters; the teacher writes categories and prompts and (by default) judges
    ss = cfg.recipe.student_server
    gpu = lambda devices, memory: dict(devices=",".join(devices), gpu_memory_utilization=memory) if profile == "gpu" else {}  # noqa: E731
    student_spec = ServerSpec(model=cfg.recipe.student, name="student", served_model_name="student",
                              enable_lora=True, max_lora_rank=server_lora_rank(ss.max_lora_rank, lora_ranks(cfg, points), merged),
                              max_model_len=ss.max_model_len, run_dir=run.run_dir, ready_timeout_s=ss.ready_timeout_s,
                              **gpu(student_devices, ss.gpu_memory_utilization))  # fmt: skip
    if teacher.url:
        spec = ServerSpec(model=teacher.model or "external", name="teacher", external_url=teacher.url,
                          served_model_name=teacher.served_name, run_dir=run.run_dir, ready_timeout_s=teacher.ready_timeout_s)  # fmt: skip
    else:
        spec = ServerSpec(model=teacher.model, name="teacher", served_model_name="teacher", max_model_len=teacher.max_model_len,
                          run_dir=run.run_dir, ready_timeout_s=teacher.ready_timeout_s,
                          tensor_parallel_size=teacher.tensor_parallel_size if profile == "gpu" else 1,
                          **gpu(teacher_devices, teacher.gpu_memory_utilization))  # fmt: skip
    student, teacher_server = run.serve_together(student_spec, spec)
    judge_url, judge_model, judge_key = judge_endpoint(cfg.recipe.judge, teacher_server.base_url,
                                                       teacher_server.model_name, teacher.api_key_env)  # fmt: skip
    try:
        judge_constrained = constrain_flag(cfg.recipe.judge.constrained)
    except SettingError as e:
        raise RecipeError(f"recipe.judge.constrained: {e}", code=2) from None
    judge = ["--judge-url", judge_url, "--judge-model", judge_model, "--judge-constrained", judge_constrained]
    judge += ["--judge-api-key-env", judge_key] if judge_key else []
    probe_judge(judge_url, judge_model, judge_key, judge_constrained)

    # --- sampling
    sample_dir = run.run_dir / "sample"
    args = ["--out", sample_dir, "--teacher-url", teacher_server.base_url, "--teacher-model", teacher_server.model_name,
            "--completion-url", student.base_url, "--completion-model", student.model_name,
            *tool_arguments(cfg.recipe.sample)]  # fmt: skip
    args += ["--feedback", cfg.recipe.feedback_file] if cfg.recipe.feedback_file else []
    args += [a for slug in slugs for a in ("--feedback-name", slug)]  # exactly the run's selection
    args += ["--teacher-api-key-env", teacher.api_key_env] if teacher.api_key_env else []
    log(f"sampling: python -m verlkit.c3po.sample {' '.join(map(str, args))}")
    from verlkit.c3po.sample import main as sample

    if sample([str(a) for a in args]):
        log(f"sampling reported failures (see {sample_dir}/*/report.json)")

    # --- per job (feedback or feedback pair, at each sweep point): train a LoRA adapter on the shared
    # sampled data, load it into the student server, evaluate it on each of its feedbacks
    from verlkit.c3po.evaluate import main as evaluate

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(train_devices)} if profile == "gpu" else None
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"]
    evaluated = 0
    for job in jobs:
        work = job.train_dir
        where = f"{job.unit}" + (f" @ {job.point.name}" if job.point.name else "")
        if job.label == MERGED:
            if not merge_adapters(job, where):
                continue
        elif not train_adapter(run, s, job, where, launcher, env, nproc):
            continue
        try:
            load_lora_adapter(student.base_url, job.adapter, work / "adapter")
        except ServerStartError as e:
            raise RecipeError(f"run_c3po: {e}") from None
        log(f"{where}: adapter {work / 'adapter'} loaded into the student server as '{job.adapter}'")
        for slug, feedback_sample in zip(job.feedbacks, job.sample_dirs):
            trained = ["--sample-dir", feedback_sample, "--out", job.eval_dirs[slug], "--label", job.label, *judge,
                       *tool_arguments(cfg.recipe.eval), "--method", "trained", "--model-url", student.base_url,
                       "--model-name", job.adapter, "--baseline-url", student.base_url,
                       "--baseline-name", student.model_name,
                       *tracker(run, cfg, job.point.name, slug, job.label)]  # fmt: skip
            if evaluate([str(a) for a in trained]) == 0:
                evaluated += 1
    # the prompting baselines do not depend on training: once per feedback, under RUN_DIR/eval/
    for slug in slugs:
        for baseline in cfg.recipe.baselines:
            evaluate([str(a) for a in ["--sample-dir", sample_dir / slug, "--out", run.run_dir / "eval" / slug, *judge,
                                       *tool_arguments(cfg.recipe.eval), "--method", baseline,
                                       *tracker(run, cfg, "", slug, baseline)]])  # fmt: skip
    title = (f"C3PO {method}: student {Path(str(cfg.recipe.student)).name}, data {sample_dir}, "
             f"N = {cfg.recipe.eval.limit} test prompts per set")  # fmt: skip
    print(write_comparison(run.run_dir, comparison_rows(run.run_dir, points), title), flush=True)
    if not evaluated:
        raise RecipeError("no feedback was trained and evaluated")
    log(f"comparison: {run.run_dir / 'comparison.md'} (.json, .png); evaluation JSON and plots: "
        f"<run or sweep point>/eval/<feedback>/; run directory: {run.run_dir}")  # fmt: skip
    return 0


def tracker(run, cfg, point: str, slug: str, label: str) -> list[str]:
    """The evaluation's tracker options: the training runs' project and run group, one run per evaluation."""
    name = "-".join(filter(None, (run.experiment, point, slug, "eval", label)))
    return run.evaluation_tracker(cfg.trainer.logger, cfg.trainer.project_name, name)


def train_adapter(run, s, job, where: str, launcher: list[str], env, nproc: int) -> bool:
    """Train the job's LoRA adapter on its training data and export it to ``<train dir>/adapter``; False
    (logged) when there is no training data."""
    cfg, work = s.cfg, job.train_dir
    counts = training_data(job, work / "train.parquet")
    if counts is None:
        return False
    log(f"{where}: {work / 'train.parquet'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    # the run's name and the process count come before the user's overrides; the job's files and the
    # sweep point's values after them (a sweep point wins)
    experiment = "-".join(filter(None, (run.experiment, job.point.name, job.unit)))
    s.defaults = [f"trainer.experiment_name={quoted(experiment)}", f"trainer.n_gpus_per_node={nproc}",
                  f"trainer.nnodes={cfg.recipe.nnodes}"]  # fmt: skip
    overrides = s.overrides(f"data.train_files={quoted(work / 'train.parquet')}",
                            f"data.train_batch_size={batch_rows(sum(counts.values()), cfg.data.train_batch_size, nproc)}",
                            f"trainer.default_local_dir={quoted(work / 'checkpoints')}", *job.point.overrides)  # fmt: skip
    rc = run.train(where, TRAINER, CONFIG_DIR, s.name, overrides, work, launcher=launcher, env=env)
    if rc:
        raise RecipeError(f"{where}: training failed (exit status {rc}; log: {work / 'train.log'})", code=rc)
    with contextlib.redirect_stdout(sys.stderr):
        run.summary(work / "train.log", work / "metrics.json", ("train/loss", "pref/"))
    # verl's merger writes the base weights and the adapter; only the adapter is new
    merge_checkpoint(run, latest_checkpoint(work / "checkpoints"), work / "export", work / "export.log")
    shutil.rmtree(work / "adapter", ignore_errors=True)
    (work / "export" / "lora_adapter").rename(work / "adapter")
    shutil.rmtree(work / "export")
    return True


def merge_adapters(job, where: str) -> bool:
    """The merged job's adapter: the two feedbacks' own adapters of its point concatenated (their exact
    sum; verlkit.c3po.adapters). False (logged) when one of them was not trained."""
    from verlkit.c3po.adapters import concatenate_adapters

    sources = [d / "adapter" for d in job.merge_of]
    if not all((d / "adapter_config.json").exists() for d in sources):
        log(f"{where}: not merged: not every feedback's own adapter was trained")
        return False
    concatenate_adapters(sources, job.train_dir / "adapter")
    log(f"{where}: {' + '.join(map(str, sources))} concatenated into {job.train_dir / 'adapter'}")
    return True


def lora_ranks(cfg, points) -> list[int]:
    """Every LoRA rank the run trains (the config's, and a sweep's over model.lora_rank)."""
    ranks = [int(cfg.model.lora_rank)]
    for point in points:
        ranks += [int(o.split("=", 1)[1]) for o in point.overrides if o.startswith("model.lora_rank=")]
    return ranks


def training_data(job, out: Path) -> dict[str, int] | None:
    """The job's training parquet (one feedback's, or the combined data of two) from the shared sampled
    data; rows per kind, or None (logged) when a feedback has no training pair."""
    import pyarrow.parquet as pq

    from data_prep.c3po import ROW_KINDS, NoTrainingData, build_combined_training_file, build_training_file
    from verlkit.records import InputError

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        if len(job.sample_dirs) == 1:
            build_training_file(job.sample_dirs[0], out)
        else:
            build_combined_training_file(list(job.sample_dirs), out)
    except NoTrainingData as e:
        log(f"{job.unit}: no training data ({e}); skipped")
        return None
    except InputError as e:
        raise RecipeError(f"{job.unit}: the sampled data cannot be trained on: {e}", code=1) from None
    kinds = pq.read_table(out, columns=["kind"]).column("kind").to_pylist()
    return {kind: kinds.count(kind) for kind in ROW_KINDS}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_recipe(lambda stack: body(stack, argv))


if __name__ == "__main__":
    sys.exit(main())
