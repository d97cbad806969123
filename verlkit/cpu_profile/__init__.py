"""The CPU runtime profile: run verl 0.9.1's real trainers on a machine without an accelerator.

Selected with ``VERL_PLATFORM=cpu`` (the recipes set it when no GPU is visible); the plugin then
calls :func:`activate` in every process that imports verl, Ray workers included. On any other
platform nothing here is imported.

This package leans on verl internals (private names, a few patched call sites), which is why verl
is pinned and why it is kept apart from everything else. Each patch is applied lazily, right after
the verl module it targets is first imported, so a process pays only for what it uses.
What is patched and why: docs/cpu-profile.md.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger("verlkit.cpu_profile")

_activated = False


def activate() -> None:
    """Register the CPU platform, the HF rollout and the frozen vLLM replica, and arm the lazy patches.
    Idempotent."""
    global _activated
    if _activated:
        return
    _activated = True

    from verlkit.cpu_profile import platform  # noqa: F401  (registers PlatformRegistry "cpu")
    from verlkit.cpu_profile import patches
    from verlkit.plugin.import_hooks import on_import

    # verl's engine registry knows cuda/npu only; the FSDP engine itself runs on CPU tensors.
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    patches.arm(on_import)
