"""What every recipe driver does first: the profile, its config, and the overrides of one run.

``RecipeSettings`` composes ``<config_dir>/<name>[_cpu].yaml`` with, in this order (later wins): the
documented environment knobs and the script's positional arguments, the run's defaults (the experiment
name), the user's ``--`` overrides, and what only the run knows (its directory, local model paths,
served URLs). The trainer later gets exactly :meth:`RecipeSettings.overrides`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from recipes.compose import Setting, SettingError, compose, local_model_overrides, missing, quoted, script_settings
from recipes.driver import RecipeError, Run, cpu_profile_environment, detect_profile, log


class RecipeSettings:
    def __init__(self, recipe: str, config_dir: Path, knobs: Mapping[str, Setting],
                 positional: Sequence[tuple[str, Setting]], argv: Sequence[str], usage: str,
                 config: str | None = None, route: Callable[[list[str]], list[str]] | None = None):  # fmt: skip
        """``route`` keeps the overrides that belong to this config (the pipeline's own settings)."""
        self.recipe, self.config_dir, self.usage = recipe, config_dir, usage
        self.profile = detect_profile()
        log(f"profile: {self.profile}")
        if self.profile == "cpu":
            cpu_profile_environment()
        self.name = f"{config or recipe}_cpu" if self.profile == "cpu" else (config or recipe)
        try:
            self.chosen, self.extra = script_settings(knobs, positional, argv, os.environ, usage)
        except SettingError as e:
            raise RecipeError(f"{e}. {usage}", code=2) from None
        self.given = self.chosen + self.extra  # everything the user asked for, before any routing
        if route:
            self.chosen, self.extra = route(self.chosen), route(self.extra)
        self.defaults: list[str] = []
        self.runtime: list[str] = []
        self.cfg = self.compose()

    def overrides(self, *more: str) -> list[str]:
        return [*self.chosen, *self.defaults, *self.extra, *self.runtime, *more]

    def compose(self, *more: str):
        return compose(self.config_dir, self.name, self.overrides(*more))

    def require(self, keys: Mapping[str, str]) -> None:
        """Stop (exit 2, with the usage) if one of ``keys`` (dotted key -> what it is) has no value."""
        problem = missing(self.cfg, keys)
        if problem:
            raise RecipeError(f"{problem}. {self.usage}", code=2)

    def add(self, *runtime: str) -> None:
        """Values only the run knows (a served model's URL, a prepared dataset); recomposes."""
        self.runtime += runtime
        self.cfg = self.compose()

    def resolve_models(self, models: Mapping[str, str]) -> None:
        """Every model argument in ``models`` (dotted key -> its role: "policy", "verifier", ...) as a local
        path, before any server or trainer starts: a local directory stays itself, a Hugging Face Hub id
        is resolved through the HF cache as vLLM and verl resolve it (downloaded when the Hub is reachable,
        the cache only under ``HF_HUB_OFFLINE``), and the config then names the snapshot, so what the
        servers and trainers load is what was resolved here. A model that cannot be had stops the run
        with a message naming it. Keys without a value (null) are skipped."""
        from omegaconf import OmegaConf

        from verlkit.models.resolve import ModelResolutionError, resolve_model

        resolved = []
        for key, role in models.items():
            value = OmegaConf.select(self.cfg, key)
            if value is None or str(value) == "":
                continue
            try:
                path = resolve_model(str(value), role=role)
            except ModelResolutionError as e:
                raise RecipeError(f"{key}: {e}", code=2) from None
            if str(path) != str(value):
                log(f"{role}: {value} -> {path}")
                resolved.append(f"{key}={quoted(path)}")
        if resolved:
            self.add(*resolved)

    def open_run(self, stack: contextlib.ExitStack) -> Run:
        """The run directory (``recipe.run_dir``, else ``runs/<recipe>-<time>``); the trainer's experiment
        is named after it, and ``local:<name>`` models are built and named by their directories."""
        run = Run.open(self.recipe, self.profile, self.cfg.recipe.run_dir, stack)
        if "trainer" in self.cfg:
            self.defaults.append(f"trainer.experiment_name={quoted(run.experiment)}")
        try:
            local = local_model_overrides(self.cfg.recipe)
        except SettingError as e:
            raise RecipeError(str(e), code=2) from None
        self.add(f"recipe.run_dir={quoted(run.run_dir)}", *local)
        return run
