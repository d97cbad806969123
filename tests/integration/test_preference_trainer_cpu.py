"""The preference trainer (``torchrun -m verlkit.preference.train``) on the CPU profile.

Real torchrun/gloo/FSDP2 engine, real parquet, the tiny local Qwen2. One LCDPO data file (pairs plus
near- and out-of-scope constraint rows); every step sees the whole file (batch = 16 rows), so the
engine-computed terms can be checked against a plain transformers forward of the initial model:

* step 1: the DPO term is ln 2 (policy = reference), and the constraint terms are the NLL of the
  baseline completions (λ = 0);
* 1 and 2 processes give the same losses for 3 steps (global-batch normalisation is right);
* resuming from the step-2 checkpoint reproduces step 3 (the reference is the initial model,
  not the resumed one).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support.torchrun import run_torchrun

from verlkit.runs.summary import parse_step_metrics as parse_metrics

pytestmark = pytest.mark.integration

MODULE = "verlkit.preference.train"
LN2 = math.log(2.0)


def write_preference_parquet(path: Path) -> Path:
    user = lambda text: [{"role": "user", "content": text}]
    rows = []
    for i in range(8):
        rows.append(
            {
                "kind": "pair",
                "prompt": user(f"What is {i} + {i}? Answer with ####."),
                "chosen": f"{i} + {i} = {2 * i}. The answer is #### {2 * i}",
                "rejected": f"I think it is {2 * i + 1}.",
                "response": None,
            }
        )
    for i in range(4):
        rows.append(
            {
                "kind": "near_scope",
                "prompt": user(f"What is {i} * 3?"),
                "chosen": None,
                "rejected": None,
                "response": f"So the final answer is \\boxed{{{3 * i}}}.",
            }
        )
        rows.append(
            {
                "kind": "out_of_scope",
                "prompt": user(f"How many clips did Natalia sell in {i + 1} days?"),
                "chosen": None,
                "rejected": None,
                "response": f"She sold {48 * (i + 1)} clips altogether.",
            }
        )
    pd.DataFrame(rows).to_parquet(path)
    return path


def overrides(model_dir: Path, train: Path, ckpt: Path, n_procs: int, steps: int, save_freq: int) -> list[str]:
    from verlkit.cpu_profile.overrides import sft

    return sft(n_procs) + [
        f"model.path={model_dir}",
        f"data.train_files={train}",
        "data.train_batch_size=16",
        "data.max_length=128",
        "optim.lr=1e-3",
        f"trainer.total_training_steps={steps}",
        f"trainer.save_freq={save_freq}",
        f"trainer.default_local_dir={ckpt}",
        "trainer.logger=[console]",
        "trainer.resume_mode=auto",
        "preference.loss=lcdpo",
    ]


@pytest.fixture(scope="module")
def runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("preference_cpu")
    train = write_preference_parquet(work / "prefs.parquet")
    two = run_torchrun(
        MODULE, 2, overrides(tiny_model_dir, train, work / "ckpt2", 2, 3, 2), work / "two.log"
    )
    one = run_torchrun(
        MODULE, 1, overrides(tiny_model_dir, train, work / "ckpt1", 1, 3, -1), work / "one.log"
    )
    return {"work": work, "train": train, "two": parse_metrics(two), "one": parse_metrics(one)}


def hf_reply_nll(model_dir: Path, train: Path, kind: str) -> float:
    """Mean over rows of ``kind`` of the token-mean NLL of the reply, by a plain HF forward."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verlkit.preference.data import PreferenceDataset

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32, attn_implementation="sdpa").eval()
    ds = PreferenceDataset(str(train), tokenizer, {"max_length": 128}, kinds=[kind])
    values = []
    for item in ds.items:
        seq = item["sequences"][0]
        ids = torch.tensor([seq["input_ids"]])
        mask = torch.tensor(seq["loss_mask"][1:], dtype=torch.float32)
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        token_logp = logp.gather(-1, ids[0, 1:, None])[:, 0]
        values.append(float(-(token_logp * mask).sum() / mask.sum()))
    return sum(values) / len(values)


def test_first_step_dpo_is_ln2_and_constraints_are_baseline_nll(runs, tiny_model_dir: Path):
    for name in ("one", "two"):
        step1 = runs[name][1]
        assert step1["pref/dpo"] == pytest.approx(LN2, abs=1e-5), name
        assert step1["pref/n_dpo"] == 8 and step1["pref/n_soft_nll"] == 4 and step1["pref/n_hard_nll"] == 4
    step1 = runs["two"][1]
    soft = hf_reply_nll(tiny_model_dir, runs["train"], "out_of_scope")
    hard = hf_reply_nll(tiny_model_dir, runs["train"], "near_scope")
    assert step1["pref/soft_kd"] == pytest.approx(soft, rel=1e-5)
    assert step1["pref/hard_kd"] == pytest.approx(hard, rel=1e-5)
    assert step1["train/loss"] == pytest.approx(LN2 + 0.2 * soft + 0.1 * hard, rel=1e-5)
    # Training moves the policy away from the reference in the preferred direction.
    assert runs["two"][3]["pref/dpo"] < LN2
    assert runs["two"][3]["pref/margin"] > 0


def test_the_composed_config_is_saved_next_to_the_checkpoints(runs):
    """hydra's record of the run (preference_trainer.yaml sets hydra.run.dir to the checkpoint root)."""
    saved = yaml.safe_load((runs["work"] / "ckpt2" / ".hydra" / "config.yaml").read_text())
    assert saved["preference"]["loss"] == "lcdpo" and saved["data"]["train_batch_size"] == 16
    assert "preference.loss=lcdpo" in yaml.safe_load((runs["work"] / "ckpt2" / ".hydra" / "overrides.yaml").read_text())


def test_one_and_two_processes_give_the_same_losses(runs):
    assert sorted(runs["one"]) == sorted(runs["two"]) == [1, 2, 3]
    for step in (1, 2, 3):
        for key in ("train/loss", "pref/dpo", "pref/soft_kd", "pref/hard_kd"):
            assert runs["two"][step][key] == pytest.approx(runs["one"][step][key], rel=1e-5, abs=1e-7), (step, key)


def test_resume_reproduces_the_uninterrupted_run(runs, tiny_model_dir: Path):
    work = runs["work"]
    ckpt = work / "ckpt_resume"
    shutil.copytree(work / "ckpt2" / "global_step_2", ckpt / "global_step_2")
    (ckpt / "latest_checkpointed_iteration.txt").write_text("2")
    text = run_torchrun(
        MODULE,
        2,
        overrides(tiny_model_dir, runs["train"], ckpt, 2, 3, 2),
        work / "resume.log",
    )
    resumed = parse_metrics(text)
    assert sorted(resumed) == [3]
    for key in ("train/loss", "pref/dpo", "pref/soft_kd"):
        assert resumed[3][key] == pytest.approx(runs["two"][3][key], rel=1e-5, abs=1e-7), key


def test_kl_term_is_zero_at_the_reference_and_grows_after_updates(runs, tiny_model_dir: Path):
    """λ > 0: the reference's top-k come from the same engine; at step 1 KL = 0, so
    L_KD = (1-λ)·NLL; after an update the KL part is positive."""
    work = runs["work"]
    lam, temp = 0.5, 2.0
    args = overrides(tiny_model_dir, runs["train"], work / "ckpt_kl", 2, 2, -1) + [
        f"preference.kd_lambda={lam}",
        f"preference.kd_temperature={temp}",
        "preference.kd_topk=8",
    ]
    metrics = parse_metrics(run_torchrun(MODULE, 2, args, work / "kl.log"))
    assert sorted(metrics) == [1, 2]
    for term in ("soft", "hard"):
        assert metrics[1][f"pref/{term}_kd"] == pytest.approx((1 - lam) * metrics[1][f"pref/{term}_nll"], rel=1e-5)
        assert metrics[2][f"pref/{term}_kd"] > (1 - lam) * metrics[2][f"pref/{term}_nll"] + 1e-6
    assert metrics[1]["pref/dpo"] == pytest.approx(LN2, abs=1e-5)


@pytest.mark.slow
def test_lora_adapter_trains_on_cpu(runs, tiny_model_dir: Path):
    """verl's model.lora_rank/lora_alpha: the adapter starts at B = 0, so step 1 is still ln 2."""
    import json

    work = runs["work"]
    ckpt = work / "ckpt_lora"
    args = overrides(tiny_model_dir, runs["train"], ckpt, 1, 2, -1) + [
        "model.lora_rank=4",
        "model.lora_alpha=8",
        "optim.lr=1e-2",
    ]
    text = run_torchrun(MODULE, 1, args, work / "lora.log")
    assert "PeftModelForCausalLM" in text
    metrics = parse_metrics(text)
    assert metrics[1]["pref/dpo"] == pytest.approx(LN2, abs=1e-5)
    assert metrics[2]["pref/dpo"] < LN2
    meta = json.loads((ckpt / "global_step_2" / "lora_train_meta.json").read_text())
    assert meta["r"] == 4 and meta["lora_alpha"] == 8
