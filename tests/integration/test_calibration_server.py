"""Calibration reward and evaluation CLI against the real session vLLM server (tiny random model).

The tiny model writes garbage, so these tests assert structure and flags (the request went through,
nothing parsed, the unparseable sentinel was applied), never text or accuracy.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from data_prep import medmcqa
from verl.utils.reward_score import calibration, registry

pytestmark = pytest.mark.integration


def _v1(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


@pytest.fixture(scope="module")
def dev_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("medmcqa")
    medmcqa.build(medmcqa.DEFAULT_INPUT, out, ("cgp",), train_size=4, dev_size=4, seed=42)
    return out / "cgp" / "dev.parquet"


@pytest.fixture
def closed_session():
    from verlkit.clients.llm import close_session

    yield
    close_session()


def test_cgp_reward_through_registry(vllm_server, dev_rows, closed_session):
    import pyarrow.parquet as pq

    rows = pq.read_table(dev_rows).to_pylist()
    options = {"cgp": {"url": _v1(vllm_server.base_url), "model": vllm_server.model_name,
                       "max_tokens": 24, "variant": "log_penalized", "timeout_s": 120}}

    async def score_all():
        return await asyncio.gather(*(
            registry.compute_score_async(row["data_source"], "Recall which organ does what.",
                                         row["reward_model"]["ground_truth"], row["extra_info"], **options)
            for row in rows
        ))

    results = asyncio.run(score_all())
    assert len(results) == 4
    for result in results:
        assert set(result) == set(registry.result_keys())
        assert result["reward_error"] == 0.0
        assert result["downstream_ok"] == 1.0
        assert result["parse_ok"] == 0.0
        assert result["score"] == calibration.UNPARSEABLE_LOG_SCORE
        assert result["acc"] == 0.0 and math.isnan(result["confidence"])
        assert result["latency_s"] > 0 and result["cache_hit"] == 0.0  # temperature 0.1, no seed: not cached


def test_eval_calibration_end_to_end(vllm_server, dev_rows, tmp_path, closed_session):
    from verlkit.evaluation import calibration as eval_calibration

    url, model = _v1(vllm_server.base_url), vllm_server.model_name
    out = tmp_path / "eval"
    rc = eval_calibration.main([
        "--design", "cgp", "--data", str(dev_rows), "--out", str(out), "--limit", "4",
        "--policy-url", url, "--policy-model", model, "--downstream-url", url, "--downstream-model", model,
        "--policy-max-tokens", "24", "--downstream-max-tokens", "24", "--timeout-s", "120",
    ])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["design"] == "cgp"
    for condition in ("with_hint", "baseline"):
        report = metrics["conditions"][condition]
        assert report["n"] == 4 and report["request_failures"] == 0
        assert report["parse_failure_rate"] == 1.0  # garbage text never has the final sentence
        assert report["all"]["accuracy"] == 0.0 and report["all"]["bins"][0]["count"] == 4
        assert report["mean_reward"]["log_penalized"] == pytest.approx(calibration.UNPARSEABLE_LOG_SCORE)
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 8
    assert all(p["hint"] for p in predictions if p["condition"] == "with_hint")
    for name in ("reliability.png", "reliability_baseline.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
