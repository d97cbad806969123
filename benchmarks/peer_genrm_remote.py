"""The reward-function pattern of verl's ``genrm_remote`` recipe, re-implemented for the benchmark.

Imitates (read, not copied): verl-project/verl-recipe ``genrm_remote/reward_function.py`` (recipe
pinned to verl commit bcb6386 in its REQUIRED_VERL.txt; the same file lived at
``recipe/genrm_remote/reward_function.py`` in volcengine/verl before the recipes moved out), run by
``run_genrm_remote.sh`` with ``reward_model.reward_manager=naive``. The bench loads this file through
verl's own ``custom_reward_function.path`` machinery and drives it with verl's naive manager.

What the recipe does, and this file does the same way:
- an ``async def compute_score(data_source, solution_str, ground_truth, extra_info)``;
- it first computes the rule-based score synchronously, on the event loop (the recipe calls
  ``default_compute_score``; for a MATH source that is ``math_reward.compute_score``, called here
  directly because with our plugin loaded ``default_compute_score`` is our dispatcher);
- when ``extra_info["split"] != "test"`` it asks the GenRM: every HTTP attempt opens a NEW
  ``aiohttp.ClientSession`` with ``ClientTimeout(total=None)`` and closes it afterwards;
- up to 3 attempts; between attempts a BLOCKING ``time.sleep(2 * 2**attempt)`` inside the
  coroutine (it stalls every other coroutine on the loop: the happy path never reaches it);
- the reward is 1.0 when the last ``\\boxed{}`` of the reply is ``True``.

Deliberate differences, so that every benchmark path does the same work on the server:
- the prompt is the TinyV template (question, reference, the answer taken from the solution's last
  ``\\boxed{}`` with the recipe's own helpers) instead of the recipe's GenRM critique prompt, and the
  payload carries ``max_tokens`` and ``temperature=0`` (the recipe sends neither);
- an ``asyncio.Semaphore(max_concurrency)`` around each HTTP attempt: the recipe has no limit, the
  benchmark gives every path the same one;
- the server URL and model come from ``reward_kwargs`` instead of module constants.
"""

from __future__ import annotations

import asyncio
import json
from time import sleep

import aiohttp

from verl.utils.reward_score import math_reward
from verl.utils.reward_score.math_reward import last_boxed_only_string, remove_boxed
from verl.utils.reward_score.verifier_prompts import tinyv_prompt

MAX_RETRIES = 3
BASE_DELAY = 2
_semaphores: dict[tuple[int, int], asyncio.Semaphore] = {}


def _semaphore(limit: int) -> asyncio.Semaphore:
    key = (id(asyncio.get_running_loop()), limit)
    if key not in _semaphores:
        _semaphores[key] = asyncio.Semaphore(limit)
    return _semaphores[key]


async def post_request(base_url: str, payload: dict, limit: int) -> dict:
    async with _semaphore(limit):
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        try:
            async with session.post(f"{base_url}/chat/completions", json=payload) as resp:
                return json.loads(await resp.text())
        finally:
            await session.close()


async def get_response(question: str, answer: str, ground_truth: str, base_url: str, model: str,
                       max_tokens: int, limit: int) -> str:
    messages = [{"role": "user", "content": tinyv_prompt(question, ground_truth, answer)}]
    payload = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
    for attempt in range(MAX_RETRIES):
        try:
            output = await post_request(base_url, payload, limit)
            return output["choices"][0]["message"]["content"]
        except Exception as exc:
            if attempt < MAX_RETRIES - 1:
                print("Exception: ", repr(exc))
                sleep(BASE_DELAY * (2**attempt))  # blocking, as in the recipe
            else:
                print(f"Failed after {MAX_RETRIES} attempts. Error: {exc}")
    raise ConnectionRefusedError("Failed to run the model")


def reward_from_reply(reply: str | None) -> float:
    try:
        boxed = last_boxed_only_string(reply or "")
        return float(boxed is not None and remove_boxed(boxed) == "True")
    except Exception:
        return 0.0


async def compute_score(data_source, solution_str, ground_truth, extra_info, *, base_url: str, model: str,
                        max_tokens: int = 8, max_concurrency: int = 64, **_ignored):
    rule_score = math_reward.compute_score(solution_str, ground_truth)  # synchronous, on the loop
    if extra_info.get("split") == "test":
        return rule_score
    boxed = last_boxed_only_string(solution_str)
    answer = remove_boxed(boxed) if boxed else solution_str[-1000:]
    reply = await get_response(extra_info["question"], answer, str(ground_truth), base_url.rstrip("/"), model,
                               int(max_tokens), int(max_concurrency))
    return reward_from_reply(reply)
