"""Scenarios of verl's RewardModelManager running our CPU replica (``rollout.name=vllm_cpu``), each in a
fresh process (``python tests/support/managed_replicas.py SCENARIO --model DIR --out JSON``) because
verl caches its platform per process and the CPU profile must be chosen before ``import verl``.

Everything is real: Ray, verl's resource pool and RewardModelManager (as its trainer builds them for
``reward.reward_model.enable_resource_pool=True``), verl's naive router, the CPU build of vLLM, our
registry and tinyv reward and the HTTP client. The scenario writes what it observed as JSON; the
integration test asserts on it.

* ``lifecycle``: start (the manager sleeps the replica once, as verl does with ``free_cache_engine``),
  score rows through the router, ``wake_up`` / ``sleep`` / ``wake_up`` as verl's reward loop calls
  them, score again, then ``ray.shutdown()`` and watch the vLLM processes end.
* ``killed``: score one row, kill the replica's actor in the middle of the batch, wait until its
  vLLM processes are gone, then let the rest of the batch ask.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1]))  # tests/, for support.*

from support.server_processes import pid_running, wait_for  # noqa: E402

def compose_reward_config(model_dir: str, extra: list[str]):
    from hydra import compose, initialize_config_dir

    import verl

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=[
            "reward.reward_model.enable=True",
            f"reward.reward_model.model_path={model_dir}",
            "reward.reward_model.rollout.name=vllm_cpu",
            "reward.reward_model.rollout.tensor_model_parallel_size=1",
            "reward.reward_model.rollout.max_model_len=2048",
            "reward.reward_model.enable_resource_pool=True",
            "reward.reward_model.nnodes=1",
            "reward.reward_model.n_gpus_per_node=1",
            *extra,
        ])  # fmt: skip


def start_manager(model_dir: str, free_cache_engine: bool):
    """Ray with one logical GPU, the trainer's ``reward_pool`` and verl's RewardModelManager on it."""
    import ray
    from verl.experimental.reward_loop.reward_model import RewardModelManager
    from verl.single_controller.ray.base import ResourcePoolManager
    from verl.trainer.ppo.utils import Role

    ray.init(address="local", num_cpus=8, num_gpus=1, include_dashboard=False)
    cfg = compose_reward_config(model_dir, [f"reward.reward_model.rollout.free_cache_engine={free_cache_engine}"])
    pools = ResourcePoolManager(resource_pool_spec={"reward_pool": [1]}, mapping={Role.RewardModel: "reward_pool"})
    pools.create_resource_pool()
    return RewardModelManager(cfg.reward.reward_model, pools.get_resource_pool(Role.RewardModel))


def verl_reward_tokenizer(model_dir: str):
    """The tokenizer verl's reward loop worker passes to reward functions (same loading path)."""
    from verl.utils import hf_tokenizer
    from verl.utils.fs import copy_to_local

    return hf_tokenizer(copy_to_local(model_dir), trust_remote_code=True)


def row(i: int) -> dict:
    return dict(data_source="router_check_tinyv", solution_str=f"The answer is {i + 7}.", ground_truth=str(i + 100),
                extra_info={"question": f"Question {i}: what is {i} + 100?"})


def schedule(rows, router: str, tokenizer, gate=None) -> list[asyncio.Future]:
    """Each row through our registry as verl's reward manager calls it (verl's context kwargs), as
    tasks of the running loop; with ``gate``, every row but the first waits for it."""
    from verl.utils.reward_score import registry

    options = {"tinyv": {"template": "tinyv", "setup": "tinyv_only", "max_retries": 1, "backoff_s": 0.1,
                         "timeout_s": 120}}  # fmt: skip

    async def one(i, r):
        if gate is not None and i > 0:
            await gate.wait()
        return await registry.compute_score_async(**r, reward_router_address=router, reward_model_tokenizer=tokenizer,
                                                  **options)

    return [asyncio.ensure_future(one(i, r)) for i, r in enumerate(rows)]


def wait_until_gone(pids: list[int], timeout_s: float, what: str) -> None:
    """Wait for every PID to end; on timeout, name the ones still running (PID, state, command)."""
    try:
        wait_for(lambda: not any(pid_running(p) for p in pids), timeout_s, what)
    except AssertionError as e:
        left = []
        for p in pids:
            if pid_running(p):
                stat = Path(f"/proc/{p}/stat").read_text()
                cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ")[:120].decode(errors="replace")
                left.append(f"{p} state={stat[stat.rfind(')') + 2]} ppid={stat[stat.rfind(')') + 2:].split()[1]} {cmd}")
        raise AssertionError(f"{e}; still running: {left}") from None


def requests_in_log(log_path: str) -> int:
    return sum("POST /v1/chat/completions" in line for line in Path(log_path).read_text(errors="replace").splitlines())


def lifecycle(model_dir: str) -> dict:
    import ray

    manager = start_manager(model_dir, free_cache_engine=True)
    router, tokenizer = manager.get_router_address(), verl_reward_tokenizer(model_dir)
    server = manager.rollout_replicas[0].servers[0]
    status = ray.get(server.status.remote())

    async def run():
        first = await asyncio.gather(*schedule([row(i) for i in range(4)], router, tokenizer))
        manager_cycle = []
        for step in ("wake_up", "sleep", "wake_up"):  # what RewardLoopManager.compute_rm_score calls
            await asyncio.to_thread(getattr(manager, step))
            manager_cycle.append(step)
        second = await asyncio.gather(*schedule([row(i) for i in range(4, 8)], router, tokenizer))
        return first, manager_cycle, second

    first, cycle, second = asyncio.run(run())
    after_cycle = ray.get(server.status.remote())
    served = requests_in_log(status["log_path"])
    ray.shutdown()
    t0 = time.monotonic()
    wait_until_gone(after_cycle["pids"], 120, "vLLM processes to end after ray.shutdown")
    return {"router": router, "server_addresses": manager.server_addresses, "status": status,
            "after_cycle": after_cycle, "first": first, "second": second, "cycle": cycle,
            "requests_in_server_log": served, "gone_after_shutdown_s": time.monotonic() - t0,
            "model_name": tokenizer.name_or_path}  # fmt: skip


def killed(model_dir: str) -> dict:
    import ray

    manager = start_manager(model_dir, free_cache_engine=False)
    router, tokenizer = manager.get_router_address(), verl_reward_tokenizer(model_dir)
    server = manager.rollout_replicas[0].servers[0]
    status = ray.get(server.status.remote())

    async def run():
        gate = asyncio.Event()
        tasks = schedule([row(i) for i in range(6)], router, tokenizer, gate)
        first = await tasks[0]  # the batch is under way: one row answered, the others wait at the gate
        ray.kill(server, no_restart=True)
        await asyncio.to_thread(wait_until_gone, status["pids"] + [status["actor_pid"]], 120,
                                "the killed replica's actor and vLLM processes to end")
        gate.set()
        rest = await asyncio.gather(*tasks[1:])
        return [first, *rest]

    t0 = time.monotonic()
    results = asyncio.run(run())
    out = {"router": router, "status": status, "results": results, "batch_s": time.monotonic() - t0}
    ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["lifecycle", "killed"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    assert os.environ.get("VERL_PLATFORM") == "cpu", "run with VERL_PLATFORM=cpu (the CPU profile)"
    result = lifecycle(args.model) if args.scenario == "lifecycle" else killed(args.model)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
