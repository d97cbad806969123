"""One asyncio event loop per process, on a daemon thread, for async work started from sync code.

Async clients (aiohttp sessions) are bound to the loop they were created on. Running them on one
dedicated loop lets sync callers (``run_sync``) and async callers on any other loop
(``await run_async(...)``) share one client per process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from typing import Any, Awaitable, Coroutine

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_loop_pid: int | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The process's background loop, started on first use (and again after a fork)."""
    global _loop, _loop_pid
    with _lock:
        if _loop is None or _loop_pid != os.getpid() or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="verlkit-background-loop", daemon=True)
            thread.start()
            _loop, _loop_pid = loop, os.getpid()
        return _loop


def submit(coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future:
    return asyncio.run_coroutine_threadsafe(coro, get_loop())


def run_sync(awaitable: Awaitable[Any], timeout: float | None = None) -> Any:
    """Run on the background loop and block for the result. Must not be called from that loop."""
    loop = get_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("run_sync() called from the background loop itself; await the coroutine instead")
    coro = awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


async def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run on the background loop, awaited from whatever loop the caller is on."""
    loop = get_loop()
    if asyncio.get_running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
