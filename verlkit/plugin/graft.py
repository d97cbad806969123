"""The ``verl.plugins`` entry point (``verlkit.plugin.graft``): our reward modules under verl's names.

verl 0.9.1 imports every ``verl.plugins`` entry point at the end of ``import verl``, in the driver
and in every Ray worker. Importing this module does four things, all idempotent:

1. Installs a meta-path finder that resolves ``verl.utils.reward_score.<name>`` to
   ``verl/utils/reward_score/<name>.py`` of this project when upstream verl has no module of that
   name. That folder is the only thing grafted onto upstream's names; upstream modules always win (the
   finder sits at the end of ``sys.meta_path``). No ``__path__`` is mutated and nothing under
   ``verl.trainer``/``verl.workers`` is imported here, so the plugin costs ~1 ms.
2. Replaces ``verl.utils.reward_score.default_compute_score`` (what verl's reward managers call when
   no custom function is configured) with the registry's drop-in ``default_compute_score``: upstream's
   exact result for every source upstream scores, our rewards for the sources only we know. Our
   fixed result schema applies where the registry is the configured custom reward function.
3. Arms hooks that add the reward results' extra keys (verifier failures, cache hits, parse rates,
   ...) and the calibration monitor to every training step's metrics (``verlkit.plugin.step_metrics``),
   and that hand our score components to verl's ``gdpo`` estimator on the v1 trainer too
   (``verlkit.plugin.gdpo_components``).
4. When the CPU profile is selected (``VERL_PLATFORM=cpu``), loads ``verlkit.cpu_profile``, which
   registers the CPU platform and the HF rollout. On any other platform it does nothing.

verl swallows plugin import errors at debug level, so every failure here is logged at ERROR level
before being re-raised.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("verlkit.plugin")

GRAFTED_PACKAGE = "verl.utils.reward_score"
_SENTINEL = "__verlkit_grafted__"


def grafted_tree_root() -> Path:
    """The folder holding our ``utils/reward_score/*.py``: the repository's ``verl/`` in a source
    checkout or editable install, the copy ``verlkit/_grafted/`` that ``setup.py`` ships in a wheel."""
    package_root = Path(__file__).resolve().parents[1]
    shipped = package_root / "_grafted"
    return shipped if shipped.is_dir() else package_root.parent / "verl"


class _RewardTreeFinder(importlib.abc.MetaPathFinder):
    """Resolve ``verl.utils.reward_score.<name>`` names that upstream does not provide to our files."""

    def __init__(self, folder: Path):
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != GRAFTED_PACKAGE:
            return None
        module_file = self.folder / f"{name}.py"
        if module_file.is_file():
            return importlib.util.spec_from_file_location(fullname, module_file)
        return None


def _install_finder() -> None:
    if any(isinstance(f, _RewardTreeFinder) for f in sys.meta_path):
        return
    sys.meta_path.append(_RewardTreeFinder(grafted_tree_root() / "utils" / "reward_score"))


def _install_dispatcher() -> None:
    import verl.utils.reward_score as upstream

    if getattr(upstream, _SENTINEL, False):
        return
    from verl.utils.reward_score import registry

    registry.set_upstream_fallback(upstream.default_compute_score)
    upstream.default_compute_score = registry.default_compute_score
    setattr(upstream, _SENTINEL, True)


def _arm_step_metrics() -> None:
    from verlkit.plugin import advantage_dump, gdpo_components, step_metrics
    from verlkit.plugin.import_hooks import on_import

    step_metrics.arm(on_import)
    advantage_dump.arm(on_import)
    gdpo_components.arm(on_import)


def _maybe_load_cpu_profile() -> None:
    if os.environ.get("VERL_PLATFORM", "").strip().lower() != "cpu":
        return
    import verlkit.cpu_profile

    verlkit.cpu_profile.activate()


def install() -> None:
    try:
        _install_finder()
        _install_dispatcher()
        _arm_step_metrics()
        _maybe_load_cpu_profile()
    except Exception:
        logger.exception("verlkit plugin failed to load; our reward sources and CPU profile are unavailable")
        raise


install()
