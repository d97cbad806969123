"""Rule-based math answer check, bounded in wall-clock time by killing the work.

math-verify (sympy underneath) can run for minutes or forever on degenerate answers
(``\\boxed{9^{9^{9^{9}}}}``, ``(10^{10})!``). Its own timeouts use ``signal.alarm``, which only works
on a process's main thread: called from a reward thread it either raises or (timeouts disabled)
never returns. A thread cannot be stopped, so waiting "with a timeout" on one only abandons it.

Here every check runs in a small pool of worker processes (spawned lazily, one pool per process).
A worker takes one task at a time; if it does not answer within ``timeout_s`` of receiving the task
it is SIGKILLed and its slot is refilled by a fresh worker on next use. Inside the worker
math-verify's signal timeouts are disabled: the kill is the bound. So ``check`` returns within
``timeout_s`` + IPC overhead (plus, rarely, a worker start when a slot was just recycled), from any
thread, and a pathological sample costs one worker restart, not a stuck training step.

A GRPO batch repeats answers (n samples per prompt agree on "\\boxed{4}"), so each distinct
(solution, reference) pair is checked once: callers asking while it runs share that check, and a
finished verdict is kept (bounded, most recent first) for later steps. math-verify is a pure function of
the two strings; a failed check (killed, raised, worker died) is shared with the callers waiting on it
but never kept, so a later ask runs it again.

Correctness is math-verify's ``verify(parse(gold), parse(prediction))``; the extracted answer (what
the TinyV verifier prompt shows) is the last ``\\boxed{}`` or the text after the last "answer is".
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import hashlib
import logging
import os
import queue
import socket
import subprocess
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from multiprocessing.connection import Connection

logger = logging.getLogger("verlkit.rule_check")

DEFAULT_TIMEOUT_S = 5.0
KEPT_VERDICTS = 65536  # finished verdicts kept per process (a 20-byte key and a short answer each)
_WORKER_START_TIMEOUT_S = 120.0  # importing sympy in a fresh process on a loaded 2-core box


@dataclass(frozen=True)
class RuleResult:
    correct: bool
    extracted: str | None  # the answer string pulled from the solution (None if nothing answer-like)
    timed_out: bool
    error: str | None = None  # a worker-side exception (the check then counts as not correct)

    @property
    def failed(self) -> bool:
        """The check did not finish (killed at its timeout, math-verify raised, the worker died): ``correct``
        is then unknown, not a verdict. Rewards count it (``rule_failed``) and apply their failure policy."""
        return self.timed_out or self.error is not None


# ---------------------------------------------------------------------------------------------
# Worker side. Run as ``python -c _WORKER_SOURCE FD`` rather than a multiprocessing target: a spawned
# multiprocessing child would re-import ``verl`` (torch and all, ~8 s per worker start here); this
# one imports only math-verify (~1 s), which matters because a killed worker must be replaced.
# ---------------------------------------------------------------------------------------------
_WORKER_SOURCE = r"""
import logging, sys, warnings
from multiprocessing.connection import Connection

warnings.filterwarnings("ignore")
logging.disable(logging.CRITICAL)
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify


def last_boxed(text):
    # Content of the last \boxed{...} (or \fbox{...}), braces matched; None if absent or unbalanced.
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    open_at = text.find("{", start)
    if open_at < 0:
        return None
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i].strip()
    return None


def extract(text):
    # The final answer a reader would take: the last boxed expression, else what follows the last
    # "answer is"/"answer:" on its line. None when the solution states no answer.
    boxed = last_boxed(text)
    if boxed:
        return boxed
    lower = text.lower()
    for marker in ("final answer is", "answer is", "answer:"):
        at = lower.rfind(marker)
        if at >= 0:
            tail = text[at + len(marker):].strip().splitlines()
            value = tail[0].strip().strip("$ .*") if tail else ""
            if value:
                return value
    return None


def check(solution, gold_answer):
    gold_text = gold_answer if "\\boxed" in gold_answer else "\\boxed{" + gold_answer + "}"
    # Timeouts off: they use SIGALRM; the parent kills this process instead.
    gold = parse(gold_text, (LatexExtractionConfig(),), parsing_timeout=None)
    if not gold:
        gold = parse(gold_answer, (ExprExtractionConfig(), LatexExtractionConfig()), parsing_timeout=None)
    pred = parse(solution, (LatexExtractionConfig(), ExprExtractionConfig()), parsing_timeout=None)
    correct = bool(gold and pred and verify(gold, pred, timeout_seconds=None))
    return correct, extract(solution)


conn = Connection(int(sys.argv[1]))
conn.send("ready")
while True:
    try:
        task = conn.recv()
    except (EOFError, OSError):
        break
    if task is None:
        break
    try:
        conn.send(check(*task) + (None,))
    except Exception as exc:
        conn.send((False, None, (type(exc).__name__ + ": " + str(exc))[:300]))
"""


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------
class _Worker:
    """One worker process and our end of its socket."""

    def __init__(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_SOURCE, str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        finally:
            child_sock.close()
        self.conn = Connection(parent_sock.detach())
        if not self.conn.poll(_WORKER_START_TIMEOUT_S):
            self.kill()
            raise RuntimeError(f"rule_check worker did not start within {_WORKER_START_TIMEOUT_S}s")
        self.conn.recv()

    def kill(self) -> None:
        try:
            self.process.kill()
            self.process.wait(5)
        finally:
            self.conn.close()


class RuleCheckPool:
    """A fixed number of slots; each holds a live worker or None (to be started on next use)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self.kills = 0
        for _ in range(size):
            self._idle.put(None)

    def check(self, solution_str: str, ground_truth: str, timeout_s: float) -> RuleResult:
        worker = self._idle.get()
        try:
            if worker is None:
                worker = _Worker()
                with self._lock:
                    self._all.add(worker)
            worker.conn.send((solution_str, ground_truth))
            if worker.conn.poll(timeout_s):
                correct, extracted, error = worker.conn.recv()
                result = RuleResult(bool(correct), extracted, False, error)
            else:
                self._retire(worker)
                worker = None
                self.kills += 1
                result = RuleResult(False, None, True, f"killed after {timeout_s}s")
                self._refill_in_background()
                return result
        except (EOFError, OSError, BrokenPipeError) as exc:  # the worker died (e.g. OOM-killed)
            if worker is not None:
                self._retire(worker)
            worker = None
            result = RuleResult(False, None, False, f"worker died: {exc!r}")
        except BaseException:
            if worker is not None:
                self._retire(worker)
            self._idle.put(None)
            raise
        self._idle.put(worker)
        return result

    def _refill_in_background(self) -> None:
        """Start the killed worker's replacement now, off the caller's path (a worker start costs ~1 s
        of imports); the slot goes back to the idle queue once it is ready (or empty if the start failed)."""

        def start() -> None:
            try:
                fresh: _Worker | None = _Worker()
                with self._lock:
                    if self._closed:
                        fresh.kill()
                        fresh = None
                    else:
                        self._all.add(fresh)
            except Exception:
                logger.warning("could not start a rule_check worker; the next check will retry", exc_info=True)
                fresh = None
            self._idle.put(fresh)

        threading.Thread(target=start, name="verlkit-rule-check-refill", daemon=True).start()

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def close(self) -> None:
        with self._lock:
            workers, self._all = list(self._all), set()
            self._closed = True
        for worker in workers:
            try:
                worker.process.terminate()
            except OSError:
                pass
        for worker in workers:
            try:
                worker.process.wait(2)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(2)
            worker.conn.close()


class _Verdicts:
    """One check per distinct (solution, reference): the running ones (a future each, shared by every
    caller that asks meanwhile) and the finished ones (an LRU of ``KEPT_VERDICTS``; failures not kept)."""

    def __init__(self, capacity: int = KEPT_VERDICTS) -> None:
        self.capacity = capacity
        self._kept: OrderedDict[bytes, RuleResult] = OrderedDict()
        self._running: dict[bytes, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self.checked = self.reused = 0  # checks run by a worker; answers given without one

    @staticmethod
    def key(solution_str: str, ground_truth: str) -> bytes:
        digest = hashlib.blake2b(digest_size=20)
        for part in (ground_truth, solution_str):  # length-prefixed: ("ab", "c") and ("a", "bc") differ
            data = part.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
        return digest.digest()

    def claim(self, key: bytes) -> tuple[concurrent.futures.Future, bool]:
        """The future that answers ``key`` and whether the caller owns it (must run the check and
        ``settle`` it); a kept verdict comes back as a finished future."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is not None:
                self._kept.move_to_end(key)
                self.reused += 1
                done: concurrent.futures.Future = concurrent.futures.Future()
                done.set_result(kept)
                return done, False
            running = self._running.get(key)
            if running is not None:
                self.reused += 1
                return running, False
            future: concurrent.futures.Future = concurrent.futures.Future()
            # running from now on, so it cannot be cancelled: one async caller cancelled (wrap_future passes
            # the cancellation on) must not cancel the check the other callers wait for
            future.set_running_or_notify_cancel()
            self._running[key] = future
            self.checked += 1
            return future, True

    def settle(self, key: bytes, future: concurrent.futures.Future, run) -> None:
        """Run the owned check ``run()`` and hand its result (or exception) to every waiter."""
        try:
            result = run()
        except BaseException as exc:
            with self._lock:
                self._running.pop(key, None)
            future.set_exception(exc)
            raise
        with self._lock:
            self._running.pop(key, None)
            if not result.failed:
                self._kept[key] = result
                if len(self._kept) > self.capacity:
                    self._kept.popitem(last=False)
        future.set_result(result)


_pool: RuleCheckPool | None = None
_pool_pid: int | None = None
_pool_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None
_verdicts = _Verdicts()


def default_pool_size() -> int:
    env = os.environ.get("VERLKIT_RULE_CHECK_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(4, os.cpu_count() or 1))


def get_pool() -> RuleCheckPool:
    """The process's pool, created on first use (and again after a fork)."""
    global _pool, _pool_pid, _executor, _verdicts
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = RuleCheckPool(default_pool_size())
            _verdicts = _Verdicts()  # a forked child must not wait on its parent's running checks
            _pool_pid = os.getpid()
            # Threads only wait on worker pipes (each wait bounded by timeout_s); one per slot, plus
            # headroom so callers queue on the pool, not on the executor.
            _executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=2 * _pool.size, thread_name_prefix="verlkit-rule-check"
            )
        return _pool


def _checked(pool: RuleCheckPool, solution_str: str, ground_truth: str, timeout_s: float) -> RuleResult:
    """The verdict for one pair: kept, shared with the caller already checking it, or checked now."""
    key = _verdicts.key(solution_str, ground_truth)
    future, owner = _verdicts.claim(key)
    if owner:
        _verdicts.settle(key, future, lambda: pool.check(solution_str, ground_truth, timeout_s))
    return future.result()  # a waiter's wait is bounded by the owner's check


def check(solution_str: str, ground_truth: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> RuleResult:
    """Is ``solution_str``'s final answer equal to ``ground_truth``? Bounded by ``timeout_s`` of work."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    return _checked(get_pool(), str(solution_str), str(ground_truth), timeout_s)


async def check_async(solution_str: str, ground_truth: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> RuleResult:
    """``check`` for async callers: the blocking wait happens on a small dedicated thread pool; a kept
    verdict or a check already running takes no thread."""
    pool = get_pool()
    assert _executor is not None
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    return await asyncio.wrap_future(_submitted(pool, str(solution_str), str(ground_truth), timeout_s))


def _submitted(pool: RuleCheckPool, solution_str: str, ground_truth: str, timeout_s: float) -> concurrent.futures.Future:
    """The future verdict for one pair; an owned check goes to the executor. The executor's threads only
    ever run checks, never wait on another's future: a wait there could hold the thread a queued check needs."""
    executor, verdicts = _executor, _verdicts
    assert executor is not None
    key = verdicts.key(solution_str, ground_truth)
    future, owner = verdicts.claim(key)
    if owner:
        try:
            executor.submit(verdicts.settle, key, future, lambda: pool.check(solution_str, ground_truth, timeout_s))
        except RuntimeError as exc:  # the executor was shut down (interpreter exit): no waiter may hang on it
            verdicts.settle(key, future, lambda: RuleResult(False, None, False, f"rule check unavailable: {exc}"))
    return future


def check_many(pairs: list[tuple[str, str]], timeout_s: float = DEFAULT_TIMEOUT_S) -> list[RuleResult]:
    """Check a batch using every worker of the pool."""
    pool = get_pool()
    assert _executor is not None
    futures = [_submitted(pool, str(solution), str(reference), timeout_s) for solution, reference in pairs]
    return [future.result() for future in futures]


def stats() -> dict[str, int]:
    """This process's counts: ``checked`` (by a worker), ``reused`` (kept or shared), ``kills``."""
    return {"checked": _verdicts.checked, "reused": _verdicts.reused, "kills": _pool.kills if _pool else 0}


def forget() -> None:
    """Drop the kept verdicts (benchmarks: every timed pass starts cold, as a checker without them would)."""
    with _verdicts._lock:
        _verdicts._kept.clear()


def warm_up(timeout_s: float = 60.0) -> None:
    """Start every worker now (benchmarks; otherwise workers start on first use)."""
    pool = get_pool()
    assert _executor is not None
    list(_executor.map(lambda _: pool.check("\\boxed{1}", "1", timeout_s), range(pool.size)))


@atexit.register
def shutdown() -> None:
    """Terminate this process's workers (registered at exit; safe to call more than once)."""
    global _pool, _executor
    with _pool_lock:
        pool, _pool = (_pool if _pool_pid == os.getpid() else None), None
        executor, _executor = _executor, None
    if pool is not None:
        pool.close()
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)


