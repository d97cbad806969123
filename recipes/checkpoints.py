"""verl checkpoints of a recipe run: the last saved step, and its export to a Hugging Face directory."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from recipes.driver import RecipeError, Run, log


def latest_checkpoint(checkpoint_dir: str | Path) -> Path:
    """``<dir>/global_step_N`` of the last step verl saved there (its marker file, else the highest N)."""
    from verlkit.preference.export import latest_checkpoint as latest

    try:
        return Path(latest(checkpoint_dir))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (was trainer.save_freq > 0?)") from None


def latest_actor_checkpoint(checkpoint_dir: str | Path) -> Path:
    """``<dir>/global_step_N/actor`` of the last saved step of a ``main_ppo`` run."""
    actor = latest_checkpoint(checkpoint_dir) / "actor"
    if not actor.is_dir():
        raise FileNotFoundError(f"{actor}: no actor checkpoint")
    return actor


def saved_hf_model(checkpoint: Path) -> Path | None:
    """The Hugging Face model verl saved with the checkpoint (``checkpoint.save_contents`` with
    ``hf_model``), or None."""
    hf = checkpoint / "huggingface"
    return hf if any(hf.glob("*.safetensors")) else None


def merge_checkpoint(run: Run, checkpoint: Path, target: Path, log_path: Path) -> Path:
    """verl's model merger: the FSDP shards of ``checkpoint`` as a Hugging Face directory ``target``
    (a LoRA run also gets ``target/lora_adapter``). Its output goes to ``log_path``."""
    command = [sys.executable, "-m", "verl.model_merger", "merge", "--backend", "fsdp", "--local_dir", str(checkpoint),
               "--target_dir", str(target)]  # fmt: skip
    if run.run_process(f"export {target.name}", command, log_path, console=False):
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RecipeError(f"exporting {checkpoint} failed (log: {log_path}):\n{tail}")
    return target


def export_hf(run: Run, checkpoint_root: Path, target: Path, log_path: Path, actor: bool = False) -> Path:
    """The last saved step under ``checkpoint_root`` (its ``actor/`` for a ``main_ppo`` run) as a Hugging
    Face directory ``target``: the copy saved with the checkpoint if there is one, else merged."""
    try:
        checkpoint = latest_actor_checkpoint(checkpoint_root) if actor else latest_checkpoint(checkpoint_root)
    except FileNotFoundError as e:
        raise RecipeError(str(e)) from None
    shutil.rmtree(target, ignore_errors=True)
    saved = saved_hf_model(checkpoint)
    if saved:
        shutil.copytree(saved, target)
    else:
        merge_checkpoint(run, checkpoint, target, log_path)
    log(f"exported {checkpoint} -> {target}")
    return target
