"""Offline preference optimization on verl's SFT trainer engine: DPO, C3PO's LCDPO, SFT baselines and
Bradley–Terry reward models.

verl 0.9.1 has no DPO trainer. This module reuses verl's ``SFTTrainer`` (FSDP/FSDP2 engine,
dataloader, checkpoints, resume, console/wandb tracking) and changes four things:

* the dataset keeps a preference pair's chosen and rejected sequences together
  (:mod:`verlkit.preference.data`), and the collator pads every rank to the same number of
  sequences (uneven counts would break the engine's gloo all-gathers);
* each rank's batch is ONE engine micro-batch (``use_dynamic_bsz=False``), so a pair never straddles
  two loss calls;
* the loss, installed with the engine's ``set_loss_fn``, is :class:`PreferenceEngineLoss`;
* before the first update (and before a checkpoint is loaded) the same engine computes the frozen
  reference's summed log-probs of every sequence once: the reference is the initial model.

Objectives (``preference.loss``), all built from the pure functions below:

* ``dpo``: ``-log σ(β[(π_c - ref_c) - (π_r - ref_r)])`` with SUMMED reply log-probs, mean over pairs.
* ``lcdpo`` (C3PO): ``L_DPO + σ_soft·L_KD(out_of_scope) + σ_hard·L_KD(near_scope)``, with
  ``L_KD = (1-λ)·NLL + λ·T²·KL(p_ref,T ‖ p_θ,T)``; NLL is the token mean over the baseline
  completion, averaged over rows; the KL (λ > 0) is taken over the reference's top-k tokens per
  position plus a "rest" bucket, summed over the reply (see :func:`topk_kl`).
* ``sft``: NLL of the chosen replies. ``sft_neg``: ``NLL(chosen) + σ_soft·NLL(out_of_scope) +
  σ_hard·NLL(near_scope)`` (the reference's "SCD + negatives", weighted form).
* ``bt`` (a scalar reward model): the engine loads the model with a one-output token-classification
  head (verl's ``value_model`` engine, the critic's), the reward of a sequence is the head's output
  at its LAST token (what ``*ForSequenceClassification`` and vLLM's ``LAST`` pooling compute), and
  the loss is ``-log σ(r_chosen - r_rejected)``, mean over pairs. ``verlkit.preference.export``
  turns its checkpoint into a ``*ForSequenceClassification`` directory that vLLM serves.

Only ``dpo`` and ``lcdpo`` need the frozen reference; the others skip its forward pass.

Every term is a mean over the rows of its kind in the GLOBAL batch (counts all-reduced over the
data-parallel group), so 1 and N processes optimise the same number; a term with no rows in a batch
contributes 0 to that step.

CLI (verl's SFT config plus a ``preference.*`` group; see docs/preference-trainer.md)::

    torchrun --standalone --nproc_per_node=2 -m verlkit.preference.trainer \\
        model.path=... data.train_files=prefs.parquet data.train_batch_size=8 \\
        preference.loss=lcdpo preference.beta=0.1 $(python -m verlkit.cpu_profile.overrides sft --workers 2)
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.distributed
import torch.nn.functional as F

from verlkit.preference.data import (
    KIND_CHOSEN,
    KIND_NEAR_SCOPE,
    KIND_OUT_OF_SCOPE,
    KIND_REJECTED,
    MAX_SEQS_PER_ROW,
)

LOSSES = ("sft", "sft_neg", "dpo", "lcdpo", "bt")


@dataclass
class PreferenceOptions:
    """The ``preference.*`` config group. Defaults: the C3PO reference config (configs/config_lcdpo.json)."""

    loss: str = "dpo"
    beta: float = 0.1
    sigma_soft: float = 0.2
    sigma_hard: float = 0.1
    kd_lambda: float = 0.0
    kd_temperature: float = 1.0
    # Reference tokens kept per position for the KL term (only used when kd_lambda > 0).
    kd_topk: int = 16

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"preference.loss={self.loss!r}: expected one of {LOSSES}")
        if not self.beta > 0:
            raise ValueError(f"preference.beta={self.beta}: must be > 0")
        if self.sigma_soft < 0 or self.sigma_hard < 0:
            raise ValueError("preference.sigma_soft and preference.sigma_hard must be >= 0")
        if not 0.0 <= self.kd_lambda <= 1.0:
            raise ValueError(f"preference.kd_lambda={self.kd_lambda}: must be in [0, 1]")
        if not self.kd_temperature > 0:
            raise ValueError(f"preference.kd_temperature={self.kd_temperature}: must be > 0")
        if self.kd_topk < 1:
            raise ValueError(f"preference.kd_topk={self.kd_topk}: must be >= 1")

    @property
    def uses_kl(self) -> bool:
        """Whether the objective has a KL-to-reference term (then reference top-k are needed)."""
        return self.loss == "lcdpo" and self.kd_lambda > 0

    @property
    def needs_reference(self) -> bool:
        """Whether the objective compares with the frozen initial model (DPO-style margins)."""
        return self.loss in ("dpo", "lcdpo")

    @property
    def model_type(self) -> str:
        """verl engine model type: a scalar head for reward models, the LM head otherwise."""
        return "value_model" if self.loss == "bt" else "language_model"

    def row_kinds(self) -> tuple[str, ...]:
        """Row kinds of the data file this objective reads (the others are not even tokenized)."""
        if self.loss in ("sft_neg", "lcdpo"):
            return ("pair", "near_scope", "out_of_scope")
        return ("pair",)

    def term_weights(self) -> dict[str, float]:
        """Weight of each mean term (see :func:`objective_terms`) in the objective."""
        if self.loss == "sft":
            return {"chosen_nll": 1.0}
        if self.loss == "sft_neg":
            return {"chosen_nll": 1.0, "soft_nll": self.sigma_soft, "hard_nll": self.sigma_hard}
        if self.loss == "dpo":
            return {"dpo": 1.0}
        if self.loss == "bt":
            return {"bt": 1.0}
        return {"dpo": 1.0, "soft_kd": self.sigma_soft, "hard_kd": self.sigma_hard}


# ---- pure loss functions (no distributed state; unit-tested on their own) ----------------------


def sequence_logps(log_probs: list[torch.Tensor], loss_masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probs of the masked tokens of each sequence, and their counts.

    ``log_probs[i][t]`` is ``log p(x[t+1] | x[:t+1])`` (verl's engine output, labels rolled by one);
    ``loss_masks[i][t]`` marks token ``t`` as a reply token. Token ``t``'s log-prob is therefore
    ``log_probs[i][t-1]``.
    """
    sums, counts = [], []
    for lp, mask in zip(log_probs, loss_masks):
        m = mask[1:].to(lp.dtype)
        sums.append((lp[:-1] * m).sum())
        counts.append(m.sum())
    return torch.stack(sums), torch.stack(counts)


def dpo_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss ``-log σ(β·margin)`` and the margin (implicit reward difference / β)."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin), margin


def pair_indices(kinds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the chosen rows and of their rejected rows (the row right after each)."""
    chosen_idx = torch.nonzero(kinds == KIND_CHOSEN).flatten()
    rejected_idx = chosen_idx + 1
    if len(chosen_idx) and (
        int(rejected_idx[-1]) >= len(kinds) or not bool((kinds[rejected_idx] == KIND_REJECTED).all())
    ):
        raise ValueError("every chosen row must be immediately followed by its rejected row")
    return chosen_idx, rejected_idx


def last_token_values(values: list[torch.Tensor]) -> torch.Tensor:
    """The scalar head's output at each sequence's last token: the sequence's reward."""
    return torch.stack([v[-1] for v in values])


def bradley_terry_terms(rewards: torch.Tensor, kinds: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-term ``(sum over pairs, number of pairs)`` of the Bradley–Terry objective.

    Rows are ordered as the collator emits them (a chosen row immediately followed by its rejected
    row); other rows (padding) are ignored. Terms: ``bt`` (``-log σ(r_c - r_r)``) and statistics
    ``rm_acc`` (share of pairs with ``r_c > r_r``), ``rm_margin``, ``rm_chosen``, ``rm_rejected``.
    """
    chosen_idx, rejected_idx = pair_indices(kinds)
    n = torch.tensor(float(len(chosen_idx)), dtype=torch.float64)
    if not len(chosen_idx):
        zero = rewards.sum() * 0.0
        return {k: (zero, n) for k in ("bt", "rm_acc", "rm_margin", "rm_chosen", "rm_rejected")}
    r_c, r_r = rewards[chosen_idx], rewards[rejected_idx]
    margin = r_c - r_r
    return {
        "bt": (-F.logsigmoid(margin).sum(), n),
        "rm_acc": ((margin > 0).to(rewards.dtype).sum().detach(), n),
        "rm_margin": (margin.sum().detach(), n),
        "rm_chosen": (r_c.sum().detach(), n),
        "rm_rejected": (r_r.sum().detach(), n),
    }


def kd_losses(nll: torch.Tensor, kl: torch.Tensor | None, kd_lambda: float, temperature: float) -> torch.Tensor:
    """``L_KD = (1-λ)·NLL + λ·T²·KL`` per row; ``kl`` may be None only when λ = 0."""
    if kd_lambda == 0.0:
        return nll
    if kl is None:
        raise ValueError("kd_lambda > 0 needs the KL to the reference")
    return (1.0 - kd_lambda) * nll + kd_lambda * temperature**2 * kl


def topk_kl(
    student_logits: torch.Tensor, ref_topk_ids: torch.Tensor, ref_topk_logprobs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``KL(p_ref,T ‖ p_θ,T)`` per token over the reference's top-k tokens plus one "rest" bucket.

    ``student_logits``: (tokens, vocab); ``ref_topk_ids``/``ref_topk_logprobs``: (tokens, k), the
    reference's temperature-T log-probs (over the full vocabulary) of its k most likely tokens.
    The mass outside the top-k is one extra category on both sides, so the result is a proper KL
    (>= 0, zero iff the student matches the reference on the top-k), exact when k = vocab.
    """
    student_all = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    student_top = student_all.gather(-1, ref_topk_ids)
    ref_top = ref_topk_logprobs.float()

    def with_rest(top: torch.Tensor) -> torch.Tensor:
        rest = torch.log1p(-top.exp().sum(-1, keepdim=True).clamp(max=1 - 1e-6))
        return torch.cat([top, rest], dim=-1)

    ref_full, student_full = with_rest(ref_top), with_rest(student_top)
    return (ref_full.exp() * (ref_full - student_full)).sum(-1)


def objective_terms(
    seq_logp: torch.Tensor,
    seq_tokens: torch.Tensor,
    ref_logp: torch.Tensor,
    kinds: torch.Tensor,
    opts: PreferenceOptions,
    kl: torch.Tensor | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-term ``(sum over rows, number of rows)`` for one batch of sequences.

    Rows are ordered as the collator emits them: a chosen row is immediately followed by its
    rejected row. ``kl`` (per row, optional) is the summed KL to the reference for constraint rows.
    Terms: ``dpo`` (per-pair loss), ``chosen_nll``, ``soft_nll``/``hard_nll`` (token-mean NLL of the
    out-of-scope/near-scope rows), ``soft_kd``/``hard_kd`` (L_KD of those rows), and statistics
    ``reward_acc``, ``margin`` (per pair).
    """
    zero = seq_logp.sum() * 0.0
    chosen_idx, rejected_idx = pair_indices(kinds)
    terms: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    n_pairs = torch.tensor(float(len(chosen_idx)), dtype=torch.float64)
    if len(chosen_idx):
        per_pair, margin = dpo_losses(
            seq_logp[chosen_idx], seq_logp[rejected_idx], ref_logp[chosen_idx], ref_logp[rejected_idx], opts.beta
        )
        terms["dpo"] = (per_pair.sum(), n_pairs)
        terms["reward_acc"] = ((margin > 0).to(seq_logp.dtype).sum().detach(), n_pairs)
        terms["margin"] = (margin.sum().detach(), n_pairs)
    else:
        for name in ("dpo", "reward_acc", "margin"):
            terms[name] = (zero, n_pairs)
    token_nll = -seq_logp / seq_tokens.clamp(min=1)
    for name, kind in (("chosen", KIND_CHOSEN), ("soft", KIND_OUT_OF_SCOPE), ("hard", KIND_NEAR_SCOPE)):
        rows = kinds == kind
        n = torch.tensor(float(rows.sum()), dtype=torch.float64)
        nll = token_nll[rows]
        terms[f"{name}_nll"] = (nll.sum() if len(nll) else zero, n)
        if name != "chosen":
            kd = kd_losses(nll, None if kl is None else kl[rows], opts.kd_lambda, opts.kd_temperature)
            terms[f"{name}_kd"] = (kd.sum() if len(kd) else zero, n)
    return terms


def combine_terms(sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], opts: PreferenceOptions) -> torch.Tensor:
    """The objective: ``Σ_k weight_k · sum_k / count_k`` over the weighted terms (0 for an empty term)."""
    total = None
    for name, weight in opts.term_weights().items():
        term = sums[name] / counts[name].clamp(min=1).to(sums[name].dtype) * weight
        total = term if total is None else total + term
    return total


def preference_loss(
    seq_logp: torch.Tensor,
    seq_tokens: torch.Tensor,
    ref_logp: torch.Tensor,
    kinds: torch.Tensor,
    opts: PreferenceOptions,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The whole objective on one (non-distributed) batch, with its per-term means."""
    terms = objective_terms(seq_logp, seq_tokens, ref_logp, kinds, opts)
    sums = {k: v[0] for k, v in terms.items()}
    counts = {k: v[1] for k, v in terms.items()}
    means = {k: float(sums[k].detach() / counts[k].clamp(min=1)) for k in terms}
    return combine_terms(sums, counts, opts), means


def bradley_terry_loss(rewards: torch.Tensor, kinds: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The ``bt`` objective on one (non-distributed) batch of sequence rewards, with its statistics."""
    terms = bradley_terry_terms(rewards, kinds)
    means = {k: float(s.detach() / n.clamp(min=1)) for k, (s, n) in terms.items()}
    return terms["bt"][0] / terms["bt"][1].clamp(min=1), means


# ---- the engine side ----------------------------------------------------------------------------


class PreferenceEngineLoss:
    """The loss installed with ``TrainingWorker.set_loss_fn``; called once per micro-batch (= one
    rank's whole batch) as ``loss_fn(model_output=..., data=..., dp_group=...)``.

    Term counts are all-reduced over the data-parallel group, and the local loss is scaled by the
    group size because FSDP averages gradients over it: the gradient is that of the global-batch
    objective. Metrics are global too (identical on every rank).
    """

    def __init__(self, opts: PreferenceOptions):
        self.opts = opts

    def __call__(self, model_output=None, data=None, dp_group=None, student_logits=None):
        if student_logits is not None:
            # Called by the engine as its logits processor (``distillation_use_topk``): per-token
            # KL to the reference's top-k, returned as (1, tokens) and handed back in model_output.
            return {"kd_kl": self.token_kl(student_logits[0], data).unsqueeze(0)}
        if self.opts.loss == "bt":
            rewards = last_token_values(list(model_output["values"].unbind())).to(torch.float64)
            terms = bradley_terry_terms(rewards, data["row_kind"].to(rewards.device))
            return self._reduce(terms, dp_group, counted=("bt",))
        log_probs = list(model_output["log_probs"].unbind())
        masks = list(data["loss_mask"].unbind())
        seq_logp, seq_tokens = sequence_logps(log_probs, masks)
        seq_logp = seq_logp.to(torch.float64)
        seq_tokens = seq_tokens.to(torch.float64)
        kl = None
        if self.opts.uses_kl:
            if "kd_kl" not in model_output:
                raise RuntimeError("kd_lambda > 0 but the engine did not run the KL logits processor")
            # KL at position t is about token t+1: the same shift as the log-probs; summed over
            # the reply tokens, as in the reference implementation.
            kl, _ = sequence_logps(list(model_output["kd_kl"].unbind()), masks)
            kl = kl.to(torch.float64)
        kinds = data["row_kind"].to(seq_logp.device)
        ref_logp = data["ref_logp"].to(device=seq_logp.device, dtype=torch.float64)
        terms = objective_terms(seq_logp, seq_tokens, ref_logp, kinds, self.opts, kl=kl)
        return self._reduce(terms, dp_group, counted=("dpo", "soft_nll", "hard_nll"))

    def _reduce(self, terms: dict[str, tuple[torch.Tensor, torch.Tensor]], dp_group, counted: tuple[str, ...]):
        """All-reduce term counts and sums over the data-parallel group; the local loss, scaled so
        FSDP's gradient averaging yields the gradient of the global-batch objective, and metrics."""
        names = sorted(terms)
        stats = torch.stack([terms[k][1] for k in names] + [terms[k][0].detach() for k in names]).to(torch.float64)
        dp_size = 1
        if dp_group is not None and torch.distributed.is_initialized():
            dp_size = torch.distributed.get_world_size(dp_group)
            torch.distributed.all_reduce(stats, op=torch.distributed.ReduceOp.SUM, group=dp_group)
        counts = {k: stats[i] for i, k in enumerate(names)}
        global_sums = {k: stats[len(names) + i] for i, k in enumerate(names)}

        local_sums = {k: terms[k][0] for k in names}
        loss = combine_terms(local_sums, counts, self.opts) * dp_size
        metrics = {f"pref/{k}": float(global_sums[k] / counts[k].clamp(min=1)) for k in names}
        metrics.update({f"pref/n_{k}": float(counts[k]) for k in counted})
        metrics["pref/objective"] = float(combine_terms(global_sums, counts, self.opts))
        return loss.to(torch.float32), metrics

    def token_kl(self, logits: torch.Tensor, data) -> torch.Tensor:
        k = self.opts.kd_topk
        ids = torch.stack([data[f"ref_topk_id_{j}"].values() for j in range(k)], dim=-1).to(logits.device)
        lps = torch.stack([data[f"ref_topk_lp_{j}"].values() for j in range(k)], dim=-1).to(logits.device)
        return topk_kl(logits, ids, lps, self.opts.kd_temperature)


class ReferenceTopK:
    """A loss-function stand-in for the reference pass: as the engine's logits processor it returns
    the temperature-T top-k next-token ids and log-probs per token; as the loss it returns 0."""

    def __init__(self, k: int, temperature: float):
        self.k = k
        self.temperature = temperature

    def __call__(self, model_output=None, data=None, dp_group=None, student_logits=None):
        if student_logits is None:
            return torch.zeros(()), {}
        logp = torch.log_softmax(student_logits[0].float() / self.temperature, dim=-1)
        if self.k > logp.shape[-1]:
            raise ValueError(f"preference.kd_topk={self.k} exceeds the vocabulary size {logp.shape[-1]}")
        values, ids = logp.topk(self.k, dim=-1)
        out = {}
        for j in range(self.k):
            out[f"ref_topk_id_{j}"] = ids[:, j].to(torch.float32).unsqueeze(0)  # exact below 2^24
            out[f"ref_topk_lp_{j}"] = values[:, j].unsqueeze(0)
        return out


def _flatten_metric(value: Any) -> Any:
    """Metrics arrive as [rank][micro-batch] lists; ours are global, so any entry will do (mean)."""
    if isinstance(value, (list, tuple)):
        flat: list[float] = []
        stack = list(value)
        while stack:
            v = stack.pop()
            if isinstance(v, (list, tuple)):
                stack.extend(v)
            else:
                flat.append(float(v))
        return sum(flat) / len(flat) if flat else value
    return value


def _make_trainer_class():
    """Build :class:`PreferenceTrainer` on first use: importing verl's SFT trainer pulls in the whole
    engine stack, which the pure loss functions above (and their unit tests) do not need."""
    from verl.trainer.sft_trainer import SFTTrainer

    return type("PreferenceTrainer", (_PreferenceTrainerMixin, SFTTrainer), {"__module__": __name__})


_TRAINER_CLASS = None


def __getattr__(name: str):
    global _TRAINER_CLASS
    if name == "PreferenceTrainer":
        if _TRAINER_CLASS is None:
            _TRAINER_CLASS = _make_trainer_class()
        return _TRAINER_CLASS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _PreferenceTrainerMixin:
    """verl's ``SFTTrainer`` with preference data, the preference loss and a precomputed reference
    (combined with it as ``PreferenceTrainer``)."""

    def __init__(self, config):
        from omegaconf import OmegaConf, open_dict

        self.pref_opts = PreferenceOptions(**OmegaConf.to_container(config.preference, resolve=True))
        world = torch.distributed.get_world_size()
        sp = int(config.engine.get("ulysses_sequence_parallel_size", 1) or 1)
        if sp != 1:
            raise ValueError("the preference trainer needs engine.ulysses_sequence_parallel_size=1")
        if config.data.train_batch_size % world:
            raise ValueError(f"data.train_batch_size={config.data.train_batch_size} must be divisible by {world} processes")
        self.rows_per_rank = MAX_SEQS_PER_ROW * (config.data.train_batch_size // world)
        with open_dict(config):
            # One micro-batch per rank and step: pairs stay together, row order is kept.
            config.data.use_dynamic_bsz = False
            config.data.micro_batch_size_per_gpu = self.rows_per_rank
            config.data.pad_mode = "no_padding"
        super().__init__(config)

    def _build_dataset(self):
        from verlkit.preference.data import PreferenceDataset

        data = self.config.data
        tokenizer = self.model_config.tokenizer
        make = lambda files, n: PreferenceDataset(
            files, tokenizer, data, max_samples=n, kinds=self.pref_opts.row_kinds()
        )
        self.train_dataset = make(data.train_files, data.get("train_max_samples", -1))
        self.val_dataset = make(data.val_files, data.get("val_max_samples", -1)) if data.get("val_files") else None

    def _build_engine(self):
        if self.pref_opts.model_type == "language_model":
            super()._build_engine()
        else:
            # verl's SFT trainer always builds a language-model engine; a reward model needs the
            # scalar-head (critic) engine, otherwise the same worker and configs.
            from verl.workers.engine_workers import TrainingWorker, TrainingWorkerConfig

            self.training_client = TrainingWorker(
                config=TrainingWorkerConfig(
                    model_type=self.pref_opts.model_type,
                    model_config=self.model_config,
                    engine_config=self.engine_config,
                    optimizer_config=self.optimizer_config,
                    checkpoint_config=self.checkpoint_config,
                    profiler_config=self.profiler_config,
                )
            )
            self.engine = self.training_client.engine
        self.loss_fn = PreferenceEngineLoss(self.pref_opts)
        self.training_client.set_loss_fn(loss_fn=self.loss_fn)
        original = self.training_client.train_batch

        def train_batch(data):
            from verl.utils import tensordict_utils as tu

            if self.pref_opts.uses_kl:
                tu.assign_non_tensor(data, distillation_use_topk=True)
            output = original(data=data)
            if output is None:
                return output
            metrics = {k: _flatten_metric(v) if k.startswith("pref/") else v for k, v in tu.get(output, "metrics").items()}
            return tu.get_tensordict(tensor_dict={}, non_tensor_dict={"metrics": metrics})

        self.training_client.train_batch = train_batch

        if self.pref_opts.uses_kl:
            original_infer = self.training_client.infer_batch

            def infer_batch(data):
                from verl.utils import tensordict_utils as tu

                if "distillation_use_topk" not in data:
                    tu.assign_non_tensor(data, distillation_use_topk=True)
                return original_infer(data)

            self.training_client.infer_batch = infer_batch

    def _build_dataloader(self):
        from torch.utils.data import DistributedSampler
        from torchdata.stateful_dataloader import StatefulDataLoader

        from verlkit.preference.data import PreferenceCollator

        dp_rank = self.engine.get_data_parallel_rank()
        dp_size = self.engine.get_data_parallel_size()
        self.global_batch_size = self.config.data.train_batch_size
        self.train_batch_size_per_dp = self.global_batch_size // dp_size
        pad_id = self.model_config.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.model_config.tokenizer.eos_token_id
        topk = self.pref_opts.kd_topk if self.pref_opts.uses_kl else 0
        self.collate_fn = PreferenceCollator(self.rows_per_rank, pad_id, topk=topk)

        def loader(dataset, shuffle: bool):
            sampler = DistributedSampler(dataset, shuffle=shuffle, num_replicas=dp_size, rank=dp_rank, drop_last=True)
            dl = StatefulDataLoader(
                dataset=dataset,
                batch_size=self.train_batch_size_per_dp,
                sampler=sampler,
                collate_fn=self.collate_fn,
                num_workers=self.config.data.num_workers,
                pin_memory=False,
                drop_last=True,
            )
            return sampler, dl

        if len(self.train_dataset) < self.global_batch_size:
            raise ValueError(
                f"{len(self.train_dataset)} training rows are fewer than data.train_batch_size={self.global_batch_size}"
            )
        self.train_sampler, self.train_dataloader = loader(self.train_dataset, shuffle=True)
        if self.val_dataset is not None:
            self.val_sampler, self.val_dataloader = loader(self.val_dataset, shuffle=False)
        else:
            self.val_dataloader = None

    def _build_ckpt_handler(self):
        # The engine holds the initial weights here (a checkpoint is loaded right after): the
        # frozen reference is exactly this model, on resume too.
        if self.pref_opts.needs_reference:
            for dataset in (self.train_dataset, self.val_dataset):
                if dataset is not None:
                    dataset.ref_logps, dataset.ref_topk = self.compute_reference(dataset)
        super()._build_ckpt_handler()

    def compute_reference(self, dataset) -> tuple[dict[int, list[float]], dict | None]:
        """Summed log-probs of every sequence under the current (initial) model, on every rank, and
        (for a KL term) the top-k next-token log-probs of every constraint row."""
        from verl.utils import tensordict_utils as tu

        want_topk = self.pref_opts.uses_kl
        k = self.pref_opts.kd_topk

        dp_rank = self.engine.get_data_parallel_rank()
        dp_size = self.engine.get_data_parallel_size()
        n = len(dataset)
        per_rank = math.ceil(n / dp_size)
        mine = list(range(dp_rank, n, dp_size)) or [0]
        # Every rank must run the same number of (collective) forward passes: pad with repeats.
        mine += [mine[-1]] * (per_rank - len(mine))
        batch = self.train_batch_size_per_dp
        found: dict[int, dict[int, float]] = {}
        meta = {
            "use_remove_padding": self.config.model.use_remove_padding,
            "use_dynamic_bsz": False,
            "micro_batch_size_per_gpu": self.rows_per_rank,
            "temperature": 1.0,
            "pad_mode": "no_padding",
            "pad_token_id": self.collate_fn.pad_token_id,
            "compute_loss": want_topk,
            "distillation_use_topk": want_topk,
        }
        topk_found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        saved_loss = self.training_client.loss_fn
        if want_topk:
            self.training_client.loss_fn = ReferenceTopK(k, self.pref_opts.kd_temperature)
        try:
            for start in range(0, len(mine), batch):
                items = [dataset[i] for i in mine[start : start + batch]]
                td = tu.get_tensordict(tensor_dict=self.collate_fn(items), non_tensor_dict=meta)
                example, slot = td["example_index"].tolist(), td["example_slot"].tolist()
                kinds = td["row_kind"].tolist()
                masks = list(td["loss_mask"].unbind())
                output = self.training_client.infer_batch(td)
                if output is None:
                    continue
                sums, _ = sequence_logps(list(output["log_probs"].unbind()), masks)
                for e, s, v in zip(example, slot, sums.tolist()):
                    if e >= 0:
                        found.setdefault(e, {})[s] = v
                if want_topk:
                    ids = [list(output[f"ref_topk_id_{j}"].unbind()) for j in range(k)]
                    lps = [list(output[f"ref_topk_lp_{j}"].unbind()) for j in range(k)]
                    for r, (e, kind) in enumerate(zip(example, kinds)):
                        if e >= 0 and kind >= KIND_OUT_OF_SCOPE:
                            topk_found[e] = (
                                torch.stack([ids[j][r] for j in range(k)], dim=-1).round().long(),
                                torch.stack([lps[j][r] for j in range(k)], dim=-1).float(),
                            )
        finally:
            self.training_client.loss_fn = saved_loss
        group = self.engine.get_data_parallel_group()
        gathered: list[dict | None] = [None] * dp_size
        torch.distributed.all_gather_object(gathered, found, group=group)
        merged: dict[int, dict[int, float]] = {}
        for part in gathered:
            for e, slots in (part or {}).items():
                merged.setdefault(e, {}).update(slots)
        missing = [i for i in range(n) if i not in merged]
        if missing:
            raise RuntimeError(f"reference log-probs missing for rows {missing[:10]}")
        ref_logps = {e: [slots[s] for s in sorted(slots)] for e, slots in merged.items()}
        if not want_topk:
            return ref_logps, None
        gathered_topk: list[dict | None] = [None] * dp_size
        torch.distributed.all_gather_object(gathered_topk, topk_found, group=group)
        ref_topk: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for part in gathered_topk:
            ref_topk.update(part or {})
        return ref_logps, ref_topk


# ---- configuration and entry point --------------------------------------------------------------


def verl_config_dir() -> Path:
    import verl.trainer

    return Path(verl.trainer.__file__).resolve().parent / "config"


def build_config(overrides: list[str]):
    """verl's ``sft_trainer_engine`` config with ``overrides`` applied, plus the ``preference`` group.

    ``preference.<key>=<value>`` overrides go to :class:`PreferenceOptions` (unknown keys are an
    error); everything else is a hydra override of verl's SFT config.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    pref = [o for o in overrides if o.startswith(("preference.", "+preference."))]
    rest = [o for o in overrides if o not in pref]
    with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
        config = compose(config_name="sft_trainer_engine", overrides=rest)
    known = {f.name for f in fields(PreferenceOptions)}
    values: dict[str, Any] = {}
    for item in pref:
        key, sep, raw = item.lstrip("+")[len("preference.") :].partition("=")
        if not sep or key not in known:
            raise ValueError(f"bad preference override {item!r}; known keys: {sorted(known)}")
        values[key] = OmegaConf.from_dotlist([f"v={raw}"]).v
    options = PreferenceOptions(**values)
    OmegaConf.set_struct(config, False)
    config.preference = asdict(options)
    OmegaConf.set_struct(config, True)
    return config


def run_preference(config) -> None:
    from verl.utils.distributed import (
        destroy_global_process_group,
        initialize_global_process_group,
    )

    initialize_global_process_group()
    trainer = __getattr__("PreferenceTrainer")(config=config)
    trainer.fit()
    destroy_global_process_group()


def main(argv: list[str] | None = None) -> None:
    from verl.utils.device import auto_set_device

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    config = build_config(args)
    auto_set_device(config)
    run_preference(config)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
