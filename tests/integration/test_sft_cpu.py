"""verl's own SFT trainer (``torchrun -m verl.trainer.sft_trainer``) on the CPU profile.

Real torchrun, real gloo process groups, real FSDP2 engine, real parquet, the tiny local Qwen2.
Loss is on assistant turns only (verl's MultiTurnSFTDataset masks every other turn). One module
fixture runs 2 processes for 4 steps with a checkpoint every 2 steps; the resume test then restarts
from the step-2 checkpoint alone and must reproduce steps 3-4 of the uninterrupted run.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
from support.torchrun import run_torchrun

from verlkit.runs.summary import parse_step_metrics

pytestmark = pytest.mark.integration


def write_chat_parquet(path: Path, n_rows: int = 16) -> Path:
    """Multi-turn chats: system + two user/assistant exchanges per row."""
    rows = []
    for i in range(n_rows):
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You are a careful math tutor."},
                    {"role": "user", "content": f"What is {i} + {i + 1}?"},
                    {"role": "assistant", "content": f"{i} + {i + 1} = {2 * i + 1}. The answer is #### {2 * i + 1}"},
                    {"role": "user", "content": "And times 2?"},
                    {"role": "assistant", "content": f"So the final answer is \\boxed{{{4 * i + 2}}}."},
                ]
            }
        )
    pd.DataFrame(rows).to_parquet(path)
    return path


def parse_losses(text: str) -> dict[int, float]:
    """``{step: train/loss}`` from verl's console logger lines (``step:N - ... - train/loss:X``)."""
    return {step: metrics["train/loss"] for step, metrics in parse_step_metrics(text).items() if "train/loss" in metrics}


def sft_overrides(model_dir: Path, train: Path, ckpt_dir: Path, n_procs: int, steps: int, save_freq: int) -> list[str]:
    from verlkit.cpu_profile.overrides import sft

    return sft(n_procs) + [
        f"model.path={model_dir}",
        f"data.train_files={train}",
        "data.train_batch_size=4",
        "data.micro_batch_size_per_gpu=2",
        "data.max_length=128",
        "data.use_dynamic_bsz=False",
        "optim.lr=1e-3",
        f"trainer.total_training_steps={steps}",
        f"trainer.save_freq={save_freq}",
        f"trainer.default_local_dir={ckpt_dir}",
        "trainer.logger=[console]",
        "trainer.resume_mode=auto",
    ]


@pytest.fixture(scope="module")
def two_proc_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("sft_cpu_2p")
    train = write_chat_parquet(work / "train.parquet")
    ckpt = work / "ckpt"
    text = run_torchrun(
        "verl.trainer.sft_trainer", 2, sft_overrides(tiny_model_dir, train, ckpt, 2, steps=4, save_freq=2), work / "run.log"
    )
    return {"work": work, "train": train, "ckpt": ckpt, "losses": parse_losses(text)}


def test_two_processes_train_and_checkpoint(two_proc_run):
    losses = two_proc_run["losses"]
    assert sorted(losses) == [1, 2, 3, 4]
    assert all(math.isfinite(v) for v in losses.values())
    # lr 1e-3 on a random tiny model: the assistant-token loss must go down over 4 steps.
    assert losses[4] < losses[1]
    ckpt = two_proc_run["ckpt"]
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    for step in (2, 4):
        for rank in (0, 1):
            assert (ckpt / f"global_step_{step}" / f"model_world_size_2_rank_{rank}.pt").is_file()
            assert (ckpt / f"global_step_{step}" / f"data_{rank}.pt").is_file()


def test_resume_from_checkpoint_reproduces_uninterrupted_run(two_proc_run, tiny_model_dir: Path):
    """Keep only the step-2 checkpoint, resume (resume_mode=auto) and run to step 4."""
    work = two_proc_run["work"]
    resumed_ckpt = work / "ckpt_resume"
    shutil.copytree(two_proc_run["ckpt"] / "global_step_2", resumed_ckpt / "global_step_2")
    (resumed_ckpt / "latest_checkpointed_iteration.txt").write_text("2")

    text = run_torchrun(
        "verl.trainer.sft_trainer",
        2,
        sft_overrides(tiny_model_dir, two_proc_run["train"], resumed_ckpt, 2, steps=4, save_freq=2),
        work / "resume.log",
    )
    resumed = parse_losses(text)
    assert sorted(resumed) == [3, 4], f"the resumed run must start after the saved step 2, got steps {sorted(resumed)}"
    assert all(math.isfinite(v) for v in resumed.values())
    full = two_proc_run["losses"]
    for step in (3, 4):
        # Same model, optimizer, RNG and dataloader state: the same numbers, up to float noise.
        assert resumed[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6)
    assert (resumed_ckpt / "global_step_4").is_dir()


def test_one_process_runs(tiny_model_dir: Path, tmp_path: Path):
    train = write_chat_parquet(tmp_path / "train.parquet")
    ckpt = tmp_path / "ckpt"
    text = run_torchrun(
        "verl.trainer.sft_trainer", 1, sft_overrides(tiny_model_dir, train, ckpt, 1, steps=2, save_freq=2), tmp_path / "run.log"
    )
    losses = parse_losses(text)
    assert sorted(losses) == [1, 2]
    assert all(math.isfinite(v) for v in losses.values())
    assert (ckpt / "global_step_2" / "model_world_size_1_rank_0.pt").is_file()
