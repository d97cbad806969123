"""Rule-based reward dispatch and the bounded math check, side by side in one run.

    python benchmarks/bench_rule_rewards.py [--n 4096]

1. Dispatch: our registry (``compute_score`` sync, ``compute_score_async`` gathered) against upstream
   verl's ``default_compute_score`` on the same batch of gsm8k + MATH rows (target >= 1.0x).
2. math-verify on MATH-style rows: our bounded ``rule_check`` pool (``check_many``) against upstream's
   ``math_verify.compute_score`` called per sample (its own spawn pool, one wait per sample).
3. Worst case: a pathological answer against the configured bound.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time


def batch(n: int) -> list[tuple[str, str, str]]:
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


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--n-mathverify", type=int, default=256)
    ap.add_argument("--bound-s", type=float, default=5.0)
    args = ap.parse_args(argv)

    import verl  # noqa: F401  (installs the graft: default_compute_score is now ours)
    from verlkit.clients import rule_check
    from verl.utils.reward_score import registry

    upstream = registry._import_upstream_default()
    assert upstream is not registry.compute_score
    rows = batch(args.n)

    def run_upstream_once():
        out = []
        for ds, s, gt in rows:
            r = upstream(ds, s, gt)
            out.append(float(r["score"] if isinstance(r, dict) else r))
        return out

    def run_ours_sync():
        return [registry.compute_score(ds, s, gt)["score"] for ds, s, gt in rows]

    def run_ours_async():
        async def go():
            return await asyncio.gather(*(registry.compute_score_async(ds, s, gt) for ds, s, gt in rows))
        return [r["score"] for r in asyncio.run(go())]

    run_upstream_once(), run_ours_sync()  # warm imports/caches
    t_up, s_up = min((timed(run_upstream_once) for _ in range(3)), key=lambda x: x[0])
    t_sync, s_sync = min((timed(run_ours_sync) for _ in range(3)), key=lambda x: x[0])
    t_async, s_async = min((timed(run_ours_async) for _ in range(3)), key=lambda x: x[0])
    assert s_up == s_sync == s_async, "dispatchers disagree on scores"
    print(f"\n## Dispatch: {args.n} rows (gsm8k + MATH), best of 3")
    print(f"{'dispatcher':36s} {'wall s':>8s} {'rows/s':>9s}  vs upstream")
    for name, t in (("upstream default_compute_score", t_up), ("ours registry.compute_score", t_sync),
                    ("ours compute_score_async (gather)", t_async)):
        print(f"{name:36s} {t:8.3f} {args.n / t:9.0f}  {t_up / t:.2f}x")

    # math-verify: bounded pool vs upstream's per-sample call
    from verl.utils.reward_score import math_verify as upstream_mv

    mv_rows = [(s, gt) for ds, s, gt in rows if ds == "lighteval/MATH"][: args.n_mathverify]
    rule_check.warm_up()
    upstream_mv.compute_score("\\boxed{1}", "1")  # start its pool
    t_mv_up, up_scores = timed(lambda: [upstream_mv.compute_score(s, gt) for s, gt in mv_rows])
    t_mv_ours, ours = timed(lambda: rule_check.check_many(mv_rows, timeout_s=args.bound_s))
    agree = sum(float(r.correct) == u for r, u in zip(ours, up_scores)) / len(mv_rows)
    print(f"\n## math-verify on {len(mv_rows)} MATH rows ({rule_check.get_pool().size} workers)")
    print(f"{'checker':36s} {'wall s':>8s} {'rows/s':>9s}  vs upstream")
    print(f"{'upstream math_verify.compute_score':36s} {t_mv_up:8.3f} {len(mv_rows) / t_mv_up:9.0f}  1.00x")
    print(f"{'ours rule_check.check_many':36s} {t_mv_ours:8.3f} {len(mv_rows) / t_mv_ours:9.0f}  {t_mv_up / t_mv_ours:.2f}x")
    print(f"agreement with upstream: {agree:.1%}")

    # worst case
    print(f"\n## Pathological inputs, bound = {args.bound_s:.1f} s")
    print(f"{'input':36s} {'wall s':>8s} {'timed out':>9s}  wall/bound")
    for sol in ("\\boxed{9^{9^{9^{9}}}}", "\\boxed{(10^{10})!}"):
        t, r = timed(lambda: rule_check.check(sol, "1", timeout_s=args.bound_s))
        print(f"{sol:36s} {t:8.3f} {str(r.timed_out):>9s}  {t / args.bound_s:.2f}x")
    t, r = timed(lambda: rule_check.check("\\boxed{2}", "2", timeout_s=args.bound_s))
    print(f"{'next normal check (slot refilled)':36s} {t:8.3f} {str(r.timed_out):>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
