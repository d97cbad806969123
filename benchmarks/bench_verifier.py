"""Verifier throughput: our reward path against the code paths peers use, side by side in one run.

    flock /tmp/verlkit-heavy.lock python benchmarks/bench_verifier.py [--prompts 512 --samples 8]
        [--concurrency 64] [--json out/verifier.json] [--url http://127.0.0.1:PORT/v1 --model NAME]

Without --url it starts ONE CPU vLLM server on the tiny local model (our launcher) for the whole run
and stops it at the end. Every path (see ``verifier_paths``) sends the TinyV prompt with
``max_tokens`` 8 at temperature 0 to that server under the same concurrency limit, each on its own
freshly tagged batch of the same shape, twice: a batch where all (question, answer) pairs differ
("distinct") and a GRPO-shaped batch whose final answers repeat (``samples`` module docstring).
Requests are counted at the server (vLLM's ``vllm:request_success_total`` on ``/metrics``).

Ratios are wall-time ratios on equal batches, ``other / ours`` (> 1: ours is faster).
Targets (issue 14): ours >= 0.95x raw and >= 1.0x every peer path on the distinct batch, >= 2x on
the GRPO batch, and requests sent by ours == distinct (question, answer) pairs exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import samples
import verifier_paths as vp
from results import Report, table

APPLICABLE = ("ours_vs_raw", "ours_vs_verl_rate_limited", "ours_vs_verl_naive", "ours_vs_genrm_remote",
              "ours_vs_openrlhf", "grpo_batch_speedup", "requests_sent", "distinct_pairs",
              "verifier_in_training_vs_standalone")
LABELS = {
    "raw": "raw aiohttp (capacity)",
    "ours_client": "ours: LLMClient alone",
    "ours": "ours: reward coroutine",
    "verl_naive": "verl naive mgr + our coroutine",
    "verl_rate_limited": "verl rate_limited + our coroutine",
    "genrm_remote": "genrm_remote pattern (verl naive)",
    "openrlhf": "OpenRLHF 0.11.2 remote RM pattern",
}
# Paths that send every sample (no deduplication of their own): the GRPO batch costs them 4096 requests.
SENDS_EVERY_SAMPLE = ("raw", "genrm_remote", "openrlhf")


def server_requests(root: str) -> float | None:
    """Finished requests so far, from vLLM's Prometheus counter (None when the server has no /metrics)."""
    try:
        with urllib.request.urlopen(root + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total"):
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    return total if seen else None


async def run_all(args, target: vp.Target, root: str) -> dict:
    from transformers import AutoTokenizer

    from verlkit.clients import rule_check

    tokenizer = AutoTokenizer.from_pretrained(target.tokenizer_path)
    # Warm-up, untimed: imports, sessions, the rule-check workers (in training they are warm after step 1).
    rule_check.warm_up()
    for name in args.paths:
        await vp.run_path(name, target, samples.distinct_batch(4, 2, f"warm-up-{name}"), tokenizer)
    runs: dict[tuple[str, str], dict] = {}
    for rep in range(args.repeats):
        for kind, make in (("distinct", samples.distinct_batch), ("grpo", samples.grpo_batch)):
            order = args.paths[rep % len(args.paths):] + args.paths[: rep % len(args.paths)]  # rotate: spread drift
            for name in order:
                batch = make(args.prompts, args.samples, f"{name}-{kind}-{rep}")
                _check_roundtrip(batch, tokenizer)
                rule_check.forget()  # the batches repeat (solution, reference) pairs across passes: start cold
                before, cpu_before = server_requests(root), cpu_seconds()
                run = await vp.run_path(name, target, batch, tokenizer)
                after, cpu_after = server_requests(root), cpu_seconds()
                sent = None if before is None or after is None else int(after - before)
                client_cpu = cpu_after[0] - cpu_before[0]
                server_cpu = None if cpu_after[1] is None else cpu_after[1] - cpu_before[1]
                print(f"  {kind:8s} {name:18s} {run.wall_s:8.2f} s  requests {sent}  failed {run.failed}  "
                      f"client CPU {client_cpu:.1f} s  load {os.getloadavg()[0]:.1f}", flush=True)
                best = runs.get((kind, name))
                if best is None or run.wall_s < best["wall_s"]:  # best of the repeats
                    runs[(kind, name)] = {"wall_s": run.wall_s, "failed": run.failed, "requests": sent,
                                          "distinct_pairs": samples.distinct_pairs(batch), "samples": len(batch),
                                          "client_cpu_s": client_cpu, "server_cpu_s": server_cpu}
    return runs


def cpu_seconds() -> tuple[float, float | None]:
    """(CPU seconds used so far by this process and its children other than vLLM, by vLLM processes
    we started). On 2 cores the client's CPU is taken from the server: a cheaper client is faster."""
    own = time.process_time()
    try:
        import psutil
    except ImportError:
        return own, None
    server = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
            is_server = "vllm" in " ".join(child.cmdline())
        except psutil.Error:
            continue
        if is_server:
            server += times.user + times.system
        else:
            own += times.user + times.system
    return own, server


def _check_roundtrip(batch: list[samples.Sample], tokenizer) -> None:
    """verl's paths see the solution decoded from token ids; the others see the text. They must agree."""
    for s in batch[:64]:
        decoded = tokenizer.decode(tokenizer.encode(s.solution, add_special_tokens=False), skip_special_tokens=True)
        if decoded != s.solution:
            raise SystemExit(f"tokenizer does not round-trip a solution: {s.solution[:80]!r}")


def report(args, runs: dict, report_: Report) -> None:
    n = args.prompts * args.samples
    rows = []
    for name in args.paths:
        d, g = runs.get(("distinct", name)), runs.get(("grpo", name))
        ours_d, ours_g = runs.get(("distinct", "ours")), runs.get(("grpo", "ours"))
        rows.append([
            LABELS[name],
            d["wall_s"], n / d["wall_s"], d["requests"], d["failed"],
            (d["wall_s"] / ours_d["wall_s"]) if ours_d and name != "ours" else None,
            g["wall_s"], g["requests"], g["failed"],
            (g["wall_s"] / ours_g["wall_s"]) if ours_g and name != "ours" else None,
        ])
    table(f"Verifier paths: {args.prompts} prompts x {args.samples} = {n} samples, TinyV prompt, "
          f"max_tokens {args.max_tokens}, concurrency {args.concurrency}; 'x/ours' = its wall / ours (>1: ours faster)",
          ["path", "dist. s", "samples/s", "requests", "failed", "x/ours", "GRPO s", "requests", "failed", "x/ours"],
          rows)

    table("CPU seconds per pass (2 cores shared: client CPU is taken from the server); client = this process "
          "and its rule-check workers, server = the vLLM process (- with --url)",
          ["path", "dist. client", "dist. server", "GRPO client", "GRPO server"],
          [[LABELS[name]] + [runs[(kind, name)][key] for kind in ("distinct", "grpo")
                             for key in ("client_cpu_s", "server_cpu_s")] for name in args.paths])

    def ratio(kind: str, other: str, mine: str = "ours") -> float | None:
        a, b = runs.get((kind, other)), runs.get((kind, mine))
        return a["wall_s"] / b["wall_s"] if a and b else None

    for key, other in (("ours_vs_raw", "raw"), ("ours_vs_verl_rate_limited", "verl_rate_limited"),
                       ("ours_vs_verl_naive", "verl_naive"), ("ours_vs_genrm_remote", "genrm_remote"),
                       ("ours_vs_openrlhf", "openrlhf")):
        value = ratio("distinct", other)
        if value is None:
            report_.omit(key, f"path {other!r} or 'ours' was not run (--paths)")
        else:
            report_.set(key, value)
    if (value := ratio("distinct", "raw", "ours_client")) is not None:
        report_.set("ours_client_vs_raw", value)
    for name in args.paths:
        if name != "ours" and (value := ratio("grpo", name)) is not None:
            report_.set(f"grpo_ours_vs_{name}", value)
    if (value := ratio("grpo", "raw")) is not None:
        report_.set("grpo_batch_speedup", value)
    else:
        report_.omit("grpo_batch_speedup", "needs the 'raw' and 'ours' paths")
    ours_g = runs.get(("grpo", "ours"))
    if ours_g:
        report_.set("distinct_pairs", ours_g["distinct_pairs"])
        if ours_g["requests"] is None:
            report_.omit("requests_sent", "the server exposes no vllm:request_success_total on /metrics")
        else:
            report_.set("requests_sent", ours_g["requests"])
            verdict = "OK" if ours_g["requests"] == ours_g["distinct_pairs"] else "MISMATCH"
            print(f"\nGRPO batch, ours: requests sent {ours_g['requests']} vs distinct (question, answer) pairs "
                  f"{ours_g['distinct_pairs']} of {ours_g['samples']} samples: {verdict}")
    report_.omit("verifier_in_training_vs_standalone",
                 "needs a training run (the in-training benchmark measures it); this one times reward paths alone")
    peers = [k for k in ("verl_rate_limited", "verl_naive", "genrm_remote", "openrlhf") if ("distinct", k) in runs]
    print("\nTargets: ours/raw >= 0.95x: " + _mark(ratio("distinct", "raw"), 0.95)
          + "; ours >= 1.0x every peer (distinct): "
          + ", ".join(f"{k} {_mark(ratio('distinct', k), 1.0)}" for k in peers)
          + "; ours >= 2x on the GRPO batch: "
          + ", ".join(f"{k} {_mark(ratio('grpo', k), 2.0)}" for k in peers + ["raw"]))
    print("  (verl_naive / verl_rate_limited drive OUR coroutine, so they share its deduplication: on the GRPO "
          "batch they send distinct pairs too and ~1x is what they should show; the 2x target concerns the "
          f"paths that send every sample: {', '.join(SENDS_EVERY_SAMPLE)})")
    report_.set("runs", {f"{k}/{n}": {kk: (round(vv, 3) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                         for (k, n), v in runs.items()})


def _mark(value: float | None, target: float) -> str:
    return "-" if value is None else f"{value:.2f}x {'met' if value >= target else 'MISSED'}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="an already running OpenAI-compatible server (.../v1); default: start one")
    ap.add_argument("--model", help="served model name (with --url)")
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt")
    ap.add_argument("--concurrency", type=int, default=64, help="the same limit for every path")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1, help="time every pass this many times, keep the best")
    ap.add_argument("--paths", nargs="+", default=list(vp.PATHS), choices=vp.PATHS)
    ap.add_argument("--json", help="write the ratios here")
    args = ap.parse_args(argv)
    if "ours" not in args.paths:
        args.paths.insert(0, "ours")

    import verl  # noqa: F401  (loads our plugin: the registry's upstream fallback, our reward modules)
    from verlkit.models.local import build_tiny_qwen2

    report_ = Report("bench_verifier")
    report_.set("sizes", {"prompts": args.prompts, "samples": args.samples, "concurrency": args.concurrency,
                          "repeats": args.repeats, "max_tokens": args.max_tokens})
    tokenizer_path = str(build_tiny_qwen2())
    server = None
    if not args.url:
        from verlkit.serving import ServerSpec, launch

        server = launch(ServerSpec(model=tokenizer_path, served_model_name="bench-verifier", name="bench-verifier",
                                   run_dir=Path(tempfile.mkdtemp(prefix="bench_verifier_")), ready_timeout_s=420))
        args.url, args.model = server.base_url, server.model_name
    url = args.url.rstrip("/")
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    target = vp.Target(url, args.model, args.concurrency, args.max_tokens, tokenizer_path)
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cpus)")
    start = time.monotonic()
    try:
        runs = asyncio.run(run_all(args, target, root))
    finally:
        if server is not None:
            server.stop()
    report(args, runs, report_)
    print(f"\nwall time of the timed passes: {time.monotonic() - start:.0f} s; load average at end: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    report_.write(args.json, APPLICABLE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
