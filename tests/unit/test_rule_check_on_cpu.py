"""Bounded rule-based math check. Uses the real worker pool (a couple of worker processes)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from verlkit.clients import rule_check

PATHOLOGICAL = [
    ("\\boxed{9^{9^{9^{9}}}}", "1"),
    ("The answer is \\boxed{(10^{10})!}", "1"),
]


@pytest.fixture(scope="module", autouse=True)
def pool():
    rule_check.warm_up()
    yield rule_check.get_pool()


@pytest.mark.parametrize(
    "solution,gold,correct,extracted",
    [
        ("so the answer is \\boxed{42}", "42", True, "42"),
        ("\\boxed{\\frac{1}{2}}", "0.5", True, "\\frac{1}{2}"),
        ("We get $x = \\boxed{3}$.", "3", True, "3"),
        ("The final answer is 7", "7", True, "7"),
        ("\\boxed{41}", "42", False, "41"),
        ("I do not know.", "42", False, None),
    ],
)
def test_correctness_and_extraction(solution, gold, correct, extracted):
    result = rule_check.check(solution, gold)
    assert result == rule_check.RuleResult(correct, extracted, False, None)


@pytest.mark.parametrize("solution,gold", PATHOLOGICAL)
def test_pathological_input_is_bounded_by_killing_the_worker(pool, solution, gold):
    kills_before = pool.kills
    start = time.monotonic()
    result = rule_check.check(solution, gold, timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert result.timed_out and not result.correct
    # the kill is what ends it (the counter below); the margin only rules out waiting for sympy itself,
    # which takes minutes on these inputs, and leaves room for a loaded machine
    assert elapsed < 1.0 + 20.0
    assert pool.kills == kills_before + 1
    # the slot is refilled: the next check works
    assert rule_check.check("\\boxed{2}", "2").correct


def test_correct_from_a_non_main_thread():
    """math-verify's signal-based timeouts fail off the main thread (verl #3407: silent zeros); the
    worker disables them, so a reward thread gets the right answer."""
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(rule_check.check("\\boxed{\\sqrt{4}}", "2")))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 3 and all(r.correct and not r.timed_out for r in results)


def test_async_variant_runs_concurrently_with_a_stuck_sample():
    async def scenario():
        stuck = asyncio.ensure_future(rule_check.check_async(*PATHOLOGICAL[0], timeout_s=2.0))
        fine = await asyncio.gather(*(rule_check.check_async(f"\\boxed{{{i}}}", str(i)) for i in range(10)))
        return await stuck, fine

    stuck, fine = asyncio.run(scenario())
    assert stuck.timed_out and all(r.correct for r in fine)


def test_check_many_preserves_order():
    pairs = [(f"\\boxed{{{i}}}", str(i if i % 3 else i + 1)) for i in range(20)]
    results = rule_check.check_many(pairs)
    assert [r.correct for r in results] == [bool(i % 3) for i in range(20)]


def test_invalid_timeout():
    with pytest.raises(ValueError):
        rule_check.check("\\boxed{1}", "1", timeout_s=0)
