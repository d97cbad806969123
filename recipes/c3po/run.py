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

from recipes import format_table
from recipes.checkpoints import latest_checkpoint, merge_checkpoint
from recipes.compose import Setting, SettingError, integer, items, number, quoted, tool_arguments
from recipes.driver import RecipeError, devices_except, gpu_indices, log, parse_devices
from recipes.driver import main as run_recipe
from recipes.settings import RecipeSettings

CONFIG_DIR = Path(__file__).resolve().parent / "config"
METHODS = ("lcdpo", "dpo", "sft", "sft_neg")
USAGE = "usage: bash run_c3po.sh [student_model] [feedback_prefix] [lcdpo|dpo|sft|sft_neg] [-- trainer overrides]"
TRAINER = "verlkit.preference.train"


def _method(raw: str) -> str:
    if raw not in METHODS:
        raise SettingError(f"unknown method {raw!r}")
    return raw


POSITIONAL = (
    ("student_model", Setting("recipe.student")),
    ("feedback_prefix", Setting("recipe.feedback_prefix")),
    ("method", Setting("method", _method)),
)

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
    "FEEDBACK_FILE": Setting("recipe.feedback_file"),
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


def build_training_parquet(sample_dir: Path, out: Path) -> dict[str, int]:
    """One feedback's training parquet from its sampled sets (written and validated by data_prep.c3po);
    returns rows per kind. ``NoTrainingData`` when the feedback has no usable in-scope pair."""
    import pyarrow.parquet as pq

    from data_prep.c3po import ROW_KINDS, build_training_file

    kinds = pq.read_table(build_training_file(sample_dir, out), columns=["kind"]).column("kind").to_pylist()
    return {kind: kinds.count(kind) for kind in ROW_KINDS}


def report(eval_dir: Path) -> str:
    """One line per (feedback, method) of the evaluation JSONs under ``eval_dir/<feedback>/``."""
    rows = [("feedback", "method", "type", "adherence", "overgen. near", "overgen. out", "ties in/near/out")]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    for path in sorted(Path(eval_dir).glob("*/*.json")):
        r = json.loads(path.read_text())
        ties = "/".join(fmt(r["sets"][s]["summary"]["tie_rate"]) for s in ("in_scope", "near_scope", "out_of_scope"))
        rows.append((r["feedback"], r["method"], r["type"], fmt(r["adherence"]), fmt(r["overgeneralization_near"]),
                     fmt(r["overgeneralization_out"]), ties))  # fmt: skip
    return format_table(rows)


def selected_feedbacks(cfg) -> list[str]:
    """The slugs of the feedbacks the run trains, in order (RecipeError code 2 if none or unreadable)."""
    from verlkit.c3po.feedback import load_feedbacks, select_feedbacks
    from verlkit.c3po.general_prompts import BUNDLED_FEEDBACKS
    from verlkit.records import InputError

    try:
        chosen = select_feedbacks(load_feedbacks([Path(cfg.recipe.feedback_file or BUNDLED_FEEDBACKS)]),
                                  cfg.recipe.feedback_prefix or None)  # fmt: skip
    except InputError as e:
        raise RecipeError(f"run_c3po: {e}", code=2) from None
    slugs = [f.slug for f in chosen][: cfg.recipe.max_feedbacks or None]
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
    run = s.open_run(stack)
    # the models to load (a hosted teacher, and the judge, are names at their APIs)
    s.resolve_models({"recipe.student": "student", **({} if teacher.url else {"recipe.teacher.model": "teacher"})})
    cfg, profile, name = s.cfg, s.profile, s.name
    teacher, method = cfg.recipe.teacher, cfg.recipe.method
    log(f"feedbacks: {' '.join(slugs)}; method: {method}")

    # --- servers: the student writes the completions and serves the trained adapters; the teacher writes
    # categories and prompts and (by default) judges
    ss = cfg.recipe.student_server
    gpu = lambda devices, memory: dict(devices=",".join(devices), gpu_memory_utilization=memory) if profile == "gpu" else {}  # noqa: E731
    student = run.serve(ServerSpec(model=cfg.recipe.student, name="student", served_model_name="student",
                                   enable_lora=True, max_lora_rank=ss.max_lora_rank, max_model_len=ss.max_model_len,
                                   run_dir=run.run_dir, ready_timeout_s=ss.ready_timeout_s,
                                   **gpu(student_devices, ss.gpu_memory_utilization)))  # fmt: skip
    if teacher.url:
        spec = ServerSpec(model=teacher.model or "external", name="teacher", external_url=teacher.url,
                          served_model_name=teacher.served_name, run_dir=run.run_dir, ready_timeout_s=teacher.ready_timeout_s)  # fmt: skip
    else:
        spec = ServerSpec(model=teacher.model, name="teacher", served_model_name="teacher", max_model_len=teacher.max_model_len,
                          run_dir=run.run_dir, ready_timeout_s=teacher.ready_timeout_s,
                          tensor_parallel_size=teacher.tensor_parallel_size if profile == "gpu" else 1,
                          **gpu(teacher_devices, teacher.gpu_memory_utilization))  # fmt: skip
    teacher_server = run.serve(spec)
    judge_url, judge_model, judge_key = judge_endpoint(cfg.recipe.judge, teacher_server.base_url,
                                                       teacher_server.model_name, teacher.api_key_env)  # fmt: skip
    judge = ["--judge-url", judge_url, "--judge-model", judge_model] + (["--judge-api-key-env", judge_key] if judge_key else [])

    # --- sampling
    sample_dir = run.run_dir / "sample"
    args = ["--out", sample_dir, "--teacher-url", teacher_server.base_url, "--teacher-model", teacher_server.model_name,
            "--completion-url", student.base_url, "--completion-model", student.model_name,
            *tool_arguments(cfg.recipe.sample)]  # fmt: skip
    args += ["--feedback", cfg.recipe.feedback_file] if cfg.recipe.feedback_file else []
    args += ["--feedback-prefix", cfg.recipe.feedback_prefix] if cfg.recipe.feedback_prefix else []
    args += ["--teacher-api-key-env", teacher.api_key_env] if teacher.api_key_env else []
    args += ["--max-feedbacks", cfg.recipe.max_feedbacks] if cfg.recipe.max_feedbacks else []
    log(f"sampling: python -m verlkit.c3po.sample {' '.join(map(str, args))}")
    from verlkit.c3po.sample import main as sample

    if sample([str(a) for a in args]):
        log(f"sampling reported failures (see {sample_dir}/*/report.json)")

    # --- per feedback: train a LoRA adapter, load it into the student server, evaluate
    from data_prep.c3po import NoTrainingData
    from verlkit.c3po.evaluate import main as evaluate
    from verlkit.records import InputError

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(train_devices)} if profile == "gpu" else None
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"]
    evaluated = 0
    for slug in slugs:
        work = run.run_dir / "train" / slug
        work.mkdir(parents=True, exist_ok=True)
        try:
            counts = build_training_parquet(sample_dir / slug, work / "train.parquet")
        except NoTrainingData as e:
            log(f"{slug}: no training data ({e}); skipped")
            continue
        except InputError as e:
            raise RecipeError(f"{slug}: the sampled data cannot be trained on: {e}", code=1) from None
        log(f"{work / 'train.parquet'}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        # the run's name and the process count come before the user's overrides; the feedback's files after
        s.defaults = [f"trainer.experiment_name={quoted(f'{run.experiment}-{slug}')}", f"trainer.n_gpus_per_node={nproc}",
                      f"trainer.nnodes={cfg.recipe.nnodes}"]  # fmt: skip
        overrides = s.overrides(f"data.train_files={quoted(work / 'train.parquet')}",
                                f"data.train_batch_size={batch_rows(sum(counts.values()), cfg.data.train_batch_size, nproc)}",
                                f"trainer.default_local_dir={quoted(work / 'checkpoints')}")  # fmt: skip
        rc = run.train(slug, TRAINER, CONFIG_DIR, name, overrides, work, launcher=launcher, env=env)
        if rc:
            raise RecipeError(f"{slug}: training failed (exit status {rc}; log: {work / 'train.log'})", code=rc)
        with contextlib.redirect_stdout(sys.stderr):
            run.summary(work / "train.log", work / "metrics.json", ("train/loss", "pref/"))
        # verl's merger writes the base weights and the adapter; only the adapter is new
        merge_checkpoint(run, latest_checkpoint(work / "checkpoints"), work / "export", work / "export.log")
        shutil.rmtree(work / "adapter", ignore_errors=True)
        (work / "export" / "lora_adapter").rename(work / "adapter")
        shutil.rmtree(work / "export")
        adapter = f"c3po-{slug}"
        try:
            load_lora_adapter(student.base_url, adapter, work / "adapter")
        except ServerStartError as e:
            raise RecipeError(f"run_c3po: {e}") from None
        log(f"{slug}: adapter {work / 'adapter'} loaded into the student server as '{adapter}'")
        common = ["--sample-dir", sample_dir / slug, "--out", run.run_dir / "eval" / slug, *judge,
                  *tool_arguments(cfg.recipe.eval)]  # fmt: skip
        trained = ["--method", "trained", "--model-url", student.base_url, "--model-name", adapter,
                   "--baseline-url", student.base_url, "--baseline-name", student.model_name]  # fmt: skip

        def tracker(method: str) -> list[str]:  # the adapter's training run's project and run group
            return run.evaluation_tracker(cfg.trainer.logger, cfg.trainer.project_name,
                                          f"{run.experiment}-{slug}-eval-{method}")  # fmt: skip

        if evaluate([str(a) for a in common + trained + tracker("trained")]) == 0:
            evaluated += 1
        for baseline in cfg.recipe.baselines:
            evaluate([str(a) for a in common + ["--method", baseline] + tracker(baseline)])
    print(report(run.run_dir / "eval"), flush=True)
    if not evaluated:
        raise RecipeError("no feedback was trained and evaluated")
    log(f"evaluation JSON and plots: {run.run_dir / 'eval'}/<feedback>/; run directory: {run.run_dir}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_recipe(lambda stack: body(stack, argv))


if __name__ == "__main__":
    sys.exit(main())
