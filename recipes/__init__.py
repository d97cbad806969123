"""Recipes: the command lines of run_*.sh, composed in Python so tests can check them."""


def format_table(rows: list[tuple[str, ...]] | list[list[str]]) -> str:
    """Rows of strings (the first is the header) as left-aligned columns for a recipe's end report."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


def cpu_profile_overrides():
    """``verlkit/cpu_profile/overrides.py`` imported under the package's shipped name: as
    ``verlkit.cpu_profile.overrides`` it would first import upstream verl, which the recipes' small
    command-line helpers otherwise never need (5-40 s per call on a small machine)."""
    import importlib

    return importlib.import_module("verlkit.cpu_profile.overrides")


def latest_checkpoint(checkpoint_dir: str):
    """``<dir>/global_step_N`` of the last step verl saved there (its marker file, else the highest N)."""
    # the shipped name: this stdlib-only helper does not need upstream verl imported first
    from verlkit.preference.export import latest_checkpoint as latest

    try:
        return latest(checkpoint_dir)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{e} (was trainer.save_freq > 0?)") from None


def latest_actor_checkpoint(checkpoint_dir: str) -> str:
    """``<dir>/global_step_N/actor`` of the last saved step of a ``main_ppo`` run."""
    actor = latest_checkpoint(checkpoint_dir) / "actor"
    if not actor.is_dir():
        raise FileNotFoundError(f"{actor}: no actor checkpoint")
    return str(actor)
