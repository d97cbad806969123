"""Model-scored rewards against a port nothing listens on: a real transport failure, no fake server
needed (the unit tier has IP sockets disabled). The row is flagged and counted, never a silent 0."""

from __future__ import annotations

import asyncio
import math

import pytest

from verl.utils.reward_score import calibration as cgp
from verl.utils.reward_score import registry

OPTIONS = ["Liver", "Pancreas", "Spleen", "Kidney"]
EXTRA = {"question": "Which organ produces insulin?", "options": OPTIONS}


@pytest.fixture
def shared_session_closed():
    from verlkit.clients.llm import close_session

    yield
    close_session()


def test_cgp_downstream_unreachable_is_flagged_not_sentinel(shared_session_closed):
    """Port 9 on loopback refuses connections: a real transport failure, no fake server needed."""
    opts = {"url": "http://127.0.0.1:9/v1", "model": "m", "max_retries": 1, "backoff_s": 0.0, "timeout_s": 5}
    result = asyncio.run(registry.compute_score_async("medmcqa_cgp", "a hint", "2", EXTRA, cgp=opts))
    assert result["downstream_ok"] == 0.0 and result["downstream_failed"] == 1.0  # counted per step
    assert result["reward_error"] == 0.0
    assert result["score"] == pytest.approx(cgp.neutral_score("log_penalized", 4))
    assert result["score"] != cgp.UNPARSEABLE_LOG_SCORE
    assert math.isnan(result["parse_ok"]) and math.isnan(result["confidence"])
    # on_failure=raise: the registry turns it into a counted reward_error
    raised = asyncio.run(registry.compute_score_async("x_cgp", "a hint", "2", EXTRA,
                                                      cgp={**opts, "on_failure": "raise"}))
    assert raised["reward_error"] == 1.0


def test_an_unreachable_reward_model_is_flagged_never_silent(tiny_model_dir):
    """Nothing listens on port 1: after the client's bounded retries the row is flagged and counted."""
    out = registry.compute_score(
        "ultrafeedback", "Hello!", "", {"prompt_messages": [{"role": "user", "content": "Hi"}]},
        scalar_rm={"url": "http://127.0.0.1:1/v1", "tokenizer": str(tiny_model_dir), "max_retries": 1, "timeout_s": 2},
    )  # fmt: skip
    assert out["rm_ok"] == 0.0 and out["rm_failed"] == 1.0 and math.isnan(out["rm_score"])
    assert out["reward_error"] == 0.0 and out["score"] == 0.0
