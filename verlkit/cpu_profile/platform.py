"""A verl platform for machines without an accelerator.

Registered as ``cpu`` in verl's ``PlatformRegistry`` and selected with ``VERL_PLATFORM=cpu`` (never
auto-detected, so it cannot take over a GPU node). Ray still schedules workers on the logical
``GPU`` resource: recipes start Ray with ``num_gpus`` logical GPUs, which keeps verl's resource
pools unchanged.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace
from typing import Any, Optional

import torch

from verl.plugin.platform import PlatformBase, PlatformRegistry


def _zero(*_args, **_kwargs) -> int:
    return 0


def _noop(*_args, **_kwargs) -> None:
    return None


class _CPUDeviceModule(SimpleNamespace):
    """The subset of ``torch.cuda`` verl calls through ``get_torch_device()``, answered for the CPU:
    memory statistics are 0 (verl only logs them), seeding and RNG state go to torch's CPU RNG."""

    def __getattr__(self, name: str) -> Any:
        # Anything else torch.cpu has (Stream, Event, current_stream, ...) comes from there.
        return getattr(torch.cpu, name)


def _make_device_module() -> _CPUDeviceModule:
    return _CPUDeviceModule(
        is_available=lambda: True,
        device_count=lambda: 1,
        current_device=lambda: "cpu",
        set_device=_noop,
        synchronize=_noop,
        empty_cache=_noop,
        ipc_collect=_noop,
        reset_peak_memory_stats=_noop,
        memory_allocated=_zero,
        max_memory_allocated=_zero,
        memory_reserved=_zero,
        max_memory_reserved=_zero,
        mem_get_info=lambda *_a, **_k: (0, 0),
        memory_stats=lambda *_a, **_k: {},
        get_device_name=lambda *_a, **_k: "CPU",
        get_device_properties=lambda *_a, **_k: SimpleNamespace(name="CPU", total_memory=0),
        manual_seed=torch.manual_seed,
        manual_seed_all=torch.manual_seed,
        get_rng_state=torch.get_rng_state,
        set_rng_state=torch.set_rng_state,
        get_rng_state_all=lambda: [torch.get_rng_state()],
        set_rng_state_all=lambda states: torch.set_rng_state(states[0]),
        memory=SimpleNamespace(_set_allocator_settings=_noop),
    )


@PlatformRegistry.register(platform="cpu")
class PlatformCPU(PlatformBase):
    _device_module = _make_device_module()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        # Never auto-selected: only VERL_PLATFORM=cpu picks this platform.
        return False

    def current_device(self):
        # A string, not an int: verl treats an int as an accelerator index.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def cudart(self) -> Any:
        return None
