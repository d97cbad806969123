"""The win-rate evaluation's hosted-judge path against a real server (the session's CPU vLLM server).

The tiny model plays policy, reference and "judge": as a judge it never answers ``reward:<float>``,
which is exactly the failure a real hosted judge can have. Every prompt must then be counted as a
scoring failure — none may be scored 0 and enter the win rate — and the command must exit non-zero.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_unparseable_judge_replies_are_counted_never_scored_zero(vllm_server, tmp_path):
    prompts = tmp_path / "prompts.parquet"
    pd.DataFrame([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "prompt_id": f"p{i}"}
                  for i in range(4)]).to_parquet(prompts)  # fmt: skip
    url, name = vllm_server.base_url, vllm_server.model_name
    done = subprocess.run([
        sys.executable, "-m", "verlkit.evaluation.winrate", "--prompts", str(prompts), "--out", str(tmp_path / "eval"),
        "--model-url", url, "--model-name", name, "--reference-url", url, "--reference-name", name,
        "--judge-url", url, "--judge-model", name, "--judge-rate-limit-rps", "50",
        "--max-tokens", "8", "--temperature", "0",
    ], cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((tmp_path / "eval" / "winrate.json").read_text())
    assert summary["n_prompts"] == 4 and summary["n_compared"] == 0 and summary["scoring_failures"] == 4
    assert summary["generation_failures"] == {"model": 0, "reference": 0}
    assert summary["settings"]["reward_model"]["hosted_judge"] == url
    records = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert all(r["model_text"] is not None and r["model_reward"] is None for r in records)


def test_scoring_needs_exactly_one_scorer(tmp_path):
    done = subprocess.run([sys.executable, "-m", "verlkit.evaluation.winrate", "--prompts", "x.parquet", "--out",
                           str(tmp_path), "--model-url", "http://127.0.0.1:1/v1", "--reference-url",
                           "http://127.0.0.1:1/v1"], cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "exactly one of --rm-url" in done.stderr
