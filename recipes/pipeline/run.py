"""``bash run_pipeline.sh``: SFT -> DPO -> Bradley–Terry reward model -> RLOO -> win rate, one command.

Settings: ``recipes/pipeline/config/pipeline.yaml`` (the pipeline: stages, serving, evaluation, data
sizes) and one config per stage trainer (``sft``, ``dpo``, ``rm``, ``rloo``), each with a ``_cpu``
variant. Stages (``recipe.stages``/``STAGES``) run in order; a skipped stage's output must already be
in ``RUN_DIR``, which is checked before anything starts.

| stage | trainer | output in RUN_DIR |
|---|---|---|
| prep | ``data_prep.pipeline`` | ``data/`` |
| sft | ``torchrun -m verl.trainer.sft_trainer`` | ``sft/checkpoints``, ``sft/hf`` |
| dpo | ``torchrun -m verlkit.preference.train`` (loss dpo) from ``sft/hf`` | ``dpo/hf`` |
| rm | the same trainer (loss bt) from ``sft/hf``; export; serve; held-out accuracy | ``rm/hf``, ``rm/eval.json`` |
| rloo | ``verl.trainer.main_ppo`` (adv_estimator rloo) scored by the served reward model | ``rloo/hf`` |
| judge | the rm stage's trainer on ``prefs/judge`` (no prompt of ``prefs/train``); export; serve; held-out accuracy | ``judge/hf``, ``judge/eval.json`` |
| eval | ``verlkit.evaluation.winrate`` per trained model against the reference, judged by the judge | ``eval/<model>/`` |

Every evaluation logs to the tracker of the training run it evaluates (the stage config's
``trainer.logger`` and ``trainer.project_name``, run group = the experiment): see docs/evaluation.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

from recipes.checkpoints import export_hf
from recipes.compose import Setting, integer, items, number, quoted, split_stage_overrides, tool_arguments
from recipes.driver import RecipeError, call_tool, devices_except, gpu_indices, log, parse_devices, validate_data
from recipes.driver import main as run_recipe
from recipes.managed import backend_choice, ray_gpus_override
from recipes.pipeline.stages import TRAINED, missing_inputs, parse_stages, report
from recipes.settings import RecipeSettings

CONFIG_DIR = Path(__file__).resolve().parent / "config"
USAGE = "usage: bash run_pipeline.sh [base_model] [reference_model] [-- overrides (stage.key=value for one stage)]"
PREFERENCE_TRAINER = "verlkit.preference.train"

POSITIONAL = (("base_model", Setting("recipe.base")), ("reference_model", Setting("recipe.reference")))

# The documented environment knobs (header of run_pipeline.sh, docs/pipeline.md).
KNOBS = {
    "RUN_DIR": Setting("recipe.run_dir"),
    "STAGES": Setting("recipe.stages", items),
    "RLOO_INIT": Setting("recipe.rloo_init"),
    "EVAL_MODELS": Setting("recipe.eval_models", items),
    "NPROC": Setting("recipe.nproc", integer),
    "NNODES": Setting("recipe.nnodes", integer),
    "TORCHRUN": Setting("recipe.torchrun"),
    "TRAIN_DEVICES": Setting("recipe.train_devices"),
    "RM_DEVICES": Setting("recipe.reward_model.devices"),
    "RM_GPU_MEM": Setting("recipe.reward_model.gpu_memory_utilization", number),
    "RM_BACKEND": Setting("recipe.reward_model.backend", backend_choice),
    "STEPS": Setting("rloo.trainer.total_training_steps", integer),
    "LOGGER": Setting("trainer.logger", items),
    "SMOLTALK": Setting("recipe.data.smoltalk"),
    "UF_TRAIN": Setting("recipe.data.ultrafeedback_train"),
    "UF_TEST": Setting("recipe.data.ultrafeedback_test"),
    "SFT_SIZE": Setting("recipe.data.sft_size", integer),
    "DPO_SIZE": Setting("recipe.data.dpo_size", integer),
    "RM_TEST_SIZE": Setting("recipe.data.rm_test_size", integer),
    "RL_SIZE": Setting("recipe.data.rl_size", integer),
    "EVAL_SIZE": Setting("recipe.data.eval_size", integer),
    "JUDGE_SIZE": Setting("recipe.data.judge_size", integer),
    "JUDGE_FRACTION": Setting("recipe.data.judge_fraction", number),
    "SEED": Setting("recipe.data.seed", integer),
    "EVAL_MAX_TOKENS": Setting("recipe.eval.options.max_tokens", integer),
    "EVAL_TEMPERATURE": Setting("recipe.eval.options.temperature", number),
    "TIE_BAND": Setting("recipe.eval.options.tie_band", number),
    "EVAL_JUDGE": Setting("recipe.eval.judge.source"),
    "EVAL_JUDGE_URL": Setting("recipe.eval.judge.url"),
    "EVAL_JUDGE_MODEL": Setting("recipe.eval.judge.model"),
    "EVAL_JUDGE_API_KEY_ENV": Setting("recipe.eval.judge.api_key_env"),
    "EVAL_JUDGE_RPS": Setting("recipe.eval.judge.rate_limit_rps", number),
}

STAGE_TRAINERS = {"sft": "verl.trainer.sft_trainer", "dpo": PREFERENCE_TRAINER, "rm": PREFERENCE_TRAINER,
                  "rloo": "verl.trainer.main_ppo", "judge": PREFERENCE_TRAINER}  # fmt: skip


def route_overrides(overrides: list[str]) -> tuple[list[str], list[str], dict[str, list[str]]]:
    """(overrides of pipeline.yaml, of every stage trainer, {stage: of that stage only})."""
    common, per_stage = split_stage_overrides(overrides, TRAINED)
    pipeline = [o for o in common if o.lstrip("+~").startswith("recipe.")]
    return pipeline, [o for o in common if o not in pipeline], per_stage


def config_name(name: str, profile: str) -> str:
    return f"{name}_cpu" if profile == "cpu" else name


class Pipeline:
    """One pipeline run: its settings, devices, served models and stage trainers."""

    def __init__(self, stack: contextlib.ExitStack, argv):
        self.settings = s = RecipeSettings("pipeline", CONFIG_DIR, KNOBS, POSITIONAL, argv, USAGE,
                                           route=lambda overrides: route_overrides(overrides)[0])  # fmt: skip
        self.profile = s.profile
        _, self.every_stage, self.per_stage = route_overrides(s.given)
        s.require({"recipe.base": "a base model (1st argument)",
                   "recipe.reference": "a reference model (2nd argument; the original used Qwen2.5-0.5B-Instruct)"})
        try:
            self.selected = parse_stages(list(s.cfg.recipe.stages))
        except ValueError as e:
            raise RecipeError(str(e), code=2) from None
        self.all_gpus, self.rm_devices, self.train_devices = [], [], []
        if self.profile == "gpu":
            self.all_gpus = gpu_indices()
            self.rm_devices = parse_devices(s.cfg.recipe.reward_model.devices) or self.all_gpus[-1:]
            self.train_devices = parse_devices(s.cfg.recipe.train_devices) or devices_except(self.all_gpus, self.rm_devices)
            if not self.train_devices:
                raise RecipeError(f"no GPU left for training (RM_DEVICES={','.join(self.rm_devices)})", code=2)
        self.nproc = s.cfg.recipe.nproc or len(self.all_gpus)
        self.rm_backend = s.cfg.recipe.reward_model.backend
        if self.rm_backend not in ("launcher", "managed"):
            raise RecipeError(f"RM_BACKEND must be launcher or managed, got {self.rm_backend!r}", code=2)
        self.run = s.open_run(stack)
        # the models the selected stages load (the reward model and the judge are trained from sft here; a
        # served judge is a name at its API)
        s.resolve_models({**({"recipe.base": "base"} if "sft" in self.selected else {}),
                          **({"recipe.reference": "reference"} if "eval" in self.selected else {})})
        self.cfg = s.cfg
        judge = self.cfg.recipe.eval.judge
        self.judge_source = None if judge.url else judge.source  # None: a served judge scores the win rate
        problems = missing_inputs(self.selected, self.run.run_dir, self.cfg.recipe.rloo_init,
                                  list(self.cfg.recipe.eval_models), self.judge_source)  # fmt: skip
        if problems:
            raise RecipeError("; ".join(problems), code=2)
        self.data = self.run.run_dir / "data"
        log(f"stages: {' '.join(self.selected)}; run directory: {self.run.run_dir}")

    def gpu_env(self, devices: list[str]) -> dict[str, str] | None:
        return {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(devices)} if self.profile == "gpu" else None

    def server(self, name: str, model, served_name: str, devices: list[str], memory: float, **extra):
        return self.run.serve(self.server_spec(name, model, served_name, devices, memory, **extra))

    def server_spec(self, name: str, model, served_name: str, devices: list[str], memory: float, **extra):
        from verlkit.serving import ServerSpec

        servers = self.cfg.recipe.servers
        gpu = dict(devices=",".join(devices), gpu_memory_utilization=memory) if self.profile == "gpu" else {}
        return ServerSpec(model=model, name=name, served_model_name=served_name, run_dir=self.run.run_dir,
                          max_model_len=servers.max_model_len, ready_timeout_s=servers.ready_timeout_s, **gpu, **extra)  # fmt: skip

    def train_stage(self, stage: str, init: Path, nproc: int, devices: list[str], runtime: list[str] = ()) -> Path:
        """A stage's trainer on its config; returns the stage's directory."""
        stage_dir = self.run.run_dir / stage
        overrides = [f"trainer.experiment_name={quoted(self.run.experiment)}", f"trainer.n_gpus_per_node={nproc}",
                     f"trainer.nnodes={self.cfg.recipe.nnodes}", *self.every_stage, *self.per_stage[stage],
                     f"recipe.init={quoted(init)}", f"recipe.data_dir={quoted(self.data)}",
                     f"recipe.stage_dir={quoted(stage_dir)}", *runtime]  # fmt: skip
        launcher = ()
        if stage != "rloo":  # the offline stages run under torchrun
            launcher = (shlex.split(self.cfg.recipe.torchrun) + ["-m"] if self.cfg.recipe.torchrun else
                        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"])  # fmt: skip
        rc = self.run.train(stage, STAGE_TRAINERS[stage], CONFIG_DIR, config_name(stage, self.profile), overrides,
                            stage_dir, launcher=launcher, env=self.gpu_env(devices))  # fmt: skip
        if rc:
            raise RecipeError(f"the {stage} stage failed (exit status {rc}; log: {stage_dir / 'train.log'})", code=rc)
        prefixes = None if stage == "rloo" else ("train/loss", "pref/")
        with contextlib.redirect_stdout(sys.stderr):
            self.run.summary(stage_dir / "train.log", stage_dir / "metrics.json", prefixes)
        return stage_dir

    def serve_reward_model(self, rm_hf: Path):
        memory = self.cfg.recipe.reward_model.gpu_memory_utilization
        return self.server("rm", rm_hf, "reward_model", self.rm_devices, memory, task="classify")

    def managed_reward_model(self, rm_hf: Path, nproc: int) -> tuple[list[str], list[str]]:
        """RLOO's overrides when verl serves the reward model (the ``reward_backend=managed`` group of
        rloo.yaml, its layout from pipeline.yaml), and the devices the trainer must also see (the pool's)."""
        managed = self.cfg.recipe.reward_model.managed
        runtime = ["reward_backend=managed", f"recipe.reward_model.dir={quoted(rm_hf)}"]
        runtime += [f"recipe.reward_model.managed.{key}={value}" for key, value in managed.items()]
        pool = int(managed.nnodes) * int(managed.n_gpus_per_node) if managed.standalone else 0
        if self.profile == "cpu":
            runtime += ray_gpus_override(nproc * int(self.cfg.recipe.nnodes), pool)
        return runtime, (self.rm_devices if self.profile == "gpu" and pool else [])

    def execute(self) -> int:
        run, cfg, selected = self.run, self.cfg, self.selected
        if "prep" in selected:
            from data_prep.pipeline import main as prep

            call_tool(prep, ["--out", self.data, *tool_arguments(cfg.recipe.data)], "preparing the pipeline's data")

        for stage in ("sft", "dpo"):
            if stage in selected:
                init = cfg.recipe.base if stage == "sft" else run.run_dir / "sft" / "hf"
                stage_dir = self.train_stage(stage, Path(init), self.nproc, self.all_gpus)
                export_hf(run, stage_dir / "checkpoints", stage_dir / "hf", stage_dir / "hf.export.log")
        rm_hf, judge_hf = run.run_dir / "rm" / "hf", run.run_dir / "judge" / "hf"
        if "rm" in selected:
            self.train_reward_model("rm", rm_hf)

        # the served reward model: held-out accuracy and RLOO's rewards (and the evaluation's scores, opt-in)
        rm = None
        judged_by_rm = "eval" in selected and self.judge_source == "training_reward"
        served_for = {"rm"} | (set() if self.rm_backend == "managed" else {"rloo"})
        if served_for & set(selected) or judged_by_rm:
            rm = self.serve_reward_model(rm_hf)
        if "rm" in selected:
            self.heldout_accuracy("rm", rm, rm_hf)

        if "rloo" in selected:
            validate_data(self.data / "rl" / "train.parquet")
            devices = self.train_devices if self.profile == "gpu" else []
            nproc = len(devices) or self.nproc
            init = run.run_dir / cfg.recipe.rloo_init / "hf"
            if self.rm_backend == "managed":  # verl serves it during RLOO: free what the launcher holds
                if rm is not None:
                    run.stop(rm)
                    rm = None
                runtime, visible = self.managed_reward_model(rm_hf, nproc)
                stage_dir = self.train_stage("rloo", init, nproc, devices + visible, runtime)
            else:
                rm_runtime = [f"recipe.reward_model.url={quoted(rm.base_url)}",
                              f"recipe.reward_model.served_name={quoted(rm.model_name)}",
                              f"recipe.reward_model.dir={quoted(rm_hf)}"]  # fmt: skip
                stage_dir = self.train_stage("rloo", init, nproc, devices, rm_runtime)
            export_hf(run, stage_dir / "checkpoints", stage_dir / "hf", stage_dir / "hf.export.log", actor=True)
        if rm is not None and not judged_by_rm:
            run.stop(rm)  # its memory (GPU) goes to the judge and the evaluated models

        # the win-rate judge: a reward model of its own on prefs/judge, disjoint from prefs/train
        judge = None
        if "judge" in selected:
            self.train_reward_model("judge", judge_hf)
        if "judge" in selected or ("eval" in selected and self.judge_source == "judge_model"):
            judge = self.server("judge", judge_hf, "judge", self.rm_devices, cfg.recipe.reward_model.gpu_memory_utilization,
                                task="classify")  # fmt: skip
        if "judge" in selected:
            self.heldout_accuracy("judge", judge, judge_hf)

        if "eval" in selected:
            if self.judge_source == "training_reward":
                rm = rm or self.serve_reward_model(rm_hf)  # stopped for verl's managed replicas during RLOO
                self.evaluate(rm, rm_hf, "training_reward", "the RLOO reward model (rm stage, prefs/train)")
            elif self.judge_source == "judge_model":
                self.evaluate(judge, judge_hf, "independent",
                              "the judge stage's reward model (prefs/judge: no prompt of the RLOO reward model's prefs/train)")
            else:
                self.evaluate(None, None, "independent", f"the served judge {cfg.recipe.eval.judge.model}")
            table, summary = report(run.run_dir)
            print(table, flush=True)
            (run.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        log(f"run directory: {run.run_dir}")
        return 0

    def stage_config(self, stage: str):
        """A stage trainer's composed config (its tracker: ``trainer.logger``, ``trainer.project_name``)."""
        from recipes.compose import compose

        return compose(CONFIG_DIR, config_name(stage, self.profile), [*self.every_stage, *self.per_stage[stage]])

    def tracker(self, stage: str, name: str) -> list[str]:
        """The tracker options of an evaluation of ``stage``'s model: its training run's project and group."""
        trainer = self.stage_config(stage).trainer
        return self.run.evaluation_tracker(trainer.logger, trainer.project_name, f"{self.run.experiment}-{name}")

    def train_reward_model(self, stage: str, hf: Path) -> None:
        """The rm or judge stage: the preference trainer (loss bt) from the SFT model, then the export
        to the *ForSequenceClassification directory vLLM serves (verl would save the value head as a
        causal LM)."""
        if stage == "judge" and not (self.data / "prefs" / "judge.parquet").is_file():
            raise RecipeError(f"no judge pairs ({self.data / 'prefs' / 'judge.parquet'}; data prep with JUDGE_FRACTION=0?): "
                              "drop the judge stage and set EVAL_JUDGE=training_reward or EVAL_JUDGE_URL", code=2)  # fmt: skip
        stage_dir = self.train_stage(stage, self.run.run_dir / "sft" / "hf", self.nproc, self.all_gpus)
        export = [sys.executable, "-m", "verlkit.preference.export", "--checkpoint", str(stage_dir / "checkpoints"),
                  "--out", str(hf)]  # fmt: skip
        if self.run.run_process(f"{stage} export", export, stage_dir / "export.log"):
            raise RecipeError(f"exporting the {stage} stage's reward model failed (log: {stage_dir / 'export.log'})")

    def heldout_accuracy(self, stage: str, server, hf: Path) -> None:
        """A served reward model's pairwise accuracy on prefs/test -> ``<stage>/eval.json``."""
        from verlkit.evaluation.reward_model import main as rm_eval

        call_tool(rm_eval, ["--pairs", self.data / "prefs" / "test.parquet", "--rm-url", server.base_url, "--rm-name",
                            server.model_name, "--rm-tokenizer", hf, "--out", self.run.run_dir / stage / "eval.json",
                            *self.tracker(stage, f"eval-{stage}-accuracy")],
                  f"the {stage} stage's held-out evaluation")  # fmt: skip

    def evaluate(self, scorer_server, scorer_hf: Path | None, relation: str, description: str) -> None:
        """Each trained model against the reference, both served on the first training GPU, scored by
        ``scorer_server`` (a served reward model) or, with ``recipe.eval.judge.url``, a served judge;
        ``relation``/``description`` name the scorer in the report."""
        from verlkit.evaluation.winrate import main as winrate

        run, ev = self.run, self.cfg.recipe.eval
        devices = self.train_devices[:1]
        reference_spec = self.server_spec("reference", self.cfg.recipe.reference, "reference", devices,
                                          ev.gpu_memory_utilization)  # fmt: skip
        reference = None  # started with the first evaluated model (side by side where they may)
        if ev.judge.url:
            if not ev.judge.model:
                raise RecipeError("EVAL_JUDGE_URL needs EVAL_JUDGE_MODEL (recipe.eval.judge.model)", code=2)
            scorer = ["--judge-url", ev.judge.url, "--judge-model", ev.judge.model]
            scorer += ["--judge-api-key-env", ev.judge.api_key_env] if ev.judge.api_key_env else []
            scorer += ["--judge-rate-limit-rps", str(ev.judge.rate_limit_rps)] if ev.judge.rate_limit_rps else []
        else:
            scorer = ["--rm-url", scorer_server.base_url, "--rm-name", scorer_server.model_name, "--rm-tokenizer",
                      str(scorer_hf)]  # fmt: skip
        scorer += ["--judge-relation", relation, "--judge-description", description]
        for model in self.cfg.recipe.eval_models:
            policy_spec = self.server_spec(f"policy_{model}", run.run_dir / model / "hf", f"policy_{model}", devices,
                                           ev.gpu_memory_utilization)  # fmt: skip
            if reference is None:
                reference, policy = run.serve_together(reference_spec, policy_spec)
            else:
                policy = run.serve(policy_spec)
            args = ["--prompts", self.data / "eval" / "prompts.parquet", "--label", model, "--model-url", policy.base_url,
                    "--model-name", policy.model_name, "--reference-url", reference.base_url, "--reference-name",
                    reference.model_name, *scorer, "--out", run.run_dir / "eval" / model, *tool_arguments(ev.options),
                    *self.tracker(model, f"eval-winrate-{model}")]  # fmt: skip
            if winrate([str(a) for a in args]):
                raise RecipeError(f"the evaluation of {model} failed (see above)")
            run.stop(policy)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_recipe(lambda stack: Pipeline(stack, argv).execute())


if __name__ == "__main__":
    sys.exit(main())
