"""The code paths the verifier benchmark times. Each takes a batch of ``samples.Sample`` and returns
``PathRun(wall_s, failed)``; all send the TinyV prompt with the same ``max_tokens``, temperature 0,
to the same server, under the same concurrency limit.

- ``raw``: bare aiohttp, one session, every sample sent (the server's capacity; no reward logic).
- ``ours_client``: our ``LLMClient`` alone on the same prompts (HTTP-layer overhead vs ``raw``).
- ``ours``: our reward coroutine, ``registry.compute_score_async`` -> ``tinyv.compute_score``
  (rule check for the answer, then the verifier through our client), gathered over the batch.
- ``verl_naive`` / ``verl_rate_limited``: verl 0.9.1's own ``RewardLoopWorker`` (the class a Ray
  actor would hold, instantiated here in-process) with its ``naive`` / ``rate_limited`` manager,
  built by verl's ``load_reward_manager`` from a config naming the same reward coroutine the way our
  recipes do (``custom_reward_function.path=pkg://verl.utils.reward_score.registry``), fed a
  ``DataProto`` whose responses are token ids of the tiny model's tokenizer.
- ``genrm_remote``: verl's naive manager (same worker) driving ``peer_genrm_remote.compute_score``.
- ``openrlhf``: OpenRLHF 0.11.2's per-sample remote reward (see ``run_openrlhf``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from samples import Sample

DATA_SOURCE = "math_tinyv"  # routed to tinyv by our registry (suffix rule)
PEER_GENRM_FILE = Path(__file__).resolve().with_name("peer_genrm_remote.py")


@dataclass(frozen=True)
class Target:
    base_url: str  # .../v1
    model: str
    concurrency: int
    max_tokens: int
    tokenizer_path: str


@dataclass
class PathRun:
    wall_s: float
    failed: int  # samples without a usable verifier reply (transport/HTTP failure, reward error)


def chat_payload(target: Target, sample: Sample) -> dict:
    from verl.utils.reward_score.verifier_prompts import tinyv_prompt

    prompt = tinyv_prompt(sample.question, sample.ground_truth, sample.answer)
    return {"model": target.model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": target.max_tokens, "temperature": 0.0, "top_p": 1.0}


def tinyv_options(target: Target) -> dict:
    """Our reward's options, as a recipe passes them (``reward_kwargs.tinyv.*``)."""
    return {"url": target.base_url, "model": target.model, "template": "tinyv", "setup": "tinyv_only",
            "max_concurrency": target.concurrency, "max_tokens": target.max_tokens, "timeout_s": 120.0}


# ---------------------------------------------------------------------------------------------
async def run_raw(target: Target, batch: list[Sample]) -> PathRun:
    import aiohttp

    sem = asyncio.Semaphore(target.concurrency)
    failed = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        url = target.base_url + "/chat/completions"

        async def one(sample: Sample) -> None:
            nonlocal failed
            async with sem, session.post(url, json=chat_payload(target, sample)) as resp:
                await resp.read()
                failed += resp.status != 200

        start = time.monotonic()
        await asyncio.gather(*(one(s) for s in batch))
        return PathRun(time.monotonic() - start, failed)


async def run_ours_client(target: Target, batch: list[Sample]) -> PathRun:
    from verlkit.clients.llm import LLMClient
    from verlkit.clients.settings import ClientSettings

    client = LLMClient(ClientSettings(url=target.base_url, model=target.model, max_concurrency=target.concurrency,
                                      timeout_s=120.0).client_config())
    payloads = [chat_payload(target, s) for s in batch]
    start = time.monotonic()
    outs = await asyncio.gather(*(client.chat(p["messages"], max_tokens=target.max_tokens) for p in payloads))
    return PathRun(time.monotonic() - start, sum(not o.ok for o in outs))


def _count_failed(results) -> int:
    failed = 0
    for r in results:
        if isinstance(r, dict):
            info = r.get("reward_extra_info", r)
            failed += bool(info.get("verifier_failed") == 1.0 or info.get("reward_error") == 1.0
                           or "error" in info or "timeout" in info)
    return failed


async def run_ours(target: Target, batch: list[Sample]) -> PathRun:
    from verl.utils.reward_score import registry

    options = tinyv_options(target)
    start = time.monotonic()
    results = await asyncio.gather(*(
        registry.compute_score_async(DATA_SOURCE, s.solution, s.ground_truth, {"question": s.question}, tinyv=options)
        for s in batch
    ))
    return PathRun(time.monotonic() - start, _count_failed(results))


# ---------------------------------------------------------------------------------------------
# verl's reward loop, in-process
# ---------------------------------------------------------------------------------------------
def to_dataproto(batch: list[Sample], tokenizer, split: str = "train"):
    """A rollout batch as verl's reward loop receives it: one dummy prompt token, the solution as
    right-padded response token ids, ``data_source``, ``reward_model.ground_truth``, ``extra_info``."""
    import numpy as np
    import torch
    from verl import DataProto

    ids = [tokenizer.encode(s.solution, add_special_tokens=False) for s in batch]
    width = max(map(len, ids))
    pad = tokenizer.pad_token_id or 0
    responses = torch.full((len(batch), width), pad, dtype=torch.long)
    response_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        responses[row, : len(seq)] = torch.tensor(seq)
        response_mask[row, : len(seq)] = 1
    prompts = torch.full((len(batch), 1), pad, dtype=torch.long)
    attention_mask = torch.cat([torch.ones((len(batch), 1), dtype=torch.long), response_mask], dim=1)
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": attention_mask},
        non_tensors={
            "data_source": np.array([DATA_SOURCE] * len(batch), dtype=object),
            "reward_model": np.array([{"ground_truth": s.ground_truth} for s in batch], dtype=object),
            "extra_info": np.array([{"question": s.question, "split": split} for s in batch], dtype=object),
        },
    )


def verl_config(target: Target, manager: str, reward: str):
    from omegaconf import OmegaConf

    if reward == "ours":
        fn = {"path": "pkg://verl.utils.reward_score.registry", "name": "compute_score_async",
              "reward_kwargs": {"tinyv": tinyv_options(target)}}
    else:
        fn = {"path": str(PEER_GENRM_FILE), "name": "compute_score",
              "reward_kwargs": {"base_url": target.base_url, "model": target.model,
                                "max_tokens": target.max_tokens, "max_concurrency": target.concurrency}}
    return OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": target.tokenizer_path, "tokenizer_path": target.tokenizer_path}},
        "reward": {
            "num_workers": 1,  # the CPU profile's setting: the whole batch goes to one worker
            "max_concurrent": target.concurrency,  # rate_limited's semaphore (verl's default is 1)
            "timeout": 300.0,
            "custom_reward_function": fn,
            "reward_manager": {"source": "register", "name": manager,
                               "module": {"path": None, "name": "custom_reward_manager"}},
            "reward_model": {"enable": False},
        },
    })


async def run_verl(target: Target, batch: list[Sample], manager: str, reward: str, tokenizer) -> PathRun:
    """verl's RewardLoopWorker.compute_score_batch on the whole batch. Differences from training:
    no Ray actor around the worker (no RPC, no DataProto serialisation) and no chunking of the batch
    across ``reward.num_workers`` workers (the CPU profile uses 1)."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    data = to_dataproto(batch, tokenizer)
    worker = RewardLoopWorker(verl_config(target, manager, reward))  # inside the running loop: its loop
    start = time.monotonic()
    results = await worker.compute_score_batch(data)
    wall = time.monotonic() - start
    if reward != "ours":  # the genrm pattern raises after its retries; the manager would crash on it
        return PathRun(wall, 0)
    return PathRun(wall, _count_failed(results))


# ---------------------------------------------------------------------------------------------
# OpenRLHF
# ---------------------------------------------------------------------------------------------
async def run_openrlhf(target: Target, batch: list[Sample], tokenizer) -> PathRun:
    """OpenRLHF 0.11.2's remote reward, re-implemented (read, not copied): ``openrlhf/utils/agent.py``,
    ``SingleTurnAgentExecutor.execute`` decodes the finished sample and calls
    ``_fetch_rewards_via_http([query], [prompt], [label])`` for that ONE sample; ``_post_request``
    opens a NEW ``aiohttp.ClientSession(timeout=ClientTimeout(total=180))`` per attempt, makes up to 5
    attempts and waits a fixed ``asyncio.sleep(1)`` after a failed one. Samples run as concurrent
    coroutines (``generate_responses`` gathers them). (Older OpenRLHF, ``utils/remote_rm_utils.py``,
    used a blocking ``requests.post`` with ``time.sleep(1)``; 0.11 no longer does.)

    Differences: the request is the TinyV chat payload to the verifier (OpenRLHF posts
    ``{query, prompts, labels}`` to a reward server, which would build it), the answer is taken with
    verl's ``last_boxed_only_string`` (the reward server's job), and an ``asyncio.Semaphore`` gives
    the same concurrency limit as every other path."""
    import aiohttp
    from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed

    ids = [tokenizer.encode(s.solution, add_special_tokens=False) for s in batch]
    sem = asyncio.Semaphore(target.concurrency)
    timeout = aiohttp.ClientTimeout(total=180)
    url = target.base_url + "/chat/completions"
    failed = 0

    async def post(data: dict, try_max_times: int = 5) -> dict:
        for _ in range(try_max_times):
            try:
                async with sem, aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.post(url, json=data) as response:
                        response.raise_for_status()
                        return await response.json()
            except aiohttp.ClientError:
                pass
            except Exception:
                pass
            await asyncio.sleep(1)
        raise RuntimeError(f"Request error for {try_max_times} times")

    async def one(sample: Sample, token_ids: list[int]) -> None:
        nonlocal failed
        query = tokenizer.decode(token_ids, skip_special_tokens=False)  # on the loop, as execute() does
        boxed = last_boxed_only_string(query)
        answer = remove_boxed(boxed) if boxed else query[-1000:]
        data = chat_payload(target, Sample(sample.question, sample.ground_truth, query, answer))
        try:
            await post(data)
        except RuntimeError:
            failed += 1

    start = time.monotonic()
    await asyncio.gather(*(one(s, i) for s, i in zip(batch, ids)))
    return PathRun(time.monotonic() - start, failed)


PATHS = ("raw", "ours_client", "ours", "verl_naive", "verl_rate_limited", "genrm_remote", "openrlhf")


async def run_path(name: str, target: Target, batch: list[Sample], tokenizer) -> PathRun:
    if name == "raw":
        return await run_raw(target, batch)
    if name == "ours_client":
        return await run_ours_client(target, batch)
    if name == "ours":
        return await run_ours(target, batch)
    if name == "verl_naive":
        return await run_verl(target, batch, "naive", "ours", tokenizer)
    if name == "verl_rate_limited":
        return await run_verl(target, batch, "rate_limited", "ours", tokenizer)
    if name == "genrm_remote":
        return await run_verl(target, batch, "naive", "genrm_remote", tokenizer)
    if name == "openrlhf":
        return await run_openrlhf(target, batch, tokenizer)
    raise ValueError(f"unknown path {name!r}; known: {PATHS}")
