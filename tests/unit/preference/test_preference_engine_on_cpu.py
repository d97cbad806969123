"""The engine adapter: the loss verl's TrainingWorker calls (with and without its logits-processor
hook), checked against the pure losses on hand-built engine outputs."""

from __future__ import annotations

import math

import pytest
import torch

from verlkit.preference.config import PreferenceConfig
from verlkit.preference.data import (
    KIND_CHOSEN,
    KIND_NEAR_SCOPE,
    KIND_OUT_OF_SCOPE,
    KIND_PADDING,
    KIND_REJECTED,
    PreferenceCollator,
    PreferenceDataset,
)
from verlkit.preference.engine import PreferenceEngineLoss, ReferenceTopK
from verlkit.preference.losses import preference_loss, sequence_logps

from support.preference_data import preference_rows, write_parquet


def nested(tensors):
    return torch.nested.as_nested_tensor(tensors, layout=torch.jagged)


def test_engine_loss_without_distribution_equals_pure_loss():
    torch.manual_seed(0)
    lens = [6, 7, 5, 6, 8, 4, 2]
    kinds = torch.tensor([KIND_CHOSEN, KIND_REJECTED, KIND_CHOSEN, KIND_REJECTED, KIND_OUT_OF_SCOPE, KIND_NEAR_SCOPE, KIND_PADDING])
    lps = [-torch.rand(n) for n in lens]
    masks = [torch.tensor([0, 0] + [1] * (n - 2)) for n in lens[:-1]] + [torch.zeros(2, dtype=torch.long)]
    ref = -torch.rand(len(lens), dtype=torch.float64)
    opts = PreferenceConfig(loss="lcdpo")
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


def test_engine_loss_reads_the_value_head_at_each_sequences_last_token():
    """The engine hands per-token values as a jagged tensor; the reward is the last token's value."""
    values = nested([torch.tensor([9.0, 9.0, 1.0]), torch.tensor([5.0, -1.0]), torch.tensor([0.0, 0.0])])
    data = {"row_kind": torch.tensor([KIND_CHOSEN, KIND_REJECTED, KIND_PADDING])}
    loss, metrics = PreferenceEngineLoss(PreferenceConfig(loss="bt"))(model_output={"values": values}, data=data)
    assert float(loss) == pytest.approx(-math.log(1 / (1 + math.exp(-2.0))), rel=1e-6)
    assert metrics["pref/rm_acc"] == 1.0 and metrics["pref/n_bt"] == 1.0
    assert metrics["pref/objective"] == pytest.approx(float(loss), rel=1e-6)


def test_kl_term_through_logits_processor_and_loss(tokenizer, tmp_path):
    """The collator's reference top-k, the logits-processor call and the loss call fit together."""
    ds = PreferenceDataset(str(write_parquet(tmp_path / "p.parquet", preference_rows())), tokenizer, {"max_length": 128})
    k, vocab, T = 4, len(tokenizer), 2.0
    opts = PreferenceConfig(loss="lcdpo", kd_lambda=0.5, kd_temperature=T, kd_topk=k)
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


def test_reference_topk_refuses_more_tokens_than_the_vocabulary():
    with pytest.raises(ValueError, match="kd_topk=12 exceeds the vocabulary size 11"):
        ReferenceTopK(12, 1.0)(student_logits=torch.zeros(1, 3, 11))
