"""The hydra command line of ``run_confidence.sh``: GRPO for calibrated verbalized confidence.

Two designs (docs/calibration.md): ``cgp`` (Prompt4Trust: the policy writes a hint, a frozen downstream
model answers with a confidence and is scored) and ``rlcr`` (the policy answers and states its own
confidence). ``python -m recipes.confidence.args --profile gpu|cpu --design cgp|rlcr --model M ...``
prints one override per line; ``run_confidence.sh`` passes them to ``verl.trainer.main_ppo``. Keeping
the composition here lets a test compose it through verl's own hydra config, so a key that does not
exist in verl 0.9.1 fails the test instead of a user's run.

GPU defaults follow the seed's MedMCQA runs (reference-methods.md §2.6, mapped as in §2.11): GRPO with
n = 8 samples per prompt, no std normalisation of advantages (TRL ``scale_rewards=false``), KL loss
0.04 (``low_var_kl`` = the k3 estimator TRL uses), actor lr 1e-6, grad clip 1.0, 4 PPO epochs per
rollout batch (TRL ``num_iterations=4``), sampling temperature 0.1 / top_p 0.95 / top_k 50, no entropy
bonus. Hints are short: 256 response tokens for ``cgp``; ``rlcr`` reasons before answering and gets
1024. The downstream model answers with at most 256 tokens (the seed's MedMCQA setting).

The CPU profile keeps the algorithm and shrinks sizes (4 prompts x 2 samples, 32 response tokens) and
saves the last step so the recipe can export and evaluate it.
"""

from __future__ import annotations

from recipes import cpu_profile_overrides, format_table, latest_actor_checkpoint  # noqa: F401  (re-exported for args)

from dataclasses import dataclass, field

DESIGNS = ("cgp", "rlcr")
DISPATCHER = [
    "reward.custom_reward_function.path=pkg://verl.utils.reward_score.registry",
    "reward.custom_reward_function.name=compute_score_async",
]


@dataclass
class ConfidenceRun:
    model: str
    train_files: str
    val_files: str
    design: str = "cgp"
    downstream_url: str = ""  # cgp only: OpenAI-compatible base URL of the downstream model
    downstream_name: str = "downstream"  # the served model name requests use
    downstream_api_key_env: str | None = None  # hosted API: NAME of the env var holding the key
    downstream_rate_limit_rps: float | None = None  # hosted API: requests per second per reward worker
    downstream_max_tokens: int = 256
    variant: str = "log_penalized"  # cgp reward variant: log | log_penalized | brier
    epochs: int = 3
    profile: str = "gpu"
    n_gpus_per_node: int = 8
    nnodes: int = 1
    steps: int | None = None  # trainer.total_training_steps (None: epochs decide)
    run_dir: str = "runs/confidence"
    experiment: str = "confidence"
    logger: tuple[str, ...] = ("console", "wandb")
    extra: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, got {self.design!r}")
        if self.design == "cgp" and not self.downstream_url:
            raise ValueError("design cgp needs downstream_url (the served downstream model)")


def reward_overrides(run: ConfidenceRun) -> list[str]:
    """The registry dispatcher; for cgp the downstream model's options (``reward_kwargs.cgp``)."""
    if run.design == "rlcr":
        return list(DISPATCHER)  # rlcr's reward is rule-based and takes no options
    kw = "+reward.custom_reward_function.reward_kwargs.cgp"
    out = DISPATCHER + [
        f"{kw}.url='{run.downstream_url}'",
        f"{kw}.model='{run.downstream_name}'",
        f"{kw}.variant={run.variant}",
        f"{kw}.max_tokens={run.downstream_max_tokens}",
    ]
    if run.downstream_api_key_env:
        out.append(f"{kw}.api_key_env={run.downstream_api_key_env}")
    if run.downstream_rate_limit_rps:
        out.append(f"{kw}.rate_limit_rps={run.downstream_rate_limit_rps}")
    return out


def _grpo() -> list[str]:
    """The seed's GRPO settings (§2.6 / §2.11), shared by both profiles."""
    return [
        "algorithm.adv_estimator=grpo",
        "algorithm.norm_adv_by_std_in_grpo=False",
        "algorithm.use_kl_in_reward=False",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.04",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.actor.optim.lr=1e-6",
        "actor_rollout_ref.actor.grad_clip=1.0",
        "actor_rollout_ref.actor.ppo_epochs=4",
        "actor_rollout_ref.rollout.temperature=0.1",
        "actor_rollout_ref.rollout.top_p=0.95",
        "actor_rollout_ref.rollout.top_k=50",
    ]


def _common(run: ConfidenceRun) -> list[str]:
    logger = "[" + ",".join(run.logger) + "]"
    out = [
        f"data.train_files={run.train_files}",
        f"data.val_files={run.val_files}",
        f"actor_rollout_ref.model.path={run.model}",
        f"trainer.total_epochs={run.epochs}",
        f"trainer.logger={logger}",
        f"trainer.project_name=verlkit-confidence-{run.design}",
        f"trainer.experiment_name={run.experiment}",
        f"trainer.default_local_dir={run.run_dir}/checkpoints",
        f"trainer.rollout_data_dir={run.run_dir}/rollouts",
        f"trainer.validation_data_dir={run.run_dir}/validation",
    ]
    if run.steps:
        out.append(f"trainer.total_training_steps={run.steps}")
    return out


def gpu_overrides(run: ConfidenceRun) -> list[str]:
    prompt_len = 1024  # MedMCQA prompts are < 400 tokens; overlong ones are filtered, not cut
    response_len = 256 if run.design == "cgp" else 1024
    return _common(run) + _grpo() + [
        # 32 prompts x 8 samples; one mini-batch = the whole batch, so 4 epochs = 4 updates per
        # generation batch, like TRL's num_iterations=4 on one generation batch.
        "data.train_batch_size=32",
        f"data.max_prompt_length={prompt_len}",
        f"data.max_response_length={response_len}",
        "data.filter_overlong_prompts=True",
        "data.truncation=error",
        "actor_rollout_ref.actor.ppo_mini_batch_size=32",
        "actor_rollout_ref.actor.use_dynamic_bsz=True",
        f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={16 * (prompt_len + response_len)}",
        "actor_rollout_ref.model.use_remove_padding=True",
        "actor_rollout_ref.model.enable_gradient_checkpointing=True",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.n=8",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.6",
        f"actor_rollout_ref.rollout.max_num_batched_tokens={8 * (prompt_len + response_len)}",
        # evaluation decoding of the seed (from June): greedy
        "actor_rollout_ref.rollout.val_kwargs.temperature=0",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=False",
        f"trainer.n_gpus_per_node={run.n_gpus_per_node}",
        f"trainer.nnodes={run.nnodes}",
        "trainer.save_freq=200",  # the seed's save_steps; verl also saves the last step
        "trainer.test_freq=20",
        "trainer.resume_mode=auto",
    ] + reward_overrides(run) + list(run.extra)


def cpu_overrides(run: ConfidenceRun) -> list[str]:
    """A few steps of the same algorithm sized for a laptop; the last step is saved for export."""
    ppo = cpu_profile_overrides().ppo

    return _common(run) + _grpo() + [
        "data.train_batch_size=4",
        "data.max_prompt_length=512",
        "data.max_response_length=32",
        "data.truncation=left",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.n=2",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        # save_freq > 0: verl saves on the last step (and every save_freq steps); the recipe exports it
        f"trainer.save_freq={run.steps or 1}",
    ] + ppo(1) + reward_overrides(run) + list(run.extra)


def overrides(run: ConfidenceRun) -> list[str]:
    return cpu_overrides(run) if run.profile == "cpu" else gpu_overrides(run)


def parse_devices(text: str) -> list[str]:
    """``"0,1, 2"`` -> ``["0", "1", "2"]`` (empty entries dropped)."""
    return [d.strip() for d in str(text).split(",") if d.strip()]


def check_devices(train_devices: str, downstream_devices: str) -> str | None:
    """None if the two CUDA device lists are disjoint, else a message naming the shared devices."""
    shared = sorted(set(parse_devices(train_devices)) & set(parse_devices(downstream_devices)))
    if shared:
        return (f"DOWNSTREAM_DEVICES={downstream_devices} and TRAIN_DEVICES={train_devices} share device(s) "
                f"{','.join(shared)}: the downstream model needs its own GPUs")
    return None


def check_chat(url: str, model: str, api_key_env: str | None = None, timeout_s: float = 60.0) -> str | None:
    """One short chat request to a hosted OpenAI-compatible API (the downstream model when it is not
    served by the launcher). None if it answered, else a message. The key is read from the env var
    named ``api_key_env`` by the shared client; it never appears on a command line."""
    import os

    from verlkit.clients.llm import close_session, get_client
    from verlkit.clients.loop import run_sync
    from verlkit.clients.settings import ClientSettings

    if api_key_env and not os.environ.get(api_key_env):
        return f"DOWNSTREAM_API_KEY_ENV={api_key_env}, but the environment variable {api_key_env} is empty or unset"
    settings = ClientSettings(url=url, model=model, api_key_env=api_key_env, timeout_s=timeout_s, max_retries=2,
                              cache_size=0)
    client = get_client(settings.client_config())
    try:
        reply = run_sync(client.chat([{"role": "user", "content": "Say OK."}], max_tokens=4, temperature=0.0),
                         timeout=timeout_s * 4)
    finally:
        close_session()
    return None if reply.ok else f"downstream model {model!r} at {url} did not answer a chat request: {reply.error}"


REPORT_FIELDS = ("accuracy", "ece", "brier", "auroc", "mean_confidence")


def eval_report(metrics: dict) -> tuple[str, list[str]]:
    """The evaluation's ``metrics.json`` as a table (one row per condition, the ``all`` view) and the
    problems that make the run a failure: a condition with no answered row at all."""
    header = ["condition", "n", *REPORT_FIELDS, "parse_failure_rate", "request_failures"]
    rows, problems = [header], []
    for name, report in metrics.get("conditions", {}).items():
        if not report.get("n"):
            problems.append(f"{name}: no answered rows ({report.get('request_failures', '?')} request failures)")
            continue
        view = report["all"]
        values = [view.get(k) for k in REPORT_FIELDS] + [report.get("parse_failure_rate")]
        rows.append([name, str(report["n"])] + ["n/a" if v is None else f"{v:.3f}" for v in values]
                    + [str(report.get("request_failures", 0))])
    return format_table(rows), problems
