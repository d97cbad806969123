"""The preference objectives (DPO, LCDPO, SFT baselines, Bradley–Terry) as pure torch functions."""

from __future__ import annotations

import math

import pytest
import torch

from verlkit.preference.config import PreferenceConfig
from verlkit.preference.data import KIND_CHOSEN, KIND_NEAR_SCOPE, KIND_OUT_OF_SCOPE, KIND_PADDING, KIND_REJECTED
from verlkit.preference.losses import (
    bradley_terry_loss,
    dpo_losses,
    kd_losses,
    last_token_values,
    preference_loss,
    sequence_logps,
    topk_kl,
)

LN2 = math.log(2.0)
C, R, PAD = KIND_CHOSEN, KIND_REJECTED, KIND_PADDING


def _batch(seed: int = 0):
    """Rows: pair (chosen, rejected), pair, out_of_scope, near_scope, padding."""
    gen = torch.Generator().manual_seed(seed)
    kinds = torch.tensor([KIND_CHOSEN, KIND_REJECTED, KIND_CHOSEN, KIND_REJECTED, KIND_OUT_OF_SCOPE, KIND_NEAR_SCOPE, KIND_PADDING])
    logp = -torch.rand(len(kinds), generator=gen, dtype=torch.float64) * 20
    tokens = torch.tensor([5, 7, 3, 4, 6, 2, 0], dtype=torch.float64)
    logp[-1] = 0.0
    return logp, tokens, kinds


# ---- DPO --------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0])
def test_dpo_is_ln2_when_policy_equals_reference(beta):
    logp, tokens, kinds = _batch()
    loss, means = preference_loss(logp, tokens, logp.clone(), kinds, PreferenceConfig(loss="dpo", beta=beta))
    assert loss.item() == pytest.approx(LN2, abs=1e-12)
    assert means["dpo"] == pytest.approx(LN2, abs=1e-12)
    assert means["margin"] == 0.0


def test_dpo_matches_hand_formula_and_uses_summed_logps():
    pc, pr, rc, rr = torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([-11.0]), torch.tensor([-11.5])
    loss, margin = dpo_losses(pc, pr, rc, rr, beta=0.1)
    expected_margin = (-10.0 + 11.0) - (-12.0 + 11.5)
    assert margin.item() == pytest.approx(expected_margin)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.1 * expected_margin))))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    logp, tokens, kinds = _batch()
    ref = logp.clone()
    policy = logp.clone().requires_grad_(True)
    loss, _ = preference_loss(policy, tokens, ref, kinds, PreferenceConfig(loss="dpo"))
    loss.backward()
    assert (policy.grad[kinds == KIND_CHOSEN] < 0).all()  # gradient descent increases chosen log-probs
    assert (policy.grad[kinds == KIND_REJECTED] > 0).all()
    assert (policy.grad[kinds >= KIND_OUT_OF_SCOPE] == 0).all()  # plain DPO ignores constraint rows


def test_chosen_must_be_followed_by_rejected():
    logp, tokens, _ = _batch()
    kinds = torch.tensor([KIND_CHOSEN, KIND_OUT_OF_SCOPE, KIND_REJECTED, KIND_CHOSEN, KIND_REJECTED, KIND_NEAR_SCOPE, KIND_PADDING])
    with pytest.raises(ValueError, match="immediately followed"):
        preference_loss(logp, tokens, logp, kinds, PreferenceConfig(loss="dpo"))


# ---- LCDPO and baselines ----------------------------------------------------------------------


def test_lcdpo_constraint_terms_are_baseline_nll_when_lambda_is_zero():
    logp, tokens, kinds = _batch()
    opts = PreferenceConfig(loss="lcdpo")  # reference config: beta .1, sigma_soft .2, sigma_hard .1, lambda 0
    loss, means = preference_loss(logp, tokens, logp.clone(), kinds, opts)
    soft_nll = -logp[4] / tokens[4]
    hard_nll = -logp[5] / tokens[5]
    assert means["soft_kd"] == pytest.approx(soft_nll.item())
    assert means["hard_kd"] == pytest.approx(hard_nll.item())
    assert loss.item() == pytest.approx(LN2 + 0.2 * soft_nll.item() + 0.1 * hard_nll.item())


def test_sft_baselines():
    logp, tokens, kinds = _batch()
    chosen_nll = ((-logp[0] / tokens[0]) + (-logp[2] / tokens[2])).item() / 2
    sft, _ = preference_loss(logp, tokens, torch.zeros_like(logp), kinds, PreferenceConfig(loss="sft"))
    assert sft.item() == pytest.approx(chosen_nll)
    neg, _ = preference_loss(
        logp, tokens, torch.zeros_like(logp), kinds, PreferenceConfig(loss="sft_neg", sigma_soft=0.5, sigma_hard=0.5)
    )
    assert neg.item() == pytest.approx(chosen_nll + 0.5 * (-logp[4] / 6).item() + 0.5 * (-logp[5] / 2).item())


def test_kd_mixes_nll_and_tempered_kl():
    nll, kl = torch.tensor([2.0, 4.0]), torch.tensor([0.5, 1.0])
    assert torch.equal(kd_losses(nll, None, 0.0, 5.0), nll)
    assert torch.allclose(kd_losses(nll, kl, 0.5, 2.0), 0.5 * nll + 0.5 * 4.0 * kl)
    with pytest.raises(ValueError):
        kd_losses(nll, None, 0.5, 1.0)


def test_topk_kl_is_exact_with_full_vocabulary_and_zero_at_the_reference():
    gen = torch.Generator().manual_seed(1)
    ref_logits, student_logits = torch.randn(3, 11, generator=gen), torch.randn(3, 11, generator=gen)
    T = 2.0
    ref_logp = torch.log_softmax(ref_logits / T, -1)
    ids = torch.arange(11).expand(3, 11)
    exact = torch.nn.functional.kl_div(torch.log_softmax(student_logits / T, -1), ref_logp, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(topk_kl(student_logits, ids, ref_logp, T), exact, atol=1e-6)
    top_vals, top_ids = ref_logp.topk(4, dim=-1)
    assert torch.allclose(topk_kl(ref_logits, top_ids, top_vals, T), torch.zeros(3), atol=1e-6)


# ---- alignment with verl's engine output --------------------------------------------------------


def test_sequence_logps_shift_matches_verl_rolled_labels():
    # log_probs[t] scores token t+1; reply tokens are 3 and 4 of a 5-token sequence.
    lp = torch.tensor([-0.1, -0.2, -0.3, -0.4, -9.0])
    mask = torch.tensor([0, 0, 0, 1, 1])
    sums, counts = sequence_logps([lp], [mask])
    assert sums.item() == pytest.approx(-0.3 - 0.4)
    assert counts.item() == 2


# ---- Bradley–Terry reward model ---------------------------------------------------------------------


def test_bradley_terry_loss_is_the_mean_of_minus_log_sigmoid_of_the_margins():
    rewards = torch.tensor([2.0, 0.5, -1.0, 1.0, 0.0, 0.0], dtype=torch.float64)
    kinds = torch.tensor([C, R, C, R, PAD, PAD])
    loss, stats = bradley_terry_loss(rewards, kinds)
    expected = (-math.log(1 / (1 + math.exp(-1.5))) - math.log(1 / (1 + math.exp(2.0)))) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-12)
    assert stats["rm_acc"] == 0.5 and stats["rm_margin"] == pytest.approx(-0.25)
    assert stats["rm_chosen"] == pytest.approx(0.5) and stats["rm_rejected"] == pytest.approx(0.75)


def test_equal_rewards_give_ln2_and_the_gradient_pushes_chosen_up_rejected_down():
    rewards = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    loss, _ = bradley_terry_loss(rewards, torch.tensor([C, R, C, R]))
    assert float(loss.detach()) == pytest.approx(math.log(2))
    loss.backward()
    grad = rewards.grad.tolist()
    assert grad[0] < 0 < grad[1] and grad[2] < 0 < grad[3]
    # a shared offset (the token-classification head's bias) gets exactly no gradient
    assert sum(grad) == 0.0


def test_rows_out_of_pair_order_are_refused():
    with pytest.raises(ValueError, match="followed by its rejected"):
        bradley_terry_loss(torch.zeros(2, dtype=torch.float64), torch.tensor([C, C]))


def test_the_reward_of_a_sequence_is_the_value_at_its_last_token():
    values = [torch.tensor([9.0, 9.0, 1.0]), torch.tensor([5.0, -1.0]), torch.tensor([0.0, 0.0])]
    nested = torch.nested.as_nested_tensor(values, layout=torch.jagged)
    assert last_token_values(list(nested.unbind())).tolist() == [1.0, -1.0, 0.0]


def test_the_losses_do_not_import_verl():
    """verlkit.preference.losses is what the loss tests import: no verl engine stack behind it."""
    import subprocess
    import sys

    code = "import sys, verlkit.preference.losses; print(any(m == 'verl' or m.startswith('verl.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
