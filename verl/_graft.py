"""The ``verl.plugins`` entry point: graft this repository's ``verl/`` tree onto upstream verl.

verl 0.9.1 imports every ``verl.plugins`` entry point at the end of ``import verl``, in the driver
and in every Ray worker. Importing this module (shipped as ``verlkit_tree._graft``) does three
things, all idempotent:

1. Installs a meta-path finder that resolves ``verl.<dotted.name>`` to a file of this tree when
   upstream verl has no module of that name. Upstream modules always win (the finder sits at the
   end of ``sys.meta_path``), so nothing of upstream can be shadowed; ``verl.utils.reward_score.grade``
   and ``verl.toolkit.launcher`` resolve to our files. No ``__path__`` is mutated and nothing under
   ``verl.trainer``/``verl.workers`` is imported here, so the plugin costs ~1 ms.
2. Replaces ``verl.utils.reward_score.default_compute_score`` (what verl's reward managers call when
   no custom function is configured) with our registry's dispatcher, keeping upstream's function
   as the fallback for sources we do not register.
3. Arms a hook that adds the reward results' extra keys (verifier failures, cache hits, parse
   rates, ...) to every training step's metrics (``verl.toolkit.reward_metrics``).
4. When the CPU profile is selected (``VERL_PLATFORM=cpu``), loads ``verl.cpu_profile``, which
   registers the CPU platform and the HF rollout. On any other platform it does nothing.

verl swallows plugin import errors at debug level, so every failure here is logged at ERROR level
before being re-raised.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("verlkit.plugin")

TREE_ROOT = Path(__file__).resolve().parent
_SENTINEL = "__verlkit_grafted__"


class _TreeFinder(importlib.abc.MetaPathFinder):
    """Resolve ``verl.*`` names that upstream does not provide to files under ``TREE_ROOT``."""

    def __init__(self, root: Path):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("verl."):
            return None
        rel = fullname.split(".")[1:]
        base = self.root.joinpath(*rel)
        pkg_init = base / "__init__.py"
        if pkg_init.is_file():
            return importlib.util.spec_from_file_location(
                fullname, pkg_init, submodule_search_locations=[str(base)]
            )
        module_file = base.with_suffix(".py")
        if module_file.is_file():
            return importlib.util.spec_from_file_location(fullname, module_file)
        return None


def _install_finder() -> None:
    if any(isinstance(f, _TreeFinder) for f in sys.meta_path):
        return
    sys.meta_path.append(_TreeFinder(TREE_ROOT))


def _install_dispatcher() -> None:
    import verl.utils.reward_score as upstream

    if getattr(upstream, _SENTINEL, False):
        return
    from verl.utils.reward_score import registry

    registry.set_upstream_fallback(upstream.default_compute_score)
    upstream.default_compute_score = registry.compute_score
    setattr(upstream, _SENTINEL, True)


def _arm_step_metrics() -> None:
    from verl.toolkit import advantage_dump, reward_metrics
    from verl.toolkit.import_hooks import on_import

    reward_metrics.arm(on_import)
    advantage_dump.arm(on_import)


def _maybe_load_cpu_profile() -> None:
    if os.environ.get("VERL_PLATFORM", "").strip().lower() != "cpu":
        return
    import verl.cpu_profile

    verl.cpu_profile.activate()


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
