"""Entry point of the preference trainer: ``python -m verlkit.preference.train [hydra overrides]``,
under torchrun ``torchrun --standalone --nproc_per_node=N -m verlkit.preference.train ...``.

The hydra config is ``preference_trainer`` (``verlkit/preference/config/preference_trainer.yaml``):
verl's own ``sft_trainer_engine`` config plus the typed ``preference`` group
(:class:`~verlkit.preference.config.PreferenceConfig`). Any override of verl's SFT config works as
with ``verl.trainer.sft_trainer``; an unknown key or a value of the wrong type fails composition, an
out-of-range ``preference.*`` value fails right after it, before verl is imported. ::

    torchrun --standalone --nproc_per_node=2 -m verlkit.preference.train \\
        model.path=... data.train_files=prefs.parquet data.train_batch_size=8 \\
        preference.loss=lcdpo preference.beta=0.1 $(python -m verlkit.cpu_profile.overrides sft --workers 2)

A recipe writes its own config on top of this one and selects it::

    # <dir>/my_run.yaml
    defaults: [preference_trainer, _self_]
    preference: {loss: lcdpo}

    python -m verlkit.preference.train --config-path /abs/<dir> --config-name my_run overrides...

(hydra resolves a relative ``--config-path`` against this package; ``--config-dir <dir>``, relative to
the working directory, with ``--config-name my_run`` works as well.)

Why a search-path plugin: hydra reads ``hydra.searchpath`` only from the PRIMARY config and refuses it
in any other, so a recipe's config composing ``preference_trainer`` could not inherit a search path
from it. :class:`PreferenceSearchPath`, registered in this process only, appends our config directory
and verl's (``verl/trainer/config``) to every composition, whichever config is primary.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import hydra
from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig

from verlkit.preference.config import PreferenceConfig, preference_options

CONFIG_DIR = Path(__file__).resolve().parent / "config"
CONFIG_NAME = "preference_trainer"


def verl_config_dir() -> Path:
    """verl's trainer config directory (what ``pkg://verl.trainer.config`` names), found without
    importing verl: composing, or failing to compose, should not cost verl's 5+ s import."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("upstream verl is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config"


class PreferenceSearchPath(SearchPathPlugin):
    """Our config directory (``preference_trainer``) and verl's (``sft_trainer_engine`` and its groups)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        search_path.append("verlkit-preference", f"file://{CONFIG_DIR}")
        search_path.append("verl", f"file://{verl_config_dir()}")


def register_configs() -> None:
    """Make ``preference_trainer`` composable in this process (repeat calls change nothing)."""
    ConfigStore.instance().store(group="preference", name="default", node=PreferenceConfig)
    Plugins.instance().register(PreferenceSearchPath)


def compose_config(
    overrides: Sequence[str] = (), config_dir: str | Path | None = None, config_name: str = CONFIG_NAME
) -> DictConfig:
    """The config the entry point would run with: ``config_name`` from ``config_dir`` (default: ours)
    with hydra ``overrides``, its ``preference`` options checked."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(Path(config_dir or CONFIG_DIR).resolve()), version_base=None):
        config = compose(config_name=config_name, overrides=list(overrides))
    preference_options(config)
    return config


@hydra.main(config_path=str(CONFIG_DIR), config_name=CONFIG_NAME, version_base=None)
def main(config: DictConfig) -> None:
    preference_options(config)  # range checks, before verl's import and the model load
    # verl's engine stack: imported only to train, so composition errors come back fast
    from verl.utils.device import auto_set_device
    from verl.utils.distributed import destroy_global_process_group, initialize_global_process_group

    from verlkit.preference.trainer import PreferenceTrainer

    auto_set_device(config)
    initialize_global_process_group()
    PreferenceTrainer(config=config).fit()
    destroy_global_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    register_configs()
    main()
