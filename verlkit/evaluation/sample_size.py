"""When an evaluation number rests on too few rows to mean anything, and how reports say so.

A calibration error over 3 parsed replies, or a win rate over 4 judged pairs, prints like a result
and reads like one. Every evaluation that computes such a number checks its sample first with
:func:`check_sample`; a report then carries ``too_few`` (bool) and ``too_few_reason`` (str or None),
its console line prints :func:`shown` (``too few (n=3)`` in place of the number) and its plot's
title carries :func:`title_note`.

The thresholds are the defaults of the evaluation CLIs' ``--min-parsed-rows`` /
``--min-judged-pairs`` options; a report records the threshold it was judged against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# Calibration (ECE, Brier, AUROC, accuracy): below this many PARSED replies the bins hold one or two
# rows each and the ECE swings by tenths from one reply to the next.
MIN_PARSED_ROWS = 10
# Win rate: below this many JUDGED pairs (both replies generated and scored) one pair moves the rate
# by more than ten points.
MIN_JUDGED_PAIRS = 10


def check_sample(n: int, minimum: int, counted: str) -> dict[str, Any]:
    """``{"too_few": bool, "too_few_reason": str | None}`` for a number computed from ``n``
    ``counted`` (e.g. "parsed rows"); ``minimum`` <= 0 turns the check off."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a count (int >= 0), got {n!r}")
    if isinstance(minimum, bool) or not isinstance(minimum, int):
        raise ValueError(f"minimum must be an int, got {minimum!r}")
    too_few = n < minimum
    reason = (f"only {n} {counted} (fewer than {minimum}): the metrics computed from them are not a result"
              if too_few else None)  # fmt: skip
    return {"too_few": too_few, "too_few_reason": reason}


def shown(value: Any, too_few_n: int | None = None, fmt: Callable[[float], str] = lambda v: f"{v:.3f}") -> str:
    """How a console line prints ``value``: ``too few (n=3)`` when the sample was too small
    (``too_few_n`` is its size, None when it was not), ``n/a`` for a missing or non-finite number,
    else ``fmt(value)``."""
    if too_few_n is not None:
        return f"too few (n={too_few_n})"
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt(value)


def title_note(n: int, minimum: int, counted: str) -> str:
    """The line a plot's title carries when its sample is too small."""
    return f"TOO FEW {counted.upper()} (n={n} < {minimum}): not a result"
