"""What the CPU profile asks of Ray and TransferQueue: how many processes a CPU run starts besides its
own workers (the cause of the start-up and idle CPU measured by benchmarks/profile_reward_phase.py).
Composed through verl 0.9.1's own hydra config, so a key verl does not have fails here."""

from pathlib import Path

from hydra import compose, initialize_config_dir

import verl
from verlkit.cpu_profile.overrides import env, ppo

CONFIG_DIR = str(Path(verl.__file__).parent / "trainer" / "config")


def compose_ppo(args):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="ppo_trainer", overrides=args)


def test_ray_starts_no_spare_workers_and_no_dashboard():
    assert env()["RAY_prestart_worker_first_driver"] == "0"
    cfg = compose_ppo(ppo(1))
    assert cfg.ray_kwargs.ray_init.include_dashboard is False


def test_one_transfer_queue_storage_unit_instead_of_eight():
    assert compose_ppo([])["transfer_queue"]["backend"]["SimpleStorage"]["num_data_storage_units"] == 8  # verl's default
    cfg = compose_ppo(ppo(1))
    assert cfg.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1


def test_ray_gets_enough_logical_cpus_for_the_three_cpu_gpu_bundles():
    # verl asks 3 CPUs per (logical) GPU bundle, and each actor needs 1 free CPU to be scheduled.
    for workers, cpus in ((1, 16), (2, 16), (4, 20)):
        cfg = compose_ppo(ppo(workers))
        assert cfg.ray_kwargs.ray_init.num_cpus == cpus
        assert cfg.ray_kwargs.ray_init.num_gpus == workers


def test_the_profile_env_leaves_torch_threads_to_ray_and_vllm_to_the_launcher():
    # Ray sets OMP_NUM_THREADS per worker from its CPU share and the launcher sets the vLLM server's;
    # a profile-wide value would override both.
    assert "OMP_NUM_THREADS" not in env()
