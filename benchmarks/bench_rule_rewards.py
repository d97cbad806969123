"""Rule rewards: our bounded math check against verl's own math paths, side by side in one run.

    python benchmarks/bench_rule_rewards.py [--n 4096] [--bound-s 5] [--workers N] [--json out/rule.json]

1. Dispatch: our registry (``compute_score`` sync, ``compute_score_async`` gathered) against upstream
   verl's ``default_compute_score`` on the same gsm8k + MATH rows (string checkers; best of 3).
2. Checkers on ``--n`` MATH-style samples, 1% of them pathological (``samples.PATHOLOGICAL``: nested
   powers, factorial towers, 100k-character outputs), every checker driven the same way verl's reward
   loop drives a sync reward function: from the worker threads of a pool the size of asyncio's
   default executor (``min(32, cpus + 4)``), one call per sample:
     - ours: ``rule_check.check`` (worker processes, each check killed at ``--bound-s``);
     - verl 0.9.1 ``math_verify.compute_score`` (spawn pool of 4, math-verify's own timeouts, 30 s wait);
     - upstream ``default_compute_score("lighteval/MATH", ...)`` (``math_reward``: string normalisation).
   Verdicts are compared on the non-pathological samples. Before the whole batch, ours and verl's
   math_verify are also timed on ``--normal-n`` non-pathological samples alone.
3. The bound: each pathological kind checked alone from a non-main thread with the pool at full size
   (time over the bound), and right after each kill the time until the pool is back to full size
   (every slot holding a ready worker again; see ``until_full``).

Targets (issue 14): ours >= 1.5x verl's math_verify on the whole batch; every pathological sample
within its bound + 0.5 s; the pool back to full size within 1 s after a kill; identical verdicts to
verl's math_verify on the non-pathological samples.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import random
import sys
import threading
import time

import samples
from results import Report, table

APPLICABLE = ("rule_vs_verl_math_verify", "rule_vs_default_compute_score", "pathological_max_over_bound_s")
DRIVER_THREADS = min(32, (os.cpu_count() or 1) + 4)  # asyncio's default executor: verl's run_in_executor(None)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# ---------------------------------------------------------------------------------------------
# 1. Dispatch
# ---------------------------------------------------------------------------------------------
def dispatch_rows(n: int) -> list[tuple[str, str, str]]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 999), rng.randint(1, 999)
        right = rng.random() < 0.6
        if i % 2 == 0:
            ans = a + b if right else a + b + 1
            sol = f"Let me add {a} and {b}. " * rng.randint(1, 20) + f"The total is {ans}.\n#### {ans}"
            rows.append(("openai/gsm8k", sol, str(a + b)))
        else:
            ans = f"\\frac{{{a}}}{{{b}}}" if right else f"\\frac{{{a + 1}}}{{{b}}}"
            sol = "We simplify step by step. " * rng.randint(1, 20) + f"So the answer is $\\boxed{{{ans}}}$."
            rows.append(("lighteval/MATH", sol, f"\\frac{{{a}}}{{{b}}}"))
    return rows


def bench_dispatch(n: int, upstream) -> None:
    from verl.utils.reward_score import registry

    rows = dispatch_rows(n)

    def run_upstream():
        out = []
        for ds, s, gt in rows:
            r = upstream(ds, s, gt)
            out.append(float(r["score"] if isinstance(r, dict) else r))
        return out

    def run_sync():
        return [registry.compute_score(ds, s, gt)["score"] for ds, s, gt in rows]

    def run_async():
        async def go():
            return await asyncio.gather(*(registry.compute_score_async(ds, s, gt) for ds, s, gt in rows))
        return [r["score"] for r in asyncio.run(go())]

    run_upstream(), run_sync()  # warm imports and caches
    best = {name: min((timed(fn) for _ in range(3)), key=lambda x: x[0])
            for name, fn in (("upstream", run_upstream), ("sync", run_sync), ("async", run_async))}
    if not best["upstream"][1] == best["sync"][1] == best["async"][1]:
        raise SystemExit("dispatchers disagree on scores")
    t_up = best["upstream"][0]
    table(f"Dispatch: {n} rows (gsm8k + MATH), best of 3", ["dispatcher", "wall s", "rows/s", "vs upstream"],
          [[label, best[k][0], round(n / best[k][0]), f"{t_up / best[k][0]:.2f}x"]
           for k, label in (("upstream", "upstream default_compute_score"), ("sync", "ours registry.compute_score"),
                            ("async", "ours compute_score_async (gather)"))])


# ---------------------------------------------------------------------------------------------
# 2. Checkers on the batch
# ---------------------------------------------------------------------------------------------
def drive(check, batch: list[samples.Sample]) -> tuple[float, list, list[float]]:
    """Every sample through ``check(solution, ground_truth)`` from DRIVER_THREADS worker threads.
    Returns (wall, results, per-sample latency as the caller saw it, queueing for a worker included)."""
    latencies = [0.0] * len(batch)

    def one(i: int):
        start = time.perf_counter()
        out = check(batch[i].solution, batch[i].ground_truth)
        latencies[i] = time.perf_counter() - start
        return out

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(DRIVER_THREADS, thread_name_prefix="reward-loop") as pool:
        results = list(pool.map(one, range(len(batch))))
    return time.perf_counter() - start, results, latencies


def warm_verl_pool(verl_mv) -> None:
    """Start all 4 spawn workers of verl's pool (each imports verl: seconds) before timing."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: verl_mv.compute_score("\\boxed{1}", "1"), range(8)))


def bench_checkers(args, report: Report, upstream) -> None:
    from verl.utils.reward_score import math_verify as verl_mv
    from verlkit.clients import rule_check

    batch = samples.rule_batch(args.n, args.pathological_fraction)
    bad = [i for i, s in enumerate(batch) if s.kind == "pathological"]
    rule_check.warm_up()
    warm_verl_pool(verl_mv)
    pool_size = rule_check.get_pool().size

    if args.normal_n:  # the same two checkers without pathological samples: what a kill costs shows by difference
        normal_batch = [s for s in batch if s.kind == "normal"][: args.normal_n]
        t_verl_normal = drive(verl_mv.compute_score, normal_batch)[0]
        rule_check.forget()
        t_ours_normal = drive(lambda s, gt: rule_check.check(s, gt, timeout_s=args.bound_s), normal_batch)[0]
        table(f"Checkers on {len(normal_batch)} non-pathological samples only (same driver)",
              ["checker", "wall s", "samples/s", "ours faster by"],
              [["ours rule_check.check", t_ours_normal, round(len(normal_batch) / t_ours_normal), "-"],
               ["verl math_verify.compute_score", t_verl_normal, round(len(normal_batch) / t_verl_normal),
                f"{t_verl_normal / t_ours_normal:.2f}x"]])
        report.set("rule_vs_verl_math_verify_normal_only", t_verl_normal / t_ours_normal)
    t_default, default_scores, _ = drive(lambda s, gt: float(upstream("lighteval/MATH", s, gt)), batch)
    print(f"  upstream default_compute_score: {t_default:.1f} s", flush=True)
    t_verl, verl_scores, verl_lat = drive(verl_mv.compute_score, batch)
    print(f"  verl math_verify.compute_score: {t_verl:.1f} s", flush=True)
    verl_mv._pool.shutdown(wait=True)  # its workers are idle now; free the CPU for ours
    kills_before = rule_check.get_pool().kills
    rule_check.forget()  # cold, as verl's checker is: only repeats within this batch are reused
    stats_before = rule_check.stats()
    t_ours, ours_results, ours_lat = drive(lambda s, gt: rule_check.check(s, gt, timeout_s=args.bound_s), batch)
    reused = rule_check.stats()["reused"] - stats_before["reused"]
    print(f"  ours rule_check.check:          {t_ours:.1f} s ({reused} of {len(batch)} samples repeated a pair "
          "already checked or being checked)", flush=True)
    report.set("rule_checks_reused", reused)
    kills = rule_check.get_pool().kills - kills_before

    normal = [i for i, s in enumerate(batch) if s.kind == "normal"]
    ours_correct = [float(r.correct) for r in ours_results]
    vs_verl = [i for i in normal if ours_correct[i] != float(verl_scores[i])]
    vs_default = [i for i in normal if ours_correct[i] != float(default_scores[i])]
    timed_out_normal = sum(ours_results[i].timed_out for i in normal)
    n = len(batch)
    table(f"Checkers: {n} MATH-style samples, {len(bad)} pathological; driven from {DRIVER_THREADS} threads; "
          f"ours: {pool_size} workers, bound {args.bound_s:g} s",
          ["checker", "wall s", "samples/s", "ours faster by", "patho. max s", "verdicts = ours (normal)"],
          [["ours rule_check.check", t_ours, round(n / t_ours), "-", max(ours_lat[i] for i in bad), "-"],
           ["verl math_verify.compute_score", t_verl, round(n / t_verl), f"{t_verl / t_ours:.2f}x",
            max(verl_lat[i] for i in bad), f"{len(normal) - len(vs_verl)}/{len(normal)}"],
           ["upstream default_compute_score", t_default, round(n / t_default), f"{t_default / t_ours:.2f}x", None,
            f"{len(normal) - len(vs_default)}/{len(normal)}"]])
    print(f"ours: {kills} worker(s) killed at the bound, {timed_out_normal} normal sample(s) timed out; "
          "'patho. max s' is the caller's wall time, waiting for a free worker included")
    for label, diffs, other in (("verl math_verify", vs_verl, verl_scores),
                                ("default_compute_score", vs_default, default_scores)):
        for i in diffs[:3]:
            print(f"  differs from {label}: answer {batch[i].answer!r} vs reference {batch[i].ground_truth!r}: "
                  f"ours {ours_correct[i]:.0f}, theirs {float(other[i]):.0f}")
    report.set("rule_vs_verl_math_verify", t_verl / t_ours)
    report.set("rule_vs_default_compute_score", t_default / t_ours)
    report.set("verdict_mismatches_vs_verl_math_verify", len(vs_verl))
    report.set("verdict_mismatches_vs_default_compute_score", len(vs_default))
    report.set("checker_wall_s", {"ours": t_ours, "verl_math_verify": t_verl, "default_compute_score": t_default})
    print("Targets: ours >= 1.5x verl math_verify: "
          f"{t_verl / t_ours:.2f}x {'met' if t_verl / t_ours >= 1.5 else 'MISSED'}; identical verdicts on the "
          f"non-pathological samples: {'met' if not vs_verl else f'MISSED ({len(vs_verl)} differ)'}")


# ---------------------------------------------------------------------------------------------
# 3. The bound and the refill
# ---------------------------------------------------------------------------------------------
def in_thread(fn):
    """Run ``fn`` on a fresh non-main thread (where signal-based timeouts cannot work) and return its result."""
    box: list = []
    thread = threading.Thread(target=lambda: box.append(fn()), name="reward-loop-check")
    thread.start()
    thread.join()
    return box[0]


def until_full(pool, deadline_s: float = 60.0) -> float | None:
    """Seconds until every slot holds a ready worker again, polled right after a kill returned.

    Reads the pool's set of live workers (``_all``: a worker joins it once it has answered "ready",
    just before its slot is handed out again). No public call tells this apart: a probe of ``size``
    concurrent checks is answered by the surviving workers one after another without ever needing
    the replacement. None (and the key left out) if the pool no longer has that attribute."""
    live = getattr(pool, "_all", None)
    if live is None:
        return None
    start = time.perf_counter()
    while len(pool._all) < pool.size and time.perf_counter() - start < deadline_s:
        time.sleep(0.002)
    return time.perf_counter() - start


def bench_bound(args, report: Report) -> None:
    from verlkit.clients import rule_check

    pool = rule_check.get_pool()
    rows, overs, refills = [], [], []
    for name, make in samples.PATHOLOGICAL.items():
        solution = make()
        wall, result = in_thread(lambda: timed(lambda: rule_check.check(solution, "1", timeout_s=args.bound_s)))
        refill = until_full(pool) if result.timed_out else None
        overs.append(wall - args.bound_s)
        if refill is not None:
            refills.append(refill)
        rows.append([name, wall, wall - args.bound_s, "yes" if result.timed_out else "no", refill])
    table(f"Pathological answers, each alone from a non-main thread, bound {args.bound_s:g} s, pool of {pool.size}",
          ["answer", "wall s", "over bound s", "killed", "pool full again after s"], rows)
    report.set("pathological_max_over_bound_s", max(overs))
    if refills:
        report.set("pool_refill_max_s", max(refills))
    elif hasattr(pool, "_all"):
        print("no check was killed: the refill was not exercised")
    else:
        print("pool refill not measured: the rule-check pool no longer exposes its live workers (_all)")
    refill = f"max {max(refills):.2f} s {'met' if max(refills) <= 1.0 else 'MISSED'}" if refills else "no kill"
    print(f"Targets: within bound + 0.5 s: max over {max(overs):+.3f} s "
          f"{'met' if max(overs) <= 0.5 else 'MISSED'}; pool full again within 1 s of a kill: {refill}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096, help="samples in the checker batch")
    ap.add_argument("--pathological-fraction", type=float, default=0.01)
    ap.add_argument("--normal-n", type=int, default=1024,
                    help="also time ours and verl's math_verify on this many non-pathological samples (0: skip)")
    ap.add_argument("--dispatch-n", type=int, default=4096, help="rows in the dispatch comparison (0: skip)")
    ap.add_argument("--bound-s", type=float, default=None, help="our per-check bound (default: the library's)")
    ap.add_argument("--workers", type=int, default=None, help="our worker processes (default: the library's)")
    ap.add_argument("--json", help="write the ratios here")
    args = ap.parse_args(argv)
    if args.workers:
        os.environ["VERLKIT_RULE_CHECK_WORKERS"] = str(args.workers)

    import verl  # noqa: F401  (loads our plugin: default_compute_score is now our dispatcher)
    from verl.utils.reward_score import registry
    from verlkit.clients import rule_check

    if args.bound_s is None:
        args.bound_s = rule_check.DEFAULT_TIMEOUT_S
    upstream = registry._import_upstream_default()  # upstream's own dispatcher, kept as our fallback
    if upstream is registry.compute_score:
        raise SystemExit("could not get upstream's default_compute_score")
    report = Report("bench_rule_rewards")
    report.set("sizes", {"n": args.n, "pathological_fraction": args.pathological_fraction, "bound_s": args.bound_s,
                         "workers": rule_check.default_pool_size(), "driver_threads": DRIVER_THREADS})
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cpus)")
    if args.dispatch_n:
        bench_dispatch(args.dispatch_n, upstream)
    bench_checkers(args, report, upstream)
    bench_bound(args, report)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report.write(args.json, APPLICABLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
