"""The trainers' command lines of the SFT -> DPO -> reward model -> RLOO pipeline (``run_all.sh``).

``python -m recipes.pipeline.args <stage> --profile gpu|cpu --model M --data DIR --run-dir DIR ...``
prints one hydra override per line for the stage's trainer. Keeping the composition here lets a test
compose every stage through verl's own hydra configs, so a key that does not exist in verl 0.9.1
fails the test instead of a user's run.

Stages and trainers (reference-methods.md §5, the intended pipeline rather than the original's bugs):

* ``sft``: ``verl.trainer.sft_trainer`` on ``messages`` rows; verl's multi-turn dataset puts the
  loss on assistant turns only.
* ``dpo``: ``verlkit.preference.train preference.loss=dpo`` from the SFT model; summed reply
  log-probs, β = 0.1, the frozen reference = the SFT model.
* ``rm``: ``verlkit.preference.train preference.loss=bt`` from the SFT model (the usual
  initialisation of a reward model): a Bradley–Terry scalar reward model on the same pairs.
* ``rloo``: ``verl.trainer.main_ppo algorithm.adv_estimator=rloo`` with k = 4 samples per prompt,
  rewards from the trained reward model served for ``/classify`` (the ``scalar_rm`` reward).

GPU defaults follow the original's sizes where they are sensible (learning rates 1e-5 SFT, 1e-6 DPO /
RLOO, β 0.1, k 4, sampling temperature 0.7 / top_p 0.9); the CPU profile keeps every algorithm and
shrinks sizes (the tiny local model, a few steps, one process) so the whole chain runs in minutes.
"""

from __future__ import annotations

from recipes import cpu_profile_overrides, format_table

from dataclasses import dataclass, field

STAGES = ("prep", "sft", "dpo", "rm", "rloo", "eval")
# Checkpoints also hold the Hugging Face model (<step>/huggingface), so the next stage starts from it
# without a merge step. The reward model is exported by verlkit.preference.export instead:
# verl would save its value head as a causal LM.
HF_CHECKPOINT = "checkpoint.save_contents=[model,optimizer,extra,hf_model]"
TRAINED = ("sft", "dpo", "rm", "rloo")


@dataclass
class PipelineRun:
    profile: str  # gpu | cpu
    model: str  # the stage's initial model (HF directory)
    data: str  # data_prep.pipeline output directory
    run_dir: str
    nproc: int = 8  # processes per node of torchrun (sft, dpo, rm) / GPUs per node (rloo)
    nnodes: int = 1
    logger: tuple[str, ...] = ("console", "wandb")
    experiment: str = "pipeline"
    epochs: int | None = None  # None: the stage's default
    steps: int | None = None  # trainer.total_training_steps (None: epochs decide)
    rm_url: str = ""  # rloo: the served reward model
    rm_name: str = "reward_model"
    rm_tokenizer: str = ""  # rloo: the reward model's directory (its chat template and tokenizer)
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.profile not in ("gpu", "cpu"):
            raise ValueError(f"profile must be gpu or cpu, got {self.profile!r}")


def _logger(run: PipelineRun) -> str:
    return "[" + ",".join(run.logger) + "]"


def _offline_common(run: PipelineRun, stage: str, epochs: int) -> list[str]:
    """What sft, dpo and rm share: model, checkpoints (verl saves the last step), tracking."""
    out = [
        f"model.path={run.model}",
        f"trainer.default_local_dir={run.run_dir}/{stage}/checkpoints",
        f"trainer.total_epochs={run.epochs or epochs}",
        f"trainer.logger={_logger(run)}",
        f"trainer.project_name=verlkit-pipeline-{stage}",
        f"trainer.experiment_name={run.experiment}",
        "trainer.resume_mode=auto",
        f"trainer.nnodes={run.nnodes}",
        f"trainer.n_gpus_per_node={run.nproc}",
    ]
    if run.steps:
        out.append(f"trainer.total_training_steps={run.steps}")
    if run.profile == "cpu":
        sft = cpu_profile_overrides().sft

        out += sft(run.nproc)
    else:
        out += ["engine.strategy=fsdp2", "model.enable_gradient_checkpointing=True", "model.use_remove_padding=True"]
    return out


def sft_overrides(run: PipelineRun) -> list[str]:
    cpu = run.profile == "cpu"
    out = _offline_common(run, "sft", epochs=1 if cpu else 3) + [
        f"data.train_files={run.data}/sft/train.parquet",
        f"data.val_files={run.data}/sft/val.parquet",
        "data.messages_key=messages",
        f"data.max_length={256 if cpu else 1024}",
        "data.truncation=right",
        f"data.train_batch_size={4 if cpu else 64}",
        f"data.micro_batch_size_per_gpu={4 if cpu else 8}",
        f"optim.lr={1e-3 if cpu else 1e-5}",
        "optim.weight_decay=0.01",
        "optim.lr_warmup_steps_ratio=0.03",
        HF_CHECKPOINT,
        "trainer.save_freq=-1",
        f"trainer.test_freq={-1 if cpu else 200}",
    ]
    return out + list(run.extra)


def _preference(run: PipelineRun, stage: str, loss: str, lr: float, cpu_lr: float) -> list[str]:
    cpu = run.profile == "cpu"
    return _offline_common(run, stage, epochs=1) + [
        f"data.train_files={run.data}/prefs/train.parquet",
        f"data.max_length={256 if cpu else 1024}",
        "data.truncation=right",
        f"data.train_batch_size={8 if cpu else 32}",
        f"optim.lr={cpu_lr if cpu else lr}",
        "optim.clip_grad=1.0",
        f"optim.lr_warmup_steps_ratio={0.0 if cpu else 0.05}",
        "trainer.save_freq=-1",
        "trainer.test_freq=-1",
        f"preference.loss={loss}",
    ]


def dpo_overrides(run: PipelineRun) -> list[str]:
    return _preference(run, "dpo", "dpo", lr=1e-6, cpu_lr=1e-4) + ["preference.beta=0.1", HF_CHECKPOINT] + list(run.extra)


def rm_overrides(run: PipelineRun) -> list[str]:
    return _preference(run, "rm", "bt", lr=1e-5, cpu_lr=1e-3) + list(run.extra)


def rloo_overrides(run: PipelineRun) -> list[str]:
    if not run.rm_url or not run.rm_tokenizer:
        raise ValueError("the rloo stage needs the served reward model (rm_url) and its directory (rm_tokenizer)")
    kw = "+reward.custom_reward_function.reward_kwargs.scalar_rm"
    cpu = run.profile == "cpu"
    out = [
        f"data.train_files={run.data}/rl/train.parquet",
        f"data.val_files={run.data}/rl/train.parquet",
        f"actor_rollout_ref.model.path={run.model}",
        "algorithm.adv_estimator=rloo",
        "algorithm.use_kl_in_reward=False",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.grad_clip=1.0",
        "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.rollout.temperature=0.7",
        "actor_rollout_ref.rollout.top_p=0.9",
        "reward.custom_reward_function.path=pkg://verl.utils.reward_score.registry",
        "reward.custom_reward_function.name=compute_score_async",
        f"{kw}.url='{run.rm_url}'",
        f"{kw}.model={run.rm_name}",
        f"{kw}.tokenizer='{run.rm_tokenizer}'",
        f"trainer.total_epochs={run.epochs or 1}",
        f"trainer.logger={_logger(run)}",
        "trainer.project_name=verlkit-pipeline-rloo",
        f"trainer.experiment_name={run.experiment}",
        f"trainer.default_local_dir={run.run_dir}/rloo/checkpoints",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
        f"trainer.rollout_data_dir={run.run_dir}/rloo/rollouts",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
    ]
    if run.steps:
        out.append(f"trainer.total_training_steps={run.steps}")
    if cpu:
        ppo = cpu_profile_overrides().ppo

        out += [
            "data.train_batch_size=4",
            "data.max_prompt_length=256",
            "data.max_response_length=24",
            "data.truncation=left",
            "actor_rollout_ref.actor.optim.lr=1e-4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
            "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=8",
            # verl saves on the last step when save_freq > 0; the recipe exports that step
            f"trainer.save_freq={run.steps or 1}",
        ] + ppo(1)
    else:
        prompt_len, response_len = 1024, 256
        out += [
            "data.train_batch_size=64",
            f"data.max_prompt_length={prompt_len}",
            f"data.max_response_length={response_len}",
            "data.filter_overlong_prompts=True",
            "data.truncation=error",
            "actor_rollout_ref.actor.optim.lr=1e-6",
            "actor_rollout_ref.actor.ppo_mini_batch_size=64",
            "actor_rollout_ref.actor.use_dynamic_bsz=True",
            f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={16 * (prompt_len + response_len)}",
            "actor_rollout_ref.model.use_remove_padding=True",
            "actor_rollout_ref.model.enable_gradient_checkpointing=True",
            "actor_rollout_ref.rollout.name=vllm",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
            "actor_rollout_ref.rollout.gpu_memory_utilization=0.5",
            f"trainer.n_gpus_per_node={run.nproc}",
            f"trainer.nnodes={run.nnodes}",
            "trainer.save_freq=100",
            "trainer.resume_mode=auto",
        ]
    return out + list(run.extra)


OVERRIDES = {"sft": sft_overrides, "dpo": dpo_overrides, "rm": rm_overrides, "rloo": rloo_overrides}


def overrides(stage: str, run: PipelineRun) -> list[str]:
    if stage not in OVERRIDES:
        raise ValueError(f"no trainer for stage {stage!r}; trainer stages: {sorted(OVERRIDES)}")
    return OVERRIDES[stage](run)


def parse_stages(text: str) -> list[str]:
    """``"sft,dpo"`` -> ``["sft", "dpo"]`` in pipeline order; unknown names are an error."""
    wanted = [s.strip() for s in str(text).split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages: {','.join(STAGES)}")
    return [s for s in STAGES if s in wanted]


def _read_json(path) -> dict | None:
    import json
    from pathlib import Path

    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def _first_last(steps: dict | None, key: str) -> tuple[float | None, float | None]:
    if not steps:
        return None, None
    values = [m[key] for _, m in sorted(steps.items(), key=lambda kv: int(kv[0])) if key in m]
    return (values[0], values[-1]) if values else (None, None)


def report(run_dir: str) -> tuple[str, dict]:
    """The run's outcome: first/last training metric of each stage, the reward model's held-out
    accuracy and each evaluated model's win/tie/loss against the reference (as a table and a dict)."""
    from pathlib import Path

    root = Path(run_dir)
    out: dict = {"stages": {}, "eval": {}}
    rows = [("stage", "metric", "first", "last")]
    tracked = {"sft": "train/loss", "dpo": "pref/dpo", "rm": "pref/bt", "rloo": "reward/rm_score/mean"}
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
    for path in sorted((root / "eval").glob("*/winrate.json")):
        summary = _read_json(path)
        out["eval"][path.parent.name] = summary
        wtl = summary.get("win_tie_loss", summary)
        ci = summary.get("ci") or [None, None]
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        rows.append((f"eval {path.parent.name}", "win/tie/loss vs reference", "",
                     "/".join(fmt(wtl.get(k)) for k in ("win_rate", "tie_rate", "loss_rate"))))
        rows.append((f"eval {path.parent.name}", "reward difference [CI]", "",
                     f"{fmt(summary.get('mean_reward_difference'))} [{fmt(ci[0])}, {fmt(ci[1])}]"))
        rows.append((f"eval {path.parent.name}", "length ratio (tokens)", "", fmt(summary.get("length_ratio_tokens"))))
    return format_table(rows), out
