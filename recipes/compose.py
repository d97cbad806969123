"""A recipe's configuration: its hydra YAML composed on verl's own trainer config, plus the overrides a
run adds (documented environment knobs, the script's positional arguments, the user's ``-- key=value``
overrides, values only the run knows).

Each recipe keeps its settings in ONE place, ``recipes/<recipe>/config/<name>.yaml`` (``defaults:
[ppo_trainer, _self_]`` or verl's SFT / our preference trainer config) with a ``recipe:`` section for
what the driver needs and verl does not know; ``<name>_cpu.yaml`` adds what the CPU default changes.
The trainer gets the same file and the same overrides (``--config-path DIR --config-name NAME
key=value ...``), so what the driver reads and what the trainer runs cannot drift apart.

Where ``ppo_trainer`` and ``cpu_profile/ppo`` come from: hydra reads ``hydra.searchpath`` from the
PRIMARY config only and refuses it in a config another one includes, so ``<name>_cpu.yaml`` could not
include ``<name>.yaml`` if that file named the search path. None of the files does; the search path
(verl's config package and ours) is one command-line override, :data:`SEARCHPATH`, given to the
trainer and to every in-process composition alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Model paths written as ``local:<name>`` are the local test models (verlkit.models.local), built on
# first use into ~/.cache/verlkit; the driver replaces them by their directories.
LOCAL_MODEL_PREFIX = "local:"
# verl's trainer configs (ppo_trainer, sft_trainer_engine and their groups) and the CPU profile's fragments
CONFIG_PACKAGES = ("pkg://verl.trainer.config", "pkg://verlkit.cpu_profile.config")


class SettingError(ValueError):
    """A knob or argument whose value cannot be a setting (the message names it)."""


# ---- values as hydra's override grammar reads them ------------------------------------------------


def quoted(value: object) -> str:
    """Any text as a quoted hydra string (paths, URLs and device lists like ``0,1`` stay one value)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def text(raw: str) -> str:
    return quoted(raw)


def integer(raw: str) -> str:
    try:
        return str(int(raw))
    except ValueError:
        raise SettingError(f"expected an integer, got {raw!r}") from None


def number(raw: str) -> str:
    try:
        return repr(float(raw))
    except ValueError:
        raise SettingError(f"expected a number, got {raw!r}") from None


def boolean(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise SettingError(f"expected True or False, got {raw!r}")


def boolean_text(raw: str) -> str:
    """A knob's True/False (1/0, yes/no) as a YAML boolean."""
    return "true" if boolean(raw) else "false"


def items(raw: str) -> str:
    """``"console,wandb"`` -> ``['console','wandb']`` (empty entries dropped)."""
    return "[" + ",".join(quoted(x.strip()) for x in raw.split(",") if x.strip()) + "]"


@dataclass(frozen=True)
class Setting:
    """Where one knob or positional argument goes: ``key`` (a config key, or a config group) and how
    its text becomes a value there."""

    key: str
    kind: Callable[[str], str] = text

    def override(self, raw: str, source: str) -> str:
        try:
            return f"{self.key}={self.kind(raw)}"
        except SettingError as e:
            raise SettingError(f"{source}: {e}") from None


def knob_overrides(table: Mapping[str, Setting], environ: Mapping[str, str]) -> list[str]:
    """The overrides of the environment knobs that are set (an empty value counts as unset)."""
    return [setting.override(environ[name], name) for name, setting in table.items() if environ.get(name, "") != ""]


def positional_overrides(names: Sequence[tuple[str, Setting]], values: Sequence[str], usage: str) -> list[str]:
    """The overrides of a script's positional arguments (an empty argument keeps the config's value)."""
    if len(values) > len(names):
        raise SettingError(f"too many arguments ({len(values)}; at most {len(names)}). {usage}")
    return [setting.override(raw, name) for (name, setting), raw in zip(names, values) if raw != ""]


def script_settings(knobs: Mapping[str, Setting], positional: Sequence[tuple[str, Setting]], argv: Sequence[str],
                    environ: Mapping[str, str], usage: str) -> tuple[list[str], list[str]]:  # fmt: skip
    """A script's command line and environment as (the overrides of its knobs and positional arguments,
    the user's overrides after ``--``); the user's come last, so they win."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    return knob_overrides(knobs, environ) + positional_overrides(positional, argv[:cut], usage), argv[cut + 1 :]


def tool_arguments(options: Mapping) -> list[str]:
    """A config section of a command-line tool's options as its arguments: ``{name: value}`` ->
    ``--name value`` (``_`` -> ``-``; None omitted; True a bare flag, False omitted)."""
    out: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        option = "--" + str(key).replace("_", "-")
        out += [option] if value is True else [option, str(value)]
    return out


# ---- composing ----------------------------------------------------------------------------------


def searchpath_override(extra: Sequence[str] = ()) -> str:
    """The ``hydra.searchpath=[...]`` override that finds verl's configs and ours."""
    return "hydra.searchpath=[" + ",".join(quoted(p) for p in (*CONFIG_PACKAGES, *extra)) + "]"


def compose(config_dir: str | Path, name: str, overrides: Sequence[str] = ()):
    """``<config_dir>/<name>.yaml`` with ``overrides``, composed by hydra the way the trainer composes it
    (the search path first; importing verl's config package takes a few seconds once)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from verlkit.preference.train import register_configs

    register_configs()  # preference_trainer and its typed `preference` group, as the trainer registers them
    with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
        return hydra_compose(config_name=name, overrides=[searchpath_override(), *overrides])


def missing(cfg, keys: Mapping[str, str]) -> str | None:
    """A message for the first of ``keys`` (dotted key -> what it is) without a value (``???`` in a
    config: the user must give one), else None."""
    from omegaconf import OmegaConf

    for key, what in keys.items():
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or OmegaConf.is_missing(node, leaf):
            return f"{what} is required ({key})"
    return None


def local_model_overrides(section, prefix: str = "recipe") -> list[str]:
    """``key='<dir>'`` for every ``local:<name>`` value under ``section`` (building the model if needed)."""
    from omegaconf import DictConfig

    out = []
    for key, value in section.items():
        path = f"{prefix}.{key}"
        if isinstance(value, DictConfig):
            out += local_model_overrides(value, path)
        elif isinstance(value, str) and value.startswith(LOCAL_MODEL_PREFIX):
            out.append(f"{path}={quoted(local_model(value[len(LOCAL_MODEL_PREFIX):]))}")
    return out


def local_model(name: str) -> Path:
    from verlkit.models.local import BUILDERS

    if name not in BUILDERS:
        raise SettingError(f"{LOCAL_MODEL_PREFIX}{name}: no such local model (known: {sorted(BUILDERS)})")
    return BUILDERS[name](None)


def write_config(cfg, path: Path) -> Path:
    """The composed config as YAML, interpolations resolved where they can be (the file a reader wants:
    every value the run used)."""
    from omegaconf import OmegaConf

    try:
        text_ = OmegaConf.to_yaml(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - a value only the trainer resolves: keep the interpolations
        text_ = OmegaConf.to_yaml(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_)
    return path


_STAGE_PREFIX = re.compile(r"^(?P<plus>\+{0,2})(?P<stage>[a-z]+)\.(?P<rest>.+)$")


def split_stage_overrides(overrides: Sequence[str], stages: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Overrides that start with a stage name (``rloo.trainer.save_freq=5``) go to that stage only, without
    the prefix; the others go everywhere. Returns (common, {stage: overrides})."""
    common: list[str] = []
    per_stage: dict[str, list[str]] = {s: [] for s in stages}
    for item in overrides:
        match = _STAGE_PREFIX.match(item)
        if match and match["stage"] in per_stage:
            per_stage[match["stage"]].append(match["plus"] + match["rest"])
        else:
            common.append(item)
    return common, per_stage
