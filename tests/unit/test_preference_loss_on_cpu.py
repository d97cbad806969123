"""The preference objectives (DPO, LCDPO, SFT baselines) as pure torch functions, the preference
dataset/collator on the tiny local model's tokenizer, and the CLI's config builder."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from verlkit.preference.data import (
    KIND_CHOSEN,
    KIND_NEAR_SCOPE,
    KIND_OUT_OF_SCOPE,
    KIND_PADDING,
    KIND_REJECTED,
    PreferenceCollator,
    PreferenceDataError,
    PreferenceDataset,
)
from verlkit.preference.trainer import (
    PreferenceEngineLoss,
    PreferenceOptions,
    dpo_losses,
    kd_losses,
    preference_loss,
    sequence_logps,
    topk_kl,
)

LN2 = math.log(2.0)


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
    loss, means = preference_loss(logp, tokens, logp.clone(), kinds, PreferenceOptions(loss="dpo", beta=beta))
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
    loss, _ = preference_loss(policy, tokens, ref, kinds, PreferenceOptions(loss="dpo"))
    loss.backward()
    assert (policy.grad[kinds == KIND_CHOSEN] < 0).all()  # gradient descent increases chosen log-probs
    assert (policy.grad[kinds == KIND_REJECTED] > 0).all()
    assert (policy.grad[kinds >= KIND_OUT_OF_SCOPE] == 0).all()  # plain DPO ignores constraint rows


def test_chosen_must_be_followed_by_rejected():
    logp, tokens, _ = _batch()
    kinds = torch.tensor([KIND_CHOSEN, KIND_OUT_OF_SCOPE, KIND_REJECTED, KIND_CHOSEN, KIND_REJECTED, KIND_NEAR_SCOPE, KIND_PADDING])
    with pytest.raises(ValueError, match="immediately followed"):
        preference_loss(logp, tokens, logp, kinds, PreferenceOptions(loss="dpo"))


# ---- LCDPO and baselines ----------------------------------------------------------------------


def test_lcdpo_constraint_terms_are_baseline_nll_when_lambda_is_zero():
    logp, tokens, kinds = _batch()
    opts = PreferenceOptions(loss="lcdpo")  # reference config: beta .1, sigma_soft .2, sigma_hard .1, lambda 0
    loss, means = preference_loss(logp, tokens, logp.clone(), kinds, opts)
    soft_nll = -logp[4] / tokens[4]
    hard_nll = -logp[5] / tokens[5]
    assert means["soft_kd"] == pytest.approx(soft_nll.item())
    assert means["hard_kd"] == pytest.approx(hard_nll.item())
    assert loss.item() == pytest.approx(LN2 + 0.2 * soft_nll.item() + 0.1 * hard_nll.item())


def test_sft_baselines():
    logp, tokens, kinds = _batch()
    chosen_nll = ((-logp[0] / tokens[0]) + (-logp[2] / tokens[2])).item() / 2
    sft, _ = preference_loss(logp, tokens, torch.zeros_like(logp), kinds, PreferenceOptions(loss="sft"))
    assert sft.item() == pytest.approx(chosen_nll)
    neg, _ = preference_loss(
        logp, tokens, torch.zeros_like(logp), kinds, PreferenceOptions(loss="sft_neg", sigma_soft=0.5, sigma_hard=0.5)
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


def test_options_are_validated():
    with pytest.raises(ValueError, match="preference.loss"):
        PreferenceOptions(loss="ipo")
    with pytest.raises(ValueError, match="beta"):
        PreferenceOptions(beta=0)
    assert PreferenceOptions(loss="dpo").row_kinds() == ("pair",)
    assert set(PreferenceOptions(loss="lcdpo").row_kinds()) == {"pair", "near_scope", "out_of_scope"}


# ---- alignment with verl's engine output --------------------------------------------------------


def test_sequence_logps_shift_matches_verl_rolled_labels():
    # log_probs[t] scores token t+1; reply tokens are 3 and 4 of a 5-token sequence.
    lp = torch.tensor([-0.1, -0.2, -0.3, -0.4, -9.0])
    mask = torch.tensor([0, 0, 0, 1, 1])
    sums, counts = sequence_logps([lp], [mask])
    assert sums.item() == pytest.approx(-0.3 - 0.4)
    assert counts.item() == 2


def test_engine_loss_without_distribution_equals_pure_loss():
    torch.manual_seed(0)
    lens = [6, 7, 5, 6, 8, 4, 2]
    kinds = torch.tensor([KIND_CHOSEN, KIND_REJECTED, KIND_CHOSEN, KIND_REJECTED, KIND_OUT_OF_SCOPE, KIND_NEAR_SCOPE, KIND_PADDING])
    lps = [-torch.rand(n) for n in lens]
    masks = [torch.tensor([0, 0] + [1] * (n - 2)) for n in lens[:-1]] + [torch.zeros(2, dtype=torch.long)]
    nested = lambda ts: torch.nested.as_nested_tensor(ts, layout=torch.jagged)
    ref = -torch.rand(len(lens), dtype=torch.float64)
    opts = PreferenceOptions(loss="lcdpo")
    loss, metrics = PreferenceEngineLoss(opts)(
        model_output={"log_probs": nested(lps)},
        data={"loss_mask": nested(masks), "row_kind": kinds, "ref_logp": ref},
        dp_group=None,
    )
    seq, tok = sequence_logps(lps, masks)
    expected, _means = preference_loss(seq.double(), tok.double(), ref, kinds, opts)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["pref/objective"] == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["pref/n_dpo"] == 2 and metrics["pref/n_soft_nll"] == 1


# ---- dataset and collator -----------------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


def _rows():
    msg = lambda text: [{"role": "user", "content": text}]
    return [
        {"kind": "pair", "prompt": msg("What is 2 + 2?"), "chosen": "#### 4", "rejected": "#### 5", "response": None},
        {"kind": "out_of_scope", "prompt": msg("Name a color."), "chosen": None, "rejected": None, "response": "Blue."},
        {"kind": "near_scope", "prompt": msg("What is 3 + 3?"), "chosen": None, "rejected": None, "response": "#### 6"},
    ]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_dataset_masks_exactly_the_reply(tokenizer, tmp_path):
    ds = PreferenceDataset(str(_write(tmp_path / "p.parquet", _rows())), tokenizer, {"max_length": 128})
    assert len(ds) == 3
    item = ds[0]
    assert item["kinds"] == [KIND_CHOSEN, KIND_REJECTED]
    for seq, reply in zip(item["sequences"], ["#### 4", "#### 5"]):
        reply_ids = [t for t, m in zip(seq["input_ids"], seq["loss_mask"]) if m]
        assert tokenizer.decode(reply_ids) == reply + "<|im_end|>\n"
    only_pairs = PreferenceDataset(str(tmp_path / "p.parquet"), tokenizer, {"max_length": 128}, kinds=["pair"])
    assert len(only_pairs) == 1


def test_collator_keeps_pairs_adjacent_and_pads_rows(tokenizer, tmp_path):
    ds = PreferenceDataset(str(_write(tmp_path / "p.parquet", _rows())), tokenizer, {"max_length": 128})
    batch = PreferenceCollator(rows_per_batch=6, pad_token_id=tokenizer.pad_token_id)([ds[1], ds[0], ds[2]])
    assert batch["row_kind"].tolist() == [KIND_OUT_OF_SCOPE, KIND_CHOSEN, KIND_REJECTED, KIND_NEAR_SCOPE, KIND_PADDING, KIND_PADDING]
    assert batch["input_ids"].size(0) == 6
    assert int(batch["loss_mask"].unbind()[-1].sum()) == 0
    assert batch["example_index"].tolist() == [1, 0, 0, 2, -1, -1]
    with pytest.raises(ValueError, match="exceed"):
        PreferenceCollator(rows_per_batch=2, pad_token_id=0)([ds[0], ds[1]])


def test_bad_rows_name_file_row_and_field(tokenizer, tmp_path):
    rows = _rows()
    rows[2]["response"] = ""
    path = _write(tmp_path / "bad.parquet", rows)
    with pytest.raises(PreferenceDataError, match=r"bad\.parquet: row 2: field 'response'"):
        PreferenceDataset(str(path), tokenizer, {"max_length": 128})
    rows = _rows()
    rows[0]["kind"] = "pairs"
    with pytest.raises(PreferenceDataError, match=r"row 0: field 'kind'"):
        PreferenceDataset(str(_write(tmp_path / "k.parquet", rows)), tokenizer, {"max_length": 128})
    with pytest.raises(PreferenceDataError, match=r"row 0: field 'chosen'.*max_length"):
        PreferenceDataset(str(_write(tmp_path / "long.parquet", _rows())), tokenizer, {"max_length": 12})


# ---- CLI config -----------------------------------------------------------------------------------


def test_build_config_splits_preference_overrides():
    from verlkit.preference.trainer import build_config

    cfg = build_config(["preference.loss=lcdpo", "preference.sigma_hard=0.3", "data.train_batch_size=8", "model.path=/x"])
    assert cfg.preference.loss == "lcdpo" and cfg.preference.sigma_hard == 0.3 and cfg.preference.beta == 0.1
    assert cfg.data.train_batch_size == 8 and cfg.model.path == "/x"
    with pytest.raises(ValueError, match="known keys"):
        build_config(["preference.betta=0.2"])


# ---- the KL term (kd_lambda > 0) through the engine hooks ------------------------------------------


def test_kl_term_through_logits_processor_and_loss(tokenizer, tmp_path):
    """The collator's reference top-k, the logits-processor call and the loss call fit together."""
    from verlkit.preference.trainer import ReferenceTopK

    ds = PreferenceDataset(str(_write(tmp_path / "p.parquet", _rows())), tokenizer, {"max_length": 128})
    k, vocab, T = 4, len(tokenizer), 2.0
    opts = PreferenceOptions(loss="lcdpo", kd_lambda=0.5, kd_temperature=T, kd_topk=k)
    torch.manual_seed(0)
    ref_logits = {i: torch.randn(len(ds.items[i]["sequences"][0]["input_ids"]), vocab) for i in (1, 2)}
    capture = ReferenceTopK(k, T)
    ds.ref_topk = {}
    for i, logits in ref_logits.items():
        out = capture(student_logits=logits.unsqueeze(0))
        ids = torch.stack([out[f"ref_topk_id_{j}"][0] for j in range(k)], -1).long()
        lps = torch.stack([out[f"ref_topk_lp_{j}"][0] for j in range(k)], -1)
        ds.ref_topk[i] = (ids, lps)
    batch = PreferenceCollator(rows_per_batch=6, pad_token_id=0, topk=k)([ds[0], ds[1], ds[2]])
    assert {f"ref_topk_id_{j}" for j in range(k)} <= set(batch)

    loss_fn = PreferenceEngineLoss(opts)
    # Student = reference on the constraint rows, random elsewhere: the KL is 0 exactly where it counts.
    lengths = [len(t) for t in batch["input_ids"].unbind()]
    student = [torch.randn(n, vocab) for n in lengths]
    student[2], student[3] = ref_logits[1], ref_logits[2]
    kd = loss_fn(student_logits=torch.cat(student).unsqueeze(0), data=batch)["kd_kl"][0]
    per_row = list(torch.split(kd, lengths))
    assert torch.allclose(per_row[2], torch.zeros_like(per_row[2]), atol=1e-6)
    assert torch.allclose(per_row[3], torch.zeros_like(per_row[3]), atol=1e-6)

    # A student that moved away from the reference: L_KD = (1-λ)·NLL + λ·T²·ΣKL.
    student[2] = student[2] + 3 * torch.randn_like(student[2])
    kd = loss_fn(student_logits=torch.cat(student).unsqueeze(0), data=batch)["kd_kl"][0]
    nested = lambda ts: torch.nested.as_nested_tensor(ts, layout=torch.jagged)
    masks = list(batch["loss_mask"].unbind())
    log_probs = []
    for logits, ids in zip(student, batch["input_ids"].unbind()):
        lp = torch.log_softmax(logits, -1)[:-1].gather(-1, ids[1:, None])[:, 0]
        log_probs.append(torch.cat([lp, torch.zeros(1)]))
    loss, metrics = loss_fn(
        model_output={"log_probs": nested(log_probs), "kd_kl": nested(list(torch.split(kd, lengths)))},
        data={"loss_mask": batch["loss_mask"], "row_kind": batch["row_kind"], "ref_logp": batch["ref_logp"]},
    )
    seq, tok = sequence_logps(log_probs, masks)
    per_row = list(torch.split(kd, lengths))
    kl_sum = per_row[2][:-1] @ masks[2][1:].float()
    assert per_row[3].abs().max() < 1e-5
    soft_nll = float(-seq[2] / tok[2])
    assert metrics["pref/soft_kd"] == pytest.approx(0.5 * soft_nll + 0.5 * T**2 * float(kl_sum), rel=1e-5)
    assert float(kl_sum) > 0
    assert torch.isfinite(loss)
