"""The adapter between the pure preference losses and verl's training engine.

verl's ``TrainingWorker`` calls a loss function once per micro-batch as
``loss_fn(model_output=..., data=..., dp_group=...)`` and, when the batch carries
``distillation_use_topk``, also as the logits processor ``loss_fn(student_logits=..., data=...)``
(whatever that returns comes back in ``model_output``). The trainer keeps each rank's whole batch in
ONE micro-batch, so a pair never straddles two loss calls. Here:

* :class:`PreferenceEngineLoss`: the loss (term sums and counts all-reduced over the data-parallel
  group, see :mod:`verlkit.preference.losses`) and, for a KL term, the logits processor that turns
  student logits into the per-token KL to the reference's top-k;
* :class:`ReferenceTopK`: the logits processor of the reference pass (top-k ids and log-probs);
* :func:`install_loss`: puts the loss on the worker and flattens its metrics;
* :func:`compute_reference`: the frozen reference's summed log-probs of every sequence (and the
  top-k for a KL term), computed once by the same engine from the initial weights.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed
from verl.utils import tensordict_utils as tu

from verlkit.preference.config import PreferenceConfig, PreferenceLoss
from verlkit.preference.data import KIND_OUT_OF_SCOPE, PreferenceCollator, PreferenceDataset
from verlkit.preference.losses import (
    bradley_terry_terms,
    combine_terms,
    last_token_values,
    objective_terms,
    sequence_logps,
    topk_kl,
)


class PreferenceEngineLoss:
    """The loss installed with ``TrainingWorker.set_loss_fn``; called once per micro-batch (= one
    rank's whole batch) as ``loss_fn(model_output=..., data=..., dp_group=...)``.

    Term counts are all-reduced over the data-parallel group, and the local loss is scaled by the
    group size because FSDP averages gradients over it: the gradient is that of the global-batch
    objective. Metrics are global too (identical on every rank).
    """

    def __init__(self, opts: PreferenceConfig):
        self.opts = opts

    def __call__(self, model_output=None, data=None, dp_group=None, student_logits=None):
        if student_logits is not None:
            # Called by the engine as its logits processor (``distillation_use_topk``): per-token
            # KL to the reference's top-k, returned as (1, tokens) and handed back in model_output.
            return {"kd_kl": self.token_kl(student_logits[0], data).unsqueeze(0)}
        if self.opts.loss == PreferenceLoss.bt:
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


def install_loss(worker, opts: PreferenceConfig) -> PreferenceEngineLoss:
    """Make ``worker`` (verl's ``TrainingWorker``) train on the preference objective.

    Besides ``set_loss_fn``: with a KL term every batch asks for the logits-processor call
    (``distillation_use_topk``), and the ``pref/*`` metrics, which arrive as per-rank lists of
    identical global values, are reported as one number.
    """
    loss_fn = PreferenceEngineLoss(opts)
    worker.set_loss_fn(loss_fn=loss_fn)
    train_batch, infer_batch = worker.train_batch, worker.infer_batch

    def preference_train_batch(data):
        if opts.uses_kl:
            tu.assign_non_tensor(data, distillation_use_topk=True)
        output = train_batch(data=data)
        if output is None:
            return output
        metrics = {k: _flatten_metric(v) if k.startswith("pref/") else v for k, v in tu.get(output, "metrics").items()}
        return tu.get_tensordict(tensor_dict={}, non_tensor_dict={"metrics": metrics})

    def preference_infer_batch(data):
        if "distillation_use_topk" not in data:
            tu.assign_non_tensor(data, distillation_use_topk=True)
        return infer_batch(data)

    worker.train_batch = preference_train_batch
    if opts.uses_kl:
        worker.infer_batch = preference_infer_batch
    return loss_fn


def compute_reference(
    worker,
    dataset: PreferenceDataset,
    collate_fn: PreferenceCollator,
    opts: PreferenceConfig,
    *,
    batch_size: int,
    use_remove_padding: bool,
) -> tuple[dict[int, list[float]], dict | None]:
    """Summed log-probs of every sequence of ``dataset`` under the worker's current (initial) model,
    on every rank, and (for a KL term) the top-k next-token log-probs of every constraint row.

    Each rank scores its share of the rows, ``batch_size`` dataset items per forward pass, and the
    results are all-gathered. Returns ``(ref_logps, ref_topk)`` in the dataset's formats.
    """
    engine = worker.engine
    want_topk = opts.uses_kl
    k = opts.kd_topk

    dp_rank = engine.get_data_parallel_rank()
    dp_size = engine.get_data_parallel_size()
    n = len(dataset)
    per_rank = math.ceil(n / dp_size)
    mine = list(range(dp_rank, n, dp_size)) or [0]
    # Every rank must run the same number of (collective) forward passes: pad with repeats.
    mine += [mine[-1]] * (per_rank - len(mine))
    found: dict[int, dict[int, float]] = {}
    meta = {
        "use_remove_padding": use_remove_padding,
        "use_dynamic_bsz": False,
        "micro_batch_size_per_gpu": collate_fn.rows_per_batch,
        "temperature": 1.0,
        "pad_mode": "no_padding",
        "pad_token_id": collate_fn.pad_token_id,
        "compute_loss": want_topk,
        "distillation_use_topk": want_topk,
    }
    topk_found: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    saved_loss = worker.loss_fn
    if want_topk:
        worker.loss_fn = ReferenceTopK(k, opts.kd_temperature)
    try:
        for start in range(0, len(mine), batch_size):
            items = [dataset[i] for i in mine[start : start + batch_size]]
            td = tu.get_tensordict(tensor_dict=collate_fn(items), non_tensor_dict=meta)
            example, slot = td["example_index"].tolist(), td["example_slot"].tolist()
            kinds = td["row_kind"].tolist()
            masks = list(td["loss_mask"].unbind())
            output = worker.infer_batch(td)
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
        worker.loss_fn = saved_loss
    group = engine.get_data_parallel_group()
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
