"""Run a callback right after a module is first imported (or now, if it already is).

Used to patch or extend verl modules lazily, so that loading our plugin on ``import verl`` does not
import verl's heavy trainer/worker modules in processes that never use them.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading
from typing import Callable

logger = logging.getLogger("verlkit.import_hooks")

_hooks: dict[str, list[Callable]] = {}
_lock = threading.Lock()


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of watched modules so callbacks run after the module body executed."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _HookedLoader(spec.loader, fullname)
                return spec
        return None


class _HookedLoader(importlib.abc.Loader):
    def __init__(self, inner, fullname):
        self.inner = inner
        self.fullname = fullname

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _run(self.fullname, module)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _run(fullname, module):
    with _lock:
        callbacks = _hooks.pop(fullname, [])
    for callback in callbacks:
        try:
            callback(module)
        except Exception:
            logger.exception("post-import hook for %s failed", fullname)
            raise


def on_import(module_name: str, callback: Callable) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported (immediately if it already is)."""
    if module_name in sys.modules:
        callback(sys.modules[module_name])
        return
    with _lock:
        _hooks.setdefault(module_name, []).append(callback)
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
