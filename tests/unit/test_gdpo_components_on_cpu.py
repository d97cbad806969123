"""Per-component advantages: verl 0.9.1's ``gdpo`` estimator, called directly on hand-built tensors,
against GRPO on the summed score; and our wrap of it for the v1 trainer (components handed over from
the reward results, positions from the response mask, missing components filled by group).

Expected values are computed by hand below each test (unbiased group std, as verl's group_mean_std;
batch whitening with Bessel's correction, as verl's masked_whiten).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from verl.trainer.ppo import core_algos
from verlkit.plugin import gdpo_components

# One group of four samples, two components (e.g. RLCR's format and accuracy terms):
#   format   = [1, 0, 1, 0]      accuracy = [0, 1, 1, 1]      sum = [1, 1, 2, 1]
FORMAT = [1.0, 0.0, 1.0, 0.0]
ACCURACY = [0.0, 1.0, 1.0, 1.0]
UIDS = np.array(["q"] * 4, dtype=object)
# GRPO on the sum: mean 1.25, std sqrt(0.75/3) = 0.5 -> (s - 1.25) / 0.5
GRPO_EXPECTED = [-0.5, -0.5, 1.5, -0.5]
# GDPO: format z = ±0.5/sqrt(1/3) = ±0.866025; accuracy mean 0.75, std sqrt(0.75/3) = 0.5 -> z = [-1.5, .5, .5, .5]
# sum = [-0.633975, -0.366025, 1.366025, -0.366025] (mean 0); unbiased var = 2.535898/3 = 0.845299,
# std 0.919402 -> whitened:
GDPO_EXPECTED = [-0.689551, -0.398113, 1.485777, -0.398113]


def _config(**extra):
    return OmegaConf.create({"gdpo_reward_keys": ["format_term", "accuracy_term"], **extra})


def _legacy_inputs():
    """What verl's legacy trainer hands the estimator: components in non_tensor_batch, prompts and
    attention mask in batch (one prompt token, one response token per row)."""
    response_mask = torch.ones(4, 1)
    scores = torch.tensor([[a + b] for a, b in zip(FORMAT, ACCURACY)])
    non_tensor = {"uid": UIDS, "format_term": np.array(FORMAT), "accuracy_term": np.array(ACCURACY)}
    batch = {"prompts": torch.ones(4, 1, dtype=torch.long), "attention_mask": torch.ones(4, 2, dtype=torch.long)}
    return scores, response_mask, non_tensor, batch


def test_equal_sums_with_different_components_get_different_advantages_under_gdpo():
    scores, mask, non_tensor, batch = _legacy_inputs()
    grpo, _ = core_algos.compute_grpo_outcome_advantage(scores, mask, UIDS)
    gdpo, _ = core_algos.compute_gdpo_outcome_advantage(scores, mask, UIDS, config=_config(),
                                                        non_tensor_batch=non_tensor, batch=batch)
    assert grpo[:, 0].tolist() == pytest.approx(GRPO_EXPECTED, abs=1e-5)
    assert gdpo[:, 0].tolist() == pytest.approx(GDPO_EXPECTED, abs=1e-5)
    # samples 0 and 1: same sum (1), different components -> same GRPO advantage, different GDPO ones
    assert grpo[0, 0] == pytest.approx(grpo[1, 0])
    assert gdpo[0, 0] < gdpo[1, 0] - 0.25
    # samples 1 and 3: same components -> same advantage under both
    assert gdpo[1, 0] == pytest.approx(gdpo[3, 0])


def test_weights_scale_each_component():
    # weights [1, 0]: only the format term counts -> z = ±0.866025, whitened: ±0.866025 / std(±0.866025)
    # unbiased var = 4·0.75/3 = 1.0 -> the advantages stay ±0.866025
    scores, mask, non_tensor, batch = _legacy_inputs()
    gdpo, _ = core_algos.compute_gdpo_outcome_advantage(scores, mask, UIDS, config=_config(gdpo_reward_weights=[1.0, 0.0]),
                                                        non_tensor_batch=non_tensor, batch=batch)
    assert gdpo[:, 0].tolist() == pytest.approx([0.866025, -0.866025, 0.866025, -0.866025], abs=1e-5)


@pytest.fixture()
def wrapped_gdpo():
    """verl's registry with our wrap applied, restored afterwards."""
    original = core_algos.ADV_ESTIMATOR_REGISTRY["gdpo"]
    if getattr(original, "_verlkit", False):  # the plugin already wrapped it in this process
        yield original
        return
    gdpo_components._wrap_estimator(core_algos)
    yield core_algos.ADV_ESTIMATOR_REGISTRY["gdpo"]
    core_algos.ADV_ESTIMATOR_REGISTRY["gdpo"] = original


def test_v1_inputs_reach_the_same_advantages_through_the_wrap(wrapped_gdpo):
    """The v1 trainer hands only uids and response tensors (2 response tokens, right-padded); the
    components come from the reward results via the trainer's wrap."""
    response_mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    scores = torch.zeros(4, 2)
    components = gdpo_components.components_from_infos(
        [{"format_term": f, "accuracy_term": a} for f, a in zip(FORMAT, ACCURACY)], ["format_term", "accuracy_term"])
    token = gdpo_components._pending.set({"components": components, "filled": 0})
    try:
        adv, _ = wrapped_gdpo(token_level_rewards=scores, response_mask=response_mask, index=UIDS, config=_config(),
                              non_tensor_batch={"uid": UIDS}, batch={"response_mask": response_mask})
    finally:
        gdpo_components._pending.reset(token)
    # every response token carries the row's advantage; whitening runs over the 6 valid tokens now:
    # values per token [a0, a0, a1, a2, a2, a3] with a = the GDPO sums above -> mean = (2·-0.633975
    # - 0.366025 + 2·1.366025 - 0.366025)/6 = 0.122008; centred squares sum 4.714530, unbiased var /5
    # = 0.942906, std 0.971033
    expected = [(-0.633975 - 0.122008) / 0.971033, (-0.366025 - 0.122008) / 0.971033,
                (1.366025 - 0.122008) / 0.971033, (-0.366025 - 0.122008) / 0.971033]
    assert adv[:, 0].tolist() == pytest.approx(expected, abs=1e-5)
    assert adv[1, 1] == 0.0 and adv[3, 1] == 0.0  # padding stays 0


def test_a_key_no_reward_returns_is_a_clear_error(wrapped_gdpo):
    mask = torch.ones(4, 1)
    with pytest.raises(ValueError, match="gdpo_reward_keys names \\['format_term', 'accuracy_term'\\]"):
        wrapped_gdpo(token_level_rewards=torch.zeros(4, 1), response_mask=mask, index=UIDS, config=_config(),
                     non_tensor_batch={"uid": UIDS}, batch={"response_mask": mask})


def test_missing_components_count_as_their_groups_mean():
    values, filled = gdpo_components.fill_missing_by_group(
        [1.0, math.nan, 0.0, 0.5, math.nan, math.nan], ["a", "a", "a", "b", "c", "c"])
    # group a: mean of 1 and 0 = 0.5; group b complete; group c has no value at all -> 0
    assert values.tolist() == [1.0, 0.5, 0.0, 0.5, 0.0, 0.0] and filled == 3


def test_a_failed_row_gets_no_advantage_from_the_missing_components(wrapped_gdpo):
    # row 3's reward failed (its components are NaN) and count as the group's mean of the others:
    # format [1, 0, 1, 2/3]: mean 2/3, unbiased std sqrt((1/9 + 4/9 + 1/9)/3) = 0.471405,
    #   z = [0.707107, -1.414214, 0.707107, 0]
    # accuracy [0, 1, 1, 2/3]: z = [-1.414214, 0.707107, 0.707107, 0]
    # sum [-0.707107, -0.707107, 1.414214, 0]: mean 0, unbiased var (0.5 + 0.5 + 2)/3 = 1 -> unchanged
    scores, mask, non_tensor, batch = _legacy_inputs()
    non_tensor = {**non_tensor, "format_term": np.array([1.0, 0.0, 1.0, math.nan]),
                  "accuracy_term": np.array([0.0, 1.0, 1.0, math.nan])}
    adv, _ = wrapped_gdpo(token_level_rewards=scores, response_mask=mask, index=UIDS, config=_config(),
                          non_tensor_batch=non_tensor, batch=batch)
    assert adv[:, 0].tolist() == pytest.approx([-0.707107, -0.707107, 1.414214, 0.0], abs=1e-5)


def test_the_advantage_dump_records_the_components():
    from verl import DataProto

    from verlkit.plugin.advantage_dump import records

    data = DataProto.from_dict(
        tensors={"response_mask": torch.tensor([[1, 0], [1, 1]]), "token_level_rewards": torch.tensor([[2.0, 0.0], [0.0, 1.0]]),
                 "advantages": torch.tensor([[0.7, 0.0], [-0.7, -0.7]])},
        non_tensors={"uid": np.array(["u", "u"], dtype=object)},
    )  # fmt: skip
    out = records(data, step=1, components={"format_term": np.array([1.0, 0.0]), "brier_term": np.array([0.5, 0.25])})
    assert out[0]["components"] == {"format_term": 1.0, "brier_term": 0.5}
    assert out[1]["components"] == {"format_term": 0.0, "brier_term": 0.25} and out[1]["score"] == 1.0
