"""``bash run_c3po.sh`` (and, in the slow tier, ``bash run_c3po.sh "" concise "" bon``) on the CPU default, end to end: the student (tiny model) and the
teacher (SmolLM2-135M-Instruct) served by the CPU build of vLLM, ONE sampling for the first two bundled
feedbacks (one qualitative, one quantitative; the second by the second-feedback argument), one LCDPO
LoRA training per feedback plus one on their combined data with verl's engine, each adapter loaded into
the running student server, the evaluation JSON and plots, and the comparison table of single vs
combined adapters."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
from support.recipe_runs import RecipeRun

pytestmark = [pytest.mark.integration, pytest.mark.own_vllm_server]

FEEDBACKS = ("concise-boss-emails", "bon-appetit-recipes")
SETS = ("in_scope", "near_scope", "out_of_scope")


# The default suite runs the CPU default (two feedbacks, one adapter each); the second-feedback run adds an
# adapter trained on the combined data and its evaluations (about 5 more minutes on 2 cores): slow tier.
@pytest.mark.parametrize("arguments, combined", [
    pytest.param((), False, id="default"),
    pytest.param(("", "concise", "", "bon"), True, id="second-feedback", marks=pytest.mark.slow),
])
def test_cpu_default_samples_trains_and_evaluates(tmp_path, arguments, combined):
    run = RecipeRun("run_c3po.sh", tmp_path / "run", *arguments)
    rc = run.wait(timeout=2400)
    out = run.output()
    assert rc == 0, out[-6000:]
    root = run.run_dir

    for slug in FEEDBACKS:
        # sampling: every set has train rows, and the report says what happened
        report = json.loads((root / "sample" / slug / "report.json").read_text())
        assert report["ok"] and report["counts"]["in_scope"]["train"] >= 1
        assert (root / "sample" / slug / "requests.jsonl").stat().st_size > 0

        # training: LCDPO from the base model; the adapter starts at zero, so step 1's DPO term is ln 2
        steps = {int(k): v for k, v in json.loads((root / "train" / slug / "metrics.json").read_text()).items()}
        assert steps[1]["pref/dpo"] == pytest.approx(math.log(2), abs=1e-4)
        assert steps[1]["pref/n_dpo"] >= 1 and "pref/soft_kd" in steps[1]
        adapter = json.loads((root / "train" / slug / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == 64 and adapter["lora_alpha"] == 128
        assert f"adapter {root / 'train' / slug / 'adapter'} loaded" in out

        # evaluation: the trained adapter against the regenerated baseline on all three test sets
        result = json.loads((root / "eval" / slug / "trained.json").read_text())
        assert result["method"] == "trained" and result["baseline"] == "regenerate"
        assert set(result["sets"]) == set(SETS)
        for name in SETS:
            summary = result["sets"][name]["summary"]
            assert summary["n_judged"] + summary["failures"] == summary["n_prompts"]
            if summary["n_judged"]:
                rates = summary["applied_rate"] + summary["tie_rate"] + summary["worse_rate"]
                assert rates == pytest.approx(1.0)
            # issue 18: a scope of nothing but ties says what the ties are made of, here and in the report
            if summary["tie_rate"] == 1.0:
                assert sum(summary["tie_reasons"].values()) == summary["n_judged"]
                assert f"{slug} [trained] {name}: all {summary['n_judged']} judged prompts are ties (" in out
        assert result["adherence"] == result["sets"]["in_scope"]["summary"]["applied_rate"]
        assert (root / "eval" / slug / "trained.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    models = {(r["feedback"], r["model"]) for r in json.loads((root / "comparison.json").read_text())}
    assert (root / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.count("sampling: python -m verlkit.c3po.sample") == 1  # one sampling for every adapter
    if combined:
        # the second feedback: one adapter trained on both feedbacks' rows, evaluated on each feedback
        combined_dir = root / "train" / "+".join(FEEDBACKS)
        rows = pq.read_table(combined_dir / "train.parquet", columns=["feedback_id", "kind"]).to_pylist()
        assert len({r["feedback_id"] for r in rows}) == 2
        assert {r["kind"] for r in rows} >= {"pair", "near_scope", "out_of_scope"}
        single_rows = sum(pq.read_metadata(root / "train" / slug / "train.parquet").num_rows
                          for slug in FEEDBACKS)
        assert len(rows) == single_rows  # the combined data is exactly the two feedbacks' data
        assert f"adapter {combined_dir / 'adapter'} loaded" in out
        for slug in FEEDBACKS:
            result = json.loads((root / "eval" / slug / "combined.json").read_text())
            assert result["label"] == "combined" and result["model_name"] == "c3po-" + "+".join(FEEDBACKS)
            assert set(result["sets"]) == set(SETS)
        table = (root / "comparison.md").read_text()
        assert models == {(slug, model) for slug in FEEDBACKS for model in ("trained", "combined")}
        assert "combined" in table
    else:
        assert models == {(slug, "trained") for slug in FEEDBACKS}

    qualitative = json.loads((root / "eval" / "concise-boss-emails" / "trained.json").read_text())
    judged = [r for r in qualitative["sets"]["in_scope"]["records"] if r["outcome"] is not None]
    assert judged and all(1 <= r["score_forward"] <= 5 and 1 <= r["score_swapped"] <= 5 for r in judged)
    quantitative = json.loads((root / "eval" / "bon-appetit-recipes" / "trained.json").read_text())
    assert all("baseline_metric" in r for r in quantitative["sets"]["in_scope"]["records"] if r["outcome"])
    assert "adherence" in out and "concise-boss-emails" in out  # the report table
    run.assert_nothing_left(("student", "teacher"))
