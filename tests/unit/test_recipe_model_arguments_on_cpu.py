"""Every recipe resolves its model arguments (local directories or Hugging Face Hub ids) before it starts a
server or a trainer: offline and not cached, the run stops naming the setting, the model and its role
(issue 12, point 2). run_rubric.sh's own case, with the composed server spec, is in
test_rubric_recipe_on_cpu.py."""

import contextlib

import pytest
from support.hub_cache import fake_hub_cache

from recipes.c3po import run as c3po
from recipes.confidence import run as confidence
from recipes.driver import RecipeError, Run
from recipes.pipeline import run as pipeline
from recipes.rubric import train_rrm


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache, offline; the CPU profile without touching this process's environment; any server
    or trainer start fails the test."""
    import recipes.settings

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VK_PROFILE", "cpu")
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(recipes.settings, "cpu_profile_environment", lambda: None)

    def started(*args, **kwargs):
        raise AssertionError("a server, trainer or process was started")

    for method in ("serve", "serve_together", "train", "run_process"):
        monkeypatch.setattr(Run, method, started)
    return tmp_path / "hf" / "hub"


def stops_naming(run, argv, environ, monkeypatch, message):
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with contextlib.ExitStack() as stack, pytest.raises(RecipeError) as e:
        run(stack, argv)
    assert message in str(e.value) and "HF_HUB_OFFLINE is set" in str(e.value)
    assert e.value.code == 2


def test_confidence_resolves_policy_then_downstream(offline_hub, monkeypatch):
    argv = ["Qwen/Qwen2-0.5B-Instruct", "cgp", "meta-llama/Llama-3.1-8B-Instruct"]
    stops_naming(confidence.body, argv, {}, monkeypatch,
                 "recipe.policy: model 'Qwen/Qwen2-0.5B-Instruct' (policy) could not be resolved")
    fake_hub_cache(offline_hub, "Qwen/Qwen2-0.5B-Instruct")
    stops_naming(confidence.body, argv, {}, monkeypatch,
                 "recipe.downstream.model: model 'meta-llama/Llama-3.1-8B-Instruct' (downstream) could not be resolved")


def test_c3po_resolves_student_and_teacher(offline_hub, monkeypatch):
    fake_hub_cache(offline_hub, "org/student")
    stops_naming(c3po.body, ["org/student"], {"TEACHER": "org/teacher-70b"}, monkeypatch,
                 "recipe.teacher.model: model 'org/teacher-70b' (teacher) could not be resolved")


def test_pipeline_resolves_base_and_reference(offline_hub, monkeypatch):
    def run(stack, argv):
        return pipeline.Pipeline(stack, argv)

    stops_naming(run, ["HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B-Instruct"], {}, monkeypatch,
                 "recipe.base: model 'HuggingFaceTB/SmolLM2-135M' (base) could not be resolved")
    fake_hub_cache(offline_hub, "HuggingFaceTB/SmolLM2-135M")
    stops_naming(run, ["HuggingFaceTB/SmolLM2-135M", "Qwen/Qwen2.5-0.5B-Instruct"], {}, monkeypatch,
                 "recipe.reference: model 'Qwen/Qwen2.5-0.5B-Instruct' (reference) could not be resolved")


def test_rrm_training_resolves_its_sft_model(offline_hub, monkeypatch):
    stops_naming(train_rrm.body, ["org/rrm-sft"], {}, monkeypatch,
                 "recipe.policy: model 'org/rrm-sft' (the RRM's SFT model) could not be resolved")
