"""Recipes: the command lines of run_*.sh, composed in Python so tests can check them."""


def cpu_profile_overrides():
    """``verl/cpu_profile/overrides.py`` imported under the package's shipped name: as
    ``verl.cpu_profile.overrides`` it would first import upstream verl, which the recipes' small
    command-line helpers otherwise never need (5-40 s per call on a small machine)."""
    import importlib

    return importlib.import_module("verlkit_tree.cpu_profile.overrides")
