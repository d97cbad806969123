"""The hydra command line of ``run_rubric.sh`` (RL with a rubric reward model or a TinyV verifier).

``python -m recipes.rubric.args --profile gpu|cpu --model M --train F --val F --verifier-url U ...``
prints one override per line; ``run_rubric.sh`` passes them to ``verl.trainer.main_ppo``. Keeping the
composition here lets a test compose it through verl's own hydra config, so a key that does not
exist in verl 0.9.1 fails the test instead of a user's run.

GPU defaults follow the original's 8-GPU configuration (reference-methods.md §3.6): PPO with a
critic, rollout batch 512 × n 8, mini-batch 64, prompt 1024 / response 4096, actor lr 5e-7, critic
lr 9e-6, no KL and no entropy bonus by default, verifier colocated at 20 % of each GPU's memory.
"""

from __future__ import annotations

from recipes import cpu_profile_overrides

import dataclasses
from dataclasses import dataclass, field


@dataclass
class RubricRun:
    model: str
    train_files: str
    val_files: str
    verifier_url: str
    verifier_name: str = "verifier"
    epochs: int = 12
    no_entropy_loss_and_kl: bool = True
    setup: str = "tinyv_only"
    weight: float = 1.0
    template: str = "rubric"
    algorithm: str = "gae"  # gae = PPO with a critic (the original); grpo is the option
    profile: str = "gpu"
    n_gpus_per_node: int = 8
    nnodes: int = 1
    run_dir: str = "runs/rubric"
    experiment: str = "rubric"
    logger: tuple[str, ...] = ("console", "wandb")
    verifier_max_concurrency: int = 64
    verifier_timeout_s: float = 120.0
    on_failure: str = "rule"
    verifier_max_tokens: int | None = None  # None: the reward's default (2048 for the rubric template)
    extra: list[str] = field(default_factory=list)


def reward_overrides(run: RubricRun) -> list[str]:
    kw = "+reward.custom_reward_function.reward_kwargs.tinyv"
    return [
        "reward.custom_reward_function.path=pkg://verl.utils.reward_score.registry",
        "reward.custom_reward_function.name=compute_score_async",
        f"{kw}.url='{run.verifier_url}'",
        f"{kw}.model={run.verifier_name}",
        f"{kw}.setup={run.setup}",
        f"{kw}.weight={run.weight}",
        f"{kw}.template={run.template}",
        f"{kw}.max_concurrency={run.verifier_max_concurrency}",
        f"{kw}.timeout_s={run.verifier_timeout_s}",
        f"{kw}.on_failure={run.on_failure}",
    ] + ([f"{kw}.max_tokens={run.verifier_max_tokens}"] if run.verifier_max_tokens else [])


def _kl_entropy(run: RubricRun) -> list[str]:
    if run.no_entropy_loss_and_kl:
        return [
            "actor_rollout_ref.actor.use_kl_loss=False",
            "algorithm.use_kl_in_reward=False",
            "actor_rollout_ref.actor.entropy_coeff=0",
        ]
    return [
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.001",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "algorithm.use_kl_in_reward=True",
        "algorithm.kl_ctrl.kl_coef=0.001",
    ]


def _common(run: RubricRun) -> list[str]:
    logger = "[" + ",".join(run.logger) + "]"
    return [
        f"algorithm.adv_estimator={run.algorithm}",
        f"data.train_files={run.train_files}",
        f"data.val_files={run.val_files}",
        f"actor_rollout_ref.model.path={run.model}",
        f"trainer.total_epochs={run.epochs}",
        f"trainer.logger={logger}",
        "trainer.project_name=verlkit-rubric",
        f"trainer.experiment_name={run.experiment}",
        f"trainer.default_local_dir={run.run_dir}/checkpoints",
        f"trainer.rollout_data_dir={run.run_dir}/rollouts",
        f"trainer.validation_data_dir={run.run_dir}/validation",
    ]


def gpu_overrides(run: RubricRun) -> list[str]:
    prompt_len, response_len = 1024, 4096
    out = _common(run) + [
        "data.train_batch_size=512",
        f"data.max_prompt_length={prompt_len}",
        f"data.max_response_length={response_len}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        "actor_rollout_ref.actor.optim.lr=5e-7",
        "actor_rollout_ref.actor.ppo_mini_batch_size=64",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={3 * (prompt_len + response_len)}",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        "actor_rollout_ref.actor.fsdp_config.param_offload=False",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=8",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        # 0.7 for the policy's rollout + 0.2 for the colocated verifier (the original's split)
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.7",
        f"actor_rollout_ref.rollout.max_num_batched_tokens={prompt_len + response_len}",
        "trainer.critic_warmup=0",
        f"trainer.n_gpus_per_node={run.n_gpus_per_node}",
        f"trainer.nnodes={run.nnodes}",
        "trainer.save_freq=10",
        "trainer.test_freq=2",
        "trainer.resume_mode=auto",
    ]
    if run.algorithm == "gae":
        out += [
            f"critic.model.path={run.model}",
            "critic.optim.lr=9e-6",
            "critic.model.use_remove_padding=True",
            "critic.model.enable_gradient_checkpointing=True",
            "critic.ppo_max_token_len_per_gpu=24000",
            "critic.forward_max_token_len_per_gpu=36000",
        ]
    return out + _kl_entropy(run) + reward_overrides(run) + list(run.extra)


def cpu_overrides(run: RubricRun) -> list[str]:
    """A few steps of the same recipe sized for a laptop: tiny batches and lengths."""
    ppo = cpu_profile_overrides().ppo

    if run.verifier_max_tokens is None:
        # the CPU verifier serves a 2048-token context: prompt + a 2048-token grading budget won't fit
        run = dataclasses.replace(run, verifier_max_tokens=256)

    out = _common(run) + [
        "data.train_batch_size=4",
        "data.max_prompt_length=256",
        "data.max_response_length=32",
        "data.truncation=left",
        "actor_rollout_ref.actor.optim.lr=1e-5",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.n=2",
        "trainer.val_before_train=False",
        "trainer.save_freq=-1",
        "trainer.test_freq=-1",
    ]
    if run.algorithm == "gae":
        out += [f"critic.model.path={run.model}", "critic.ppo_micro_batch_size_per_gpu=4", "critic.optim.lr=1e-5"]
    return out + ppo(1, use_critic=run.algorithm == "gae") + _kl_entropy(run) + reward_overrides(run) + list(run.extra)


def overrides(run: RubricRun) -> list[str]:
    return cpu_overrides(run) if run.profile == "cpu" else gpu_overrides(run)


def rrm_overrides(model: str, train_files: str, val_files: str, profile: str = "gpu", epochs: int = 12,
                  run_dir: str = "runs/rrm", algorithm: str = "gae", n_gpus_per_node: int = 8, nnodes: int = 1,
                  logger: tuple[str, ...] = ("console", "wandb")) -> list[str]:
    """Training the RRM itself on ``grade`` rows (no verifier server): the original's run_train_rrm.sh
    settings on GPU (batch 128 × n 8, mini-batch 128, prompt 10000 / response 2048, lr 5e-7)."""
    run = RubricRun(model=model, train_files=train_files, val_files=val_files, verifier_url="", epochs=epochs,
                    algorithm=algorithm, profile=profile, n_gpus_per_node=n_gpus_per_node, nnodes=nnodes,
                    run_dir=run_dir, experiment="rrm", logger=logger)
    dispatcher = [
        "reward.custom_reward_function.path=pkg://verl.utils.reward_score.registry",
        "reward.custom_reward_function.name=compute_score_async",
    ]
    if profile == "cpu":
        body = [o for o in cpu_overrides(run) if "reward_kwargs" not in o and "custom_reward_function" not in o]
        # grading prompts (question + rubric + candidate answer) are longer than policy prompts
        body = ["data.max_prompt_length=512" if o.startswith("data.max_prompt_length=") else o for o in body]
        return body + dispatcher
    prompt_len, response_len = 10000, 2048
    out = _common(run) + [
        "data.train_batch_size=128",
        f"data.max_prompt_length={prompt_len}",
        f"data.max_response_length={response_len}",
        "data.filter_overlong_prompts=True",
        "actor_rollout_ref.actor.optim.lr=5e-7",
        "actor_rollout_ref.actor.ppo_mini_batch_size=128",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={3 * (prompt_len + response_len)}",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=8",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.6",
        f"actor_rollout_ref.rollout.max_num_batched_tokens={prompt_len + response_len}",
        f"trainer.n_gpus_per_node={n_gpus_per_node}",
        f"trainer.nnodes={nnodes}",
        "trainer.save_freq=40",
        "trainer.test_freq=5",
        "trainer.resume_mode=auto",
    ]
    if algorithm == "gae":
        out += [f"critic.model.path={model}", "critic.optim.lr=9e-6", "critic.model.use_remove_padding=True",
                "critic.ppo_max_token_len_per_gpu=24000", "critic.forward_max_token_len_per_gpu=36000"]
    return out + _kl_entropy(run) + dispatcher
