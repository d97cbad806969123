"""Templates, verdict presets, constraints, probability-weighted verdicts and the robustness probe
against the REAL session vLLM server (tests/conftest.py: the tiny random Qwen2, CPU vLLM 0.31).

The tiny model writes garbage, so unconstrained it never produces a verdict; under a constraint the
server can only return replies our parsers accept, which these tests rely on. Where a test needs to
know exactly what the reward sent, it asks the same client the same request again and requires a
cache hit (the client caches deterministic requests by their full payload).
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest

from verl.utils.reward_score import registry
from verl.utils.reward_score.options import parse_options
from verl.utils.reward_score.templated import ServerFeatureError, ask
from verl.utils.reward_score.tinyv import TinyVOptions, build_messages
from verlkit.clients.llm import get_client
from verlkit.clients.structured import StructuredOutput, generated_tokens

pytestmark = pytest.mark.integration

CRITERIA = "4 points: sets up 3 * 4. 6 points: final answer 12."


def info(i: int) -> dict:
    return {"question": f"Problem {i}: what is 3 * 4?", "criteria": CRITERIA}


def tinyv_options(server, **kw) -> dict:
    return {"model": server.model_name, "url": server.base_url, "max_retries": 1, "timeout_s": 120,
            "setup": "tinyv_only", **kw}


def score(rows, data_source="polaris_tinyv", **namespaces):
    async def run():
        return await asyncio.gather(*(registry.compute_score_async(data_source, solution, gt, extra, **namespaces)
                                      for solution, gt, extra in rows))

    return asyncio.run(run())


def test_a_template_file_with_other_wording_is_what_the_reward_sends(vllm_server, tmp_path):
    path = tmp_path / "published_verifier.yaml"
    path.write_text(
        "description: a verifier trained on another prompt\n"
        "defaults: {verdict: binary}\n"
        "messages:\n"
        "  - role: system\n    content: You check answers to math questions.\n"
        "  - role: user\n    content: |-\n"
        "      Question: {question}\n      Reference: {reference_answer}\n      Candidate: {extracted_answer}\n"
        "      Is the candidate correct? Answer True or False.\n")
    options = tinyv_options(vllm_server, template_file=str(path))
    registry.check_options({"tinyv": options})  # the recipes' start-up check
    (out,) = score([("so \\boxed{13}", "12", info(1))], tinyv=options)
    assert out["verifier_ok"] == 1.0 and out["reward_error"] == 0.0
    expected = [{"role": "system", "content": "You check answers to math questions."},
                {"role": "user", "content": "Question: Problem 1: what is 3 * 4?\nReference: 12\nCandidate: 13\n"
                                            "Is the candidate correct? Answer True or False."}]
    opts = parse_options(TinyVOptions, options)
    again = asyncio.run(get_client(opts.client_config()).chat(expected, max_tokens=8, temperature=0.0))
    assert again.ok and again.cache_hit  # the reward sent exactly these messages


def test_constrained_rewards_parse_every_reply(vllm_server):
    rows = [(f"Step 1.\nSo \\boxed{{{10 + i}}}", "12", info(10 + i)) for i in range(3)]
    binary = score(rows, tinyv=tinyv_options(vllm_server, constrained="true"))
    rubric = score(rows, tinyv=tinyv_options(vllm_server, template="rubric", constrained="true", reasoning_chars=40))
    for out in binary + rubric:
        assert out["verifier_ok"] == 1.0 and out["parse_ok"] == 1.0, out
    assert {out["score"] for out in binary} <= {0.0, 1.0}
    assert all(0.0 <= out["score"] <= 1.0 for out in rubric)


def test_constrained_downstream_answers_parse(vllm_server):
    extra = {"question": "Which organ makes insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"]}
    cgp = {"url": vllm_server.base_url, "model": vllm_server.model_name, "constrained": "true", "reasoning_chars": 40,
           "timeout_s": 120}
    results = score([(f"Hint {i}: think of islet cells.", "2", extra) for i in range(3)], data_source="medmcqa_cgp",
                    cgp=cgp)
    for out in results:
        assert out["downstream_ok"] == 1.0 and out["parse_ok"] == 1.0 and 0.0 <= out["confidence"] <= 1.0, out


def test_probe_passes_on_vllm_and_a_refused_constraint_is_classified(vllm_server):
    registry.check_options({
        "tinyv": tinyv_options(vllm_server, constrained="true", verdict_mode="prob"),
        "cgp": {"url": vllm_server.base_url, "model": vllm_server.model_name, "constrained": "true"},
    }, probe=True)
    # a look-behind: Python's re accepts it, the server's grammar engine refuses it (HTTP 400)
    refused = StructuredOutput(regex="(?<=a)b", max_tokens=4)
    client = get_client(parse_options(TinyVOptions, tinyv_options(vllm_server)).client_config())
    with pytest.raises(ServerFeatureError, match=r"refuses the structured-output constraint: HTTP 400.*look-around"):
        asyncio.run(ask(client, [{"role": "user", "content": "hi"}], constraint=refused, reward="tinyv",
                        max_tokens=4, temperature=0.0))


def _by_hand_p_true(top: list[dict]) -> tuple[float, float]:
    """(P(True) normalised over the two words, the two words' share of the position's mass) from a
    position's top_logprobs: a token counts for a word when its text is a non-empty prefix of it."""
    mass = {"True": 0.0, "False": 0.0}
    for alt in top:
        text = bytes(alt["bytes"]).decode("utf-8", "replace").strip()
        for word in mass:
            if text and word.startswith(text):
                mass[word] += math.exp(alt["logprob"])
    both = mass["True"] + mass["False"]
    return mass["True"] / both, both


@pytest.mark.parametrize("think", [False, True], ids=["chat", "think"])
def test_p_true_is_read_at_the_verdict_token(vllm_server, think):
    options = tinyv_options(vllm_server, constrained="true", verdict_mode="prob", is_think_model=think,
                            **({"reasoning_chars": 24} if think else {}))
    solution, gt, extra = "so \\boxed{13}", "12", info(20 + think)
    (out,) = score([(solution, gt, extra)], tinyv=options)
    assert out["verifier_ok"] == 1.0 and out["parse_ok"] == 1.0 and out["verdict_prob_ok"] == 1.0
    # the same request again (a cache hit: the reply the reward read), then the position found by hand
    opts = parse_options(TinyVOptions, options)
    messages = build_messages(opts, solution, gt, extra, "13")
    again = asyncio.run(ask(get_client(opts.client_config()), messages, constraint=opts.constraint, top_logprobs=20,
                            reward="tinyv", max_tokens=8, temperature=0.0))
    assert again.cache_hit
    content = again.raw["choices"][0]["logprobs"]["content"]
    texts = [bytes(entry["bytes"]).decode("utf-8", "replace") for entry in content]
    if think:
        assert again.text.startswith("<think>") or "</think>\n" in again.text
        ends = [i for i in range(len(texts)) if "".join(texts[: i + 1]).endswith("</think>\n")]
        position = ends[-1] + 1  # the first token after the last "</think>\n"
    else:
        position = 0  # a choice constraint: the reply is the verdict
    p_true, share = _by_hand_p_true(content[position]["top_logprobs"])
    assert share == pytest.approx(1.0, abs=1e-3)  # the constraint leaves only verdict tokens at that position
    assert out["score"] == pytest.approx(p_true, abs=1e-6)
    assert out["acc"] == float(p_true >= 0.5)
    assert generated_tokens(again.raw) is not None


def test_expected_score_of_a_constrained_rubric_reply(vllm_server):
    options = tinyv_options(vllm_server, template="rubric", constrained="true", reasoning_chars=20,
                            verdict_mode="prob")
    (out,) = score([("Step 1.\nSo \\boxed{12}", "12", info(30))], tinyv=options)
    assert out["parse_ok"] == 1.0 and out["verdict_prob_ok"] == 1.0 and 0.0 <= out["score"] <= 1.0


def test_robustness_probe_command(vllm_server, tmp_path):
    from verlkit.evaluation import probe

    rc = probe.main(["--url", vllm_server.base_url, "--model", vllm_server.model_name, "--constrained", "true",
                     "--timeout-s", "300", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "probe.json").read_text())
    assert rc == 0
    rows = {row["pattern"]: row for row in report["patterns"]}
    assert list(rows) == [p.name for p in probe.PATTERNS]
    for row in rows.values():
        assert row["n"] == 8 and row["answered"] + row["request_failures"] == 8
        assert row["parse_failures"] == 0  # constrained: every answered reply is a verdict
    assert report["evaluation"]["n_pairs"] == 16 and report["settings"]["constrained"] is True
    cases = [json.loads(line) for line in (tmp_path / "cases.jsonl").read_text().splitlines()]
    assert len(cases) == 8 * len(probe.PATTERNS)
    assert max(c["response_chars"] for c in cases if c["pattern"] == "spam") == probe.SPAM_CHARS


def test_served_llm_judge_with_a_template_and_a_constraint(vllm_server, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    prompts = tmp_path / "prompts.parquet"
    pd.DataFrame([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "prompt_id": f"p{i}"}
                  for i in range(3)]).to_parquet(prompts)
    judge = tmp_path / "judge.yaml"
    judge.write_text("defaults: {verdict: total_score, score_max: 10}\nmessages:\n  - role: user\n    content: |-\n"
                     "      Rate the reply to the prompt out of 10.\n      Prompt: {question}\n      Reply: {response}\n"
                     "      End with: Total Score: <n>/10\n")
    url, name = vllm_server.base_url, vllm_server.model_name
    done = subprocess.run([
        sys.executable, "-m", "verlkit.evaluation.winrate", "--prompts", str(prompts), "--out", str(tmp_path / "eval"),
        "--model-url", url, "--model-name", name, "--reference-url", url, "--reference-name", name,
        "--judge-url", url, "--judge-model", name, "--judge-template-file", str(judge), "--judge-constrained", "true",
        "--judge-reasoning-chars", "40",
        "--max-tokens", "8", "--temperature", "0", "--timeout-s", "300",
    ], cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "eval" / "winrate.json").read_text())
    assert summary["n_compared"] == 3 and summary["scoring_failures"] == 0
    assert summary["settings"]["reward_model"]["verdict"] == "total_score"
