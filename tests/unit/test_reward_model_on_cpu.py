"""The ``scalar_rm`` reward's pure parts, the pairwise report of the reward-model evaluation and the
advantage dump's records (the Bradley–Terry objective itself: tests/unit/preference/)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from verlkit.evaluation.reward_model import pairwise_report
from verl.utils.reward_score import registry, scalar_rm
from verl.utils.reward_score.options import parse_options


# ---- scalar_rm --------------------------------------------------------------------------------------


def test_scalar_rm_routes_ultrafeedback_rows_and_declares_its_metrics():
    spec = registry.resolve("ultrafeedback")
    assert spec is not None and spec.name == "scalar_rm" and registry.resolve("my_chat_rm").name == "scalar_rm"
    assert {"rm_ok", "rm_failed", "rm_score"} <= set(registry.result_keys())


def test_scalar_rm_conversation_and_row_checks():
    extra = {"prompt_messages": np.array([{"role": "user", "content": "Hi"}], dtype=object)}
    assert scalar_rm.conversation(extra, "Hello!") == [
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}
    ]
    assert scalar_rm.validate_row({"extra_info": extra}) == []
    assert "prompt_messages" in scalar_rm.validate_row({"extra_info": {}})[0]
    assert "prompt_messages[0]" in scalar_rm.validate_row({"extra_info": {"prompt_messages": ["hi"]}})[0]


def test_scalar_rm_conversation_ids_are_the_chat_template_of_the_whole_conversation(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"}]
    ids = scalar_rm.conversation_ids(tok, messages)
    assert tok.decode(ids) == "<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"


def test_scalar_rm_options_are_checked_before_any_request():
    def parse(**options):
        return parse_options(scalar_rm.ScalarRMOptions, options)

    with pytest.raises(registry.RewardOptionsError, match="scalar_rm: option 'tokenizer' is required"):
        parse(url="http://127.0.0.1:1/v1")
    with pytest.raises(registry.RewardOptionsError, match="scalar_rm: unknown option 'temperature'"):
        parse(url="http://x/v1", tokenizer="/t", temperature=0.1)
    with pytest.raises(registry.RewardOptionsError, match="scalar_rm: option 'on_failure'='skip'"):
        parse(url="http://x/v1", tokenizer="/t", on_failure="skip")
    opts = parse(url="http://x/v1", tokenizer="/t", on_failure="raise")
    assert (opts.model, opts.on_failure, opts.max_concurrency) == ("reward_model", "raise", 64)


# ---- evaluation and diagnostics ----------------------------------------------------------------------


def test_pairwise_report_excludes_failures_and_counts_ties_as_not_correct():
    rep = pairwise_report([1.0, 2.0, None, 0.5], [0.0, 2.0, 1.0, 1.5], ["a", "b", "c", "d"])
    assert rep["n_pairs"] == 4 and rep["n_scored"] == 3 and rep["scoring_failures"] == 1
    assert rep["accuracy"] == pytest.approx(1 / 3) and rep["ties"] == 1
    assert rep["mean_margin"] == pytest.approx(0.0)
    assert pairwise_report([None], [1.0], ["x"])["accuracy"] is None


def test_advantage_dump_records_one_line_per_sample():
    from verl import DataProto

    from verlkit.plugin.advantage_dump import records

    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    data = DataProto.from_dict(
        tensors={"response_mask": mask, "token_level_rewards": torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]]),
                 "advantages": torch.tensor([[0.5, 0.5, 0.0], [-0.5, 0.0, 0.0]])},
        non_tensors={"uid": np.array(["u", "u"], dtype=object)},
    )  # fmt: skip
    assert records(data, step=3) == [
        {"step": 3, "uid": "u", "score": 2.0, "advantage": 0.5, "response_tokens": 2},
        {"step": 3, "uid": "u", "score": 1.0, "advantage": -0.5, "response_tokens": 1},
    ]


def test_hosted_judge_replies_are_parsed_and_failures_stay_failures():
    from verlkit.evaluation.reward_model import parse_reward_reply

    assert parse_reward_reply("reward:-25.625") == -25.625
    assert parse_reward_reply("Reward = 3.5e-1 (first) ... reward: 7") == 7.0
    for bad in (None, "", "no number here", "reward: nan", "reward:"):
        assert parse_reward_reply(bad) is None
