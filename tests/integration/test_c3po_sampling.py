"""C3PO's sampling stage against a real served model: the session's CPU vLLM server (the tiny local
model) plays teacher and completion model, with replies constrained to the expected formats
(vLLM structured outputs), so even a random model yields parseable lists.

The whole chain runs through the CLI on small counts: categories, in-scope and near-scope prompts,
out-of-scope prompts from the bundled file, four completions per prompt, seeded splits, the output
files. Then: prompts never bleed between feedbacks; an interrupted run resumes from its request log
and replays what it had; the training parquet built from the output loads in the preference
trainer's dataset (written and validated by ``data_prep.c3po``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SETS = ("in_scope", "near_scope", "out_of_scope")
COMPLETIONS = ("baseline_response", "revised_response", "in_context_response")


def sample_cmd(server, out: Path, prefix: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "verlkit.c3po.sample", "--out", str(out), "--feedback-prefix", prefix,
        "--teacher-url", server.base_url, "--teacher-model", server.model_name, "--teacher-constrained", "on",
        "--completion-url", server.base_url, "--completion-model", server.model_name, "--completion-constrained", "on",
        "--num-in-scope", "6", "--num-near-scope", "6", "--num-out-of-scope", "6", "--prompts-per-category", "3",
        "--test-fraction", "0.34", "--teacher-max-tokens", "256", "--completion-max-tokens", "24",
        "--max-category-chars", "30", "--max-prompt-chars", "80", "--max-response-chars", "60", "--no-progress",
        *extra,
    ]  # fmt: skip


def run_sample(server, out: Path, prefix: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(sample_cmd(server, out, prefix), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def read_sets(fdir: Path) -> dict:
    return {name: json.loads((fdir / f"{name}.json").read_text()) for name in SETS}


@pytest.fixture(scope="module")
def sampled(vllm_server, tmp_path_factory):
    out = tmp_path_factory.mktemp("c3po_sample")
    for prefix in ("concise-boss-emails", "bon-appetit-recipes"):
        done = run_sample(vllm_server, out, prefix)
        assert done.returncode == 0, done.stdout + done.stderr
    return out


def test_the_whole_chain_writes_readable_sets(sampled):
    fdir = sampled / "concise-boss-emails"
    feedback = json.loads((fdir / "feedback.json").read_text())
    assert feedback["name"] == "concise-boss-emails" and feedback["type"] == "qualitative"
    categories = json.loads((fdir / "categories.json").read_text())
    assert len(categories) == 2  # ceil(6 / 3)
    sets = read_sets(fdir)
    for name, parts in sets.items():
        rows = parts["train"] + parts["test"]
        assert rows, f"{name} is empty"
        assert len(rows) <= 6 and parts["train"]
        for row in rows:
            assert all(isinstance(row[k], str) and row[k] for k in COMPLETIONS)
            assert (row["category"] is None) == (name == "out_of_scope")
    report = json.loads((fdir / "report.json").read_text())
    assert report["ok"] and report["request_failures"] == 0
    assert report["counts"] == {n: {k: len(v) for k, v in parts.items()} for n, parts in sets.items()}
    manifest = json.loads((sampled / "manifest.json").read_text())
    assert manifest["teacher"]["constrained"] is True


def test_prompts_never_bleed_between_feedbacks(sampled):
    own = {}
    for slug in ("concise-boss-emails", "bon-appetit-recipes"):
        fdir = sampled / slug
        categories = set(json.loads((fdir / "categories.json").read_text()))
        sets = read_sets(fdir)
        prompts = set()
        for name in ("in_scope", "near_scope"):
            for row in sets[name]["train"] + sets[name]["test"]:
                assert row["category"] in categories  # only this feedback's own categories
                prompts.add(row["prompt"])
        own[slug] = prompts
    assert not own["concise-boss-emails"] & own["bon-appetit-recipes"]


def test_splits_are_reproducible_and_a_rerun_replays_the_log(sampled, vllm_server):
    fdir = sampled / "concise-boss-emails"
    before = read_sets(fdir)
    logged = len((fdir / "requests.jsonl").read_text().splitlines())
    done = run_sample(vllm_server, sampled, "concise-boss-emails")
    assert done.returncode == 0, done.stderr
    assert read_sets(fdir) == before
    report = json.loads((fdir / "report.json").read_text())
    assert report["requests"] == 0 and report["replayed"] >= logged


def test_an_interrupted_run_resumes_where_it_stopped(vllm_server, tmp_path):
    """SIGTERM the CLI once its first replies are logged; the rerun keeps them and completes."""
    log = tmp_path / "warm-pet-answers" / "requests.jsonl"
    proc = subprocess.Popen(sample_cmd(vllm_server, tmp_path, "warm-pet-answers"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None or log.exists(), "the sampler exited before logging anything"
        assert time.monotonic() < deadline, "no reply was logged within 300 s"
        time.sleep(0.2)  # polling a file another process appends to; bounded by the deadline
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)
    first = [json.loads(line) for line in log.read_text().splitlines() if line.strip().endswith("}")]
    assert not (tmp_path / "warm-pet-answers" / "report.json").exists() or proc.returncode == 0

    done = run_sample(vllm_server, tmp_path, "warm-pet-answers")
    assert done.returncode == 0, done.stderr
    final = {}
    for line in log.read_text().splitlines():
        item = json.loads(line)
        final.setdefault(item["key"], item["text"])
    for item in first:  # every reply logged before the interruption is kept unchanged
        assert final[item["key"]] == item["text"]
    report = json.loads((tmp_path / "warm-pet-answers" / "report.json").read_text())
    assert report["ok"] and report["replayed"] >= len(first)


def test_the_training_parquet_loads_in_the_preference_dataset(sampled, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from data_prep.c3po import build_training_file
    from verlkit.preference.data import PreferenceDataset

    out = build_training_file(sampled / "concise-boss-emails", tmp_path / "train.parquet")
    kinds = pq.read_table(out, columns=["kind"]).column("kind").to_pylist()
    assert kinds.count("pair") >= 1
    ds = PreferenceDataset(str(out), AutoTokenizer.from_pretrained(tiny_model_dir),
                           {"max_length": 512, "truncation": "right"})  # fmt: skip
    assert len(ds) == len(kinds)


def test_prompting_baselines_are_judged_in_both_orders_by_a_real_judge(sampled, vllm_server, tmp_path):
    """``--method in_context``: the stored in-context completions against the stored baselines,
    judged by the served model (constrained to the BETTER_RESPONSE format) in both orders."""
    done = subprocess.run([
        sys.executable, "-m", "verlkit.c3po.evaluate", "--sample-dir", str(sampled / "concise-boss-emails"),
        "--out", str(tmp_path), "--method", "in_context", "--judge-url", vllm_server.base_url,
        "--judge-model", vllm_server.model_name, "--judge-constrained", "on", "--limit", "3",
    ], cwd=REPO, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "in_context.json").read_text())
    assert result["baseline"] == "stored" and result["type"] == "qualitative"
    assert result["judge_requests"]["request_failures"] == 0 and result["judge_requests"]["requests"] >= 6
    for name in SETS:
        for rec in result["sets"][name]["records"]:
            assert rec["evaluated"] and rec["baseline"]
            assert 1 <= rec["score_forward"] <= 5 and 1 <= rec["score_swapped"] <= 5
            assert rec["score"] == (rec["score_forward"] + 6 - rec["score_swapped"]) / 2
    assert (tmp_path / "in_context.png").is_file()
