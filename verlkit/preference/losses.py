"""The preference objectives as pure torch functions: no distributed state, no verl.

Rows arrive in the collator's order (:mod:`verlkit.preference.data`): a chosen row immediately
followed by its rejected row, then constraint rows, then zero-weight padding. Every objective is a
weighted sum of per-kind MEAN terms; :func:`objective_terms` and :func:`bradley_terry_terms` return
each term as ``(sum over rows, number of rows)`` so that the engine adapter
(:mod:`verlkit.preference.engine`) can all-reduce sums and counts over the data-parallel group before
dividing, and 1 and N processes optimise the same number.

* ``dpo``: ``-log σ(β[(π_c - ref_c) - (π_r - ref_r)])`` with SUMMED reply log-probs, mean over pairs.
* ``lcdpo`` (C3PO): ``L_DPO + σ_soft·L_KD(out_of_scope) + σ_hard·L_KD(near_scope)``, with
  ``L_KD = (1-λ)·NLL + λ·T²·KL(p_ref,T ‖ p_θ,T)``; NLL is the token mean over the baseline
  completion, averaged over rows; the KL (λ > 0) is taken over the reference's top-k tokens per
  position plus a "rest" bucket, summed over the reply (see :func:`topk_kl`).
* ``sft``: NLL of the chosen replies. ``sft_neg``: ``NLL(chosen) + σ_soft·NLL(out_of_scope) +
  σ_hard·NLL(near_scope)``.
* ``bt`` (a scalar reward model): ``-log σ(r_chosen - r_rejected)``, mean over pairs, where a
  sequence's reward is the scalar head's output at its last token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from verlkit.preference.config import PreferenceConfig
from verlkit.preference.data import KIND_CHOSEN, KIND_NEAR_SCOPE, KIND_OUT_OF_SCOPE, KIND_REJECTED


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
    opts: PreferenceConfig,
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


def combine_terms(sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], opts: PreferenceConfig) -> torch.Tensor:
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
    opts: PreferenceConfig,
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
