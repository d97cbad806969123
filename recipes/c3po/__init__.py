"""The training command line of ``run_c3po.sh`` (C3PO and its baselines on the preference trainer).

``python -m recipes.c3po.args overrides --profile gpu|cpu --method lcdpo --model M --train F ...``
prints one override per line for ``torchrun -m verlkit.preference.train``. A test composes
them through verl's hydra config, so a key that verl 0.9.1 does not have fails the test.

Methods (reference-methods.md §4.4):

| method    | objective                                                                  |
|-----------|----------------------------------------------------------------------------|
| ``lcdpo`` | C3PO: DPO(revised ≻ baseline) + σ_soft·L_KD(out-of-scope) + σ_hard·L_KD(near) |
| ``dpo``   | DPO on the in-scope pairs only                                             |
| ``sft``   | SFT on the revised in-scope responses (supervised context distillation)    |
| ``sft_neg``| SFT + NLL of the baseline responses on near/out-of-scope prompts (σ 0.5/0.5) |

The reference configuration is the default: β 0.1, σ_soft 0.2, σ_hard 0.1, λ 0, T 1, LoRA r 64 /
α 128 on all linear layers, lr 5e-5 with a cosine schedule and 5 % warm-up, one epoch, an effective
batch of 16 triplets (48 rows: one in-scope pair, one near-scope and one out-of-scope row each).
The CPU profile keeps the method and LoRA and shrinks the batch to the (tiny) data.
"""

from __future__ import annotations

from recipes import cpu_profile_overrides, format_table

from dataclasses import dataclass, field

METHODS = {
    "lcdpo": ["preference.loss=lcdpo", "preference.sigma_soft=0.2", "preference.sigma_hard=0.1",
              "preference.kd_lambda=0.0", "preference.kd_temperature=1.0"],
    "dpo": ["preference.loss=dpo"],
    "sft": ["preference.loss=sft"],
    "sft_neg": ["preference.loss=sft_neg", "preference.sigma_soft=0.5", "preference.sigma_hard=0.5"],
}


@dataclass
class C3POTrain:
    profile: str
    model: str
    train_file: str
    checkpoint_dir: str
    method: str = "lcdpo"
    nproc: int = 8
    nnodes: int = 1
    batch_rows: int | None = None  # None: 48 on GPU; the CPU recipe passes the data's size
    lr: float | None = None  # None: 5e-5 (GPU), 5e-4 (CPU: a few steps on a tiny model)
    epochs: int = 1
    lora_rank: int = 64
    lora_alpha: int = 128
    beta: float = 0.1
    logger: tuple[str, ...] = ("console", "wandb")
    experiment: str = "c3po"
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        if self.profile not in ("gpu", "cpu"):
            raise ValueError(f"profile must be gpu or cpu, got {self.profile!r}")


def train_overrides(run: C3POTrain) -> list[str]:
    cpu = run.profile == "cpu"
    batch = run.batch_rows or (12 if cpu else 48)
    if batch % run.nproc:
        batch += run.nproc - batch % run.nproc  # the trainer needs whole rows per process
    out = [
        f"model.path={run.model}",
        f"model.lora_rank={run.lora_rank}",
        f"model.lora_alpha={run.lora_alpha}",
        "model.target_modules=all-linear",
        f"data.train_files={run.train_file}",
        f"data.train_batch_size={batch}",
        f"data.max_length={512 if cpu else 2048}",
        "data.truncation=right",
        f"optim.lr={run.lr or (5e-4 if cpu else 5e-5)}",
        "optim.lr_scheduler_type=cosine",
        "optim.lr_warmup_steps_ratio=0.05",
        "optim.weight_decay=0.0",
        f"trainer.total_epochs={run.epochs}",
        f"trainer.default_local_dir={run.checkpoint_dir}",
        "trainer.save_freq=-1",  # verl saves the last step; the recipe exports it
        "trainer.test_freq=-1",
        "trainer.resume_mode=auto",
        "trainer.logger=[" + ",".join(run.logger) + "]",
        "trainer.project_name=verlkit-c3po",
        f"trainer.experiment_name={run.experiment}",
        f"trainer.nnodes={run.nnodes}",
        f"trainer.n_gpus_per_node={run.nproc}",
        f"preference.beta={run.beta}",
    ] + METHODS[run.method]
    if cpu:
        sft = cpu_profile_overrides().sft

        out += sft(run.nproc)
    else:
        out += ["engine.strategy=fsdp2", "model.enable_gradient_checkpointing=True", "model.use_remove_padding=True"]
    return out + list(run.extra)


def report(eval_dir: str) -> str:
    """One line per (feedback, method) of the evaluation JSONs under ``eval_dir/<feedback>/``."""
    import json
    from pathlib import Path

    rows = [("feedback", "method", "type", "adherence", "overgen. near", "overgen. out", "ties in/near/out")]
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    for path in sorted(Path(eval_dir).glob("*/*.json")):
        r = json.loads(path.read_text())
        ties = "/".join(fmt(r["sets"][s]["summary"]["tie_rate"]) for s in ("in_scope", "near_scope", "out_of_scope"))
        rows.append((r["feedback"], r["method"], r["type"], fmt(r["adherence"]), fmt(r["overgeneralization_near"]),
                     fmt(r["overgeneralization_out"]), ties))  # fmt: skip
    return format_table(rows)
