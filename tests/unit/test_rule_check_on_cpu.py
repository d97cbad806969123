"""Bounded rule-based math check. Uses the real worker pool (a couple of worker processes)."""

from __future__ import annotations

import asyncio
import concurrent.futures
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


def test_each_distinct_pair_is_checked_once_per_batch():
    """A GRPO group repeats answers: 12 asks of 3 distinct (answer, reference) pairs, all at once, run
    3 checks; asking again later runs none."""
    pairs = [("so \\boxed{17}", "17"), ("\\boxed{18}", "17"), ("\\boxed{17}", "18")] * 4

    async def batch():
        return await asyncio.gather(*(rule_check.check_async(s, g) for s, g in pairs))

    before = rule_check.stats()
    results = asyncio.run(batch())
    middle = rule_check.stats()
    again = rule_check.check_many(pairs)
    after = rule_check.stats()
    assert [r.correct for r in results] == [True, False, False] * 4
    assert [r.extracted for r in results] == ["17", "18", "17"] * 4
    assert again == results
    assert middle["checked"] - before["checked"] == 3 and middle["reused"] - before["reused"] == 9
    assert after["checked"] == middle["checked"] and after["reused"] - middle["reused"] == 12


def test_pairs_whose_texts_join_alike_are_told_apart():
    # reference + solution is "12 so \\boxed{12}" for both pairs; only the first is correct
    assert rule_check.check(" so \\boxed{12}", "12").correct is True
    assert rule_check.check("2 so \\boxed{12}", "1").correct is False


def test_a_failed_check_is_shared_while_it_runs_but_never_kept(pool):
    """Three asks of one pathological pair while it runs: one worker killed, three flagged results.
    A later ask runs (and is killed) again: a timeout says nothing about the pair, only about that try."""
    solution, gold = "\\boxed{(10^{10})!} again", "2"

    async def three():
        return await asyncio.gather(*(rule_check.check_async(solution, gold, timeout_s=1.0) for _ in range(3)))

    kills = pool.kills
    first = asyncio.run(three())
    assert all(r.timed_out for r in first) and pool.kills == kills + 1
    assert rule_check.check(solution, gold, timeout_s=1.0).timed_out
    assert pool.kills == kills + 2


def test_a_cancelled_caller_does_not_cancel_the_check_others_wait_for():
    async def scenario():
        pair = ("\\boxed{(10^{10})!} for the cancel test", "3")
        first = asyncio.ensure_future(rule_check.check_async(*pair, timeout_s=1.0))
        second = asyncio.ensure_future(rule_check.check_async(*pair, timeout_s=1.0))
        await asyncio.sleep(0)  # both have asked: the second shares the first's check
        first.cancel()
        return await second

    assert asyncio.run(scenario()).timed_out


def test_a_check_asked_after_the_executor_stopped_fails_flagged_instead_of_hanging(monkeypatch):
    stopped = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    stopped.shutdown()
    rule_check.get_pool()
    monkeypatch.setattr(rule_check, "_executor", stopped)
    result = rule_check.check_many([("\\boxed{5} for the stopped executor", "5")])[0]
    assert result.failed and not result.correct and "unavailable" in result.error
