"""Verifier client throughput against a real vLLM server, measured side by side in one run.

    python benchmarks/bench_verifier.py [--url http://127.0.0.1:PORT/v1 --model NAME] [--n 256]

Without --url it starts a CPU vLLM server on the tiny local model (launcher) and stops it at the end.
On the same N distinct verifier prompts it times:
  raw        bare aiohttp, all requests at once (the server's capacity; no retries/cache/semaphore)
  ours       LLMClient (max_concurrency 64, cache off so every request really goes to the server)
  sequential one request at a time, blocking (the original TinyV pattern: one sync call per sample)
Targets: ours >= 0.95x raw throughput, ours >= 10x sequential.
Then a GRPO-like batch (P prompts x n=8 samples whose final answers repeat) with and without
deduplication: requests sent and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from verlkit.clients.loop import run_sync
from verlkit.clients.llm import LLMClient
from verlkit.clients.settings import ClientSettings
from verl.utils.reward_score.verifier_prompts import tinyv_prompt

MAX_TOKENS = 8


def prompts(n: int, tag: str) -> list[str]:
    return [tinyv_prompt(f"[{tag}] Problem {i}: compute {i} + {i}.", str(2 * i), f"{2 * i + i % 2}") for i in range(n)]


def payload(model: str, prompt: str) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
            "temperature": 0.0, "top_p": 1.0}


async def run_raw(url: str, model: str, items: list[str], concurrency: int) -> float:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(p):
            async with sem, session.post(url + "/chat/completions", json=payload(model, p)) as resp:
                body = await resp.json()
                assert resp.status == 200, body
        start = time.monotonic()
        await asyncio.gather(*(one(p) for p in items))
        return time.monotonic() - start


async def run_ours(client: LLMClient, items: list[str]) -> tuple[float, int]:
    start = time.monotonic()
    outs = await asyncio.gather(*(client.chat([{"role": "user", "content": p}], max_tokens=MAX_TOKENS) for p in items))
    return time.monotonic() - start, sum(not o.ok for o in outs)


def run_sequential(url: str, model: str, items: list[str]) -> float:
    start = time.monotonic()
    for p in items:
        req = urllib.request.Request(url + "/chat/completions", data=json.dumps(payload(model, p)).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            json.loads(resp.read())
    return time.monotonic() - start


def grpo_batch(n_prompts: int, n_samples: int, tag: str) -> list[str]:
    """Each prompt's 8 samples end in one of 2-3 distinct final answers (what a policy mid-training does)."""
    rng = random.Random(0)
    items = []
    for i in range(n_prompts):
        answers = [str(i * 7 + k) for k in range(rng.randint(2, 3))]
        for _ in range(n_samples):
            items.append(tinyv_prompt(f"[{tag}] Problem {i}: what is {i} * 7?", str(i * 7), rng.choice(answers)))
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--model")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--n-sequential", type=int, default=64, help="sequential is slow: time a subset, report per request")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--grpo-prompts", type=int, default=32)
    args = ap.parse_args(argv)

    server = None
    if not args.url:
        from verlkit.serving import ServerSpec, launch
        from verlkit.models.local import build_tiny_qwen2

        server = launch(ServerSpec(model=build_tiny_qwen2(), served_model_name="bench-verifier", name="bench-verifier",
                                   run_dir=Path(tempfile.mkdtemp(prefix="bench_verifier_")), ready_timeout_s=420))
        args.url, args.model = server.base_url, server.model_name
    url = args.url.rstrip("/")
    try:
        # warm-up (first requests pay one-off costs)
        asyncio.run(run_raw(url, args.model, prompts(16, "warm"), 16))
        rows = []
        # Interleave the two concurrent runs twice, each on fresh prompts (no server prefix-cache advantage).
        raw_t, ours_t = [], []
        for rep in range(2):
            raw_t.append(asyncio.run(run_raw(url, args.model, prompts(args.n, f"raw{rep}"), args.concurrency)))
            client = LLMClient(ClientSettings(url=url, model=args.model, max_concurrency=args.concurrency,
                                              cache_size=0, timeout_s=120).client_config())
            elapsed, failed = run_sync(run_ours(client, prompts(args.n, f"ours{rep}")))
            assert failed == 0, f"{failed} requests failed"
            ours_t.append(elapsed)
        seq_t = run_sequential(url, args.model, prompts(args.n_sequential, "seq"))
        raw_rps = args.n / min(raw_t)
        ours_rps = args.n / min(ours_t)
        seq_rps = args.n_sequential / seq_t
        rows.append(("raw aiohttp (capacity)", f"{raw_rps:8.1f}", "1.00x"))
        rows.append(("ours (LLMClient)", f"{ours_rps:8.1f}", f"{ours_rps / raw_rps:.2f}x"))
        rows.append(("sequential (original)", f"{seq_rps:8.1f}", f"{seq_rps / raw_rps:.2f}x"))
        print(f"\n## Verifier throughput, N={args.n} requests, max_tokens={MAX_TOKENS}, concurrency={args.concurrency}")
        print(f"{'client':28s} {'req/s':>8s}  vs raw")
        for r in rows:
            print(f"{r[0]:28s} {r[1]}  {r[2]}")
        print(f"ours / raw = {ours_rps / raw_rps:.2f}x (target >= 0.95x); ours / sequential = "
              f"{ours_rps / seq_rps:.1f}x (target >= 10x)")

        # GRPO-like batch: dedupe on vs off
        batch = grpo_batch(args.grpo_prompts, 8, "grpo")
        distinct = len(set(batch))
        on = LLMClient(ClientSettings(url=url, model=args.model, max_concurrency=args.concurrency,
                                      cache_size=0).client_config())
        t_on, _ = run_sync(run_ours(on, batch))
        sent_on = on.stats()["http_attempts"]
        off_rps_batch = grpo_batch(args.grpo_prompts, 8, "grpo-nodedupe")
        t_off = asyncio.run(run_raw(url, args.model, off_rps_batch, args.concurrency))  # every sample sent
        print(f"\n## GRPO-like batch: {args.grpo_prompts} prompts x n=8 = {len(batch)} samples, {distinct} distinct answers")
        print(f"{'':28s} {'requests':>8s} {'wall s':>8s}")
        print(f"{'without dedupe':28s} {len(batch):8d} {t_off:8.2f}")
        print(f"{'with dedupe (ours)':28s} {sent_on:8d} {t_on:8.2f}")
        print(f"requests saved: {1 - sent_on / len(batch):.0%}; wall time ratio (without/with): {t_off / t_on:.2f}x")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
