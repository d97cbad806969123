"""The per-request ledger of ``verlkit.clients.llm``: with ``$VERLKIT_CLIENT_LEDGER`` set to a file path,
every call appends one JSON line (request id, ok, attempts, cache hit, latency, error), from every
process of a run. Fault soaks join it with what the server side saw (the request id is the
``X-Request-Id`` header each attempt carries)."""

from __future__ import annotations

import json
import logging
import os
import time

logger = logging.getLogger(__name__)

LEDGER_ENV = "VERLKIT_CLIENT_LEDGER"


def record_call(done, path: str, started: float):
    """Append one call's outcome (a ``Completion``) to the ledger file and return it unchanged. One
    write of one line, so appends from several processes do not interleave; a ledger that cannot be
    written never fails the call."""
    line = json.dumps({"request_id": done.request_id, "ok": done.ok, "attempts": done.attempts,
                       "cache_hit": done.cache_hit, "deduped": done.deduped, "latency_s": done.latency_s,
                       "wall_s": time.monotonic() - started, "pid": os.getpid(),
                       "error": (done.error or "")[:200]}) + "\n"  # fmt: skip
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError:
        logger.debug("cannot write the client ledger %s", path, exc_info=True)
    return done
