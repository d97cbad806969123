"""ServerSpec: validation, the names it derives, and where an external server's URL comes from."""

import pytest

from verlkit.serving import ServerSpec
from verlkit.serving.spec import external_url_env_var, external_url_for


def test_reward_models_are_served_for_classification_only():
    with pytest.raises(ValueError, match="generation only"):
        ServerSpec(model="/m", task="classify", enable_lora=True)
    with pytest.raises(ValueError, match="task"):
        ServerSpec(model="/m", task="embed")
    assert ServerSpec(model="/m", task="classify").task == "classify"


def test_role_and_client_model_name_precedence():
    assert ServerSpec(model="/models/qwen", name="judge", served_model_name="q").role == "judge"
    assert ServerSpec(model="/models/qwen", name="judge", served_model_name="q").api_model_name == "q"
    assert ServerSpec(model="/models/qwen", name="judge").api_model_name == "judge"
    assert ServerSpec(model="/models/qwen", served_model_name="q").role == "q"
    assert ServerSpec(model="/models/qwen").role == "qwen"
    assert ServerSpec(model="/models/qwen").api_model_name == "qwen"


def test_files_live_in_the_run_dir_under_the_role(tmp_path):
    spec = ServerSpec(model="/m", name="verifier", run_dir=tmp_path / "run")
    assert spec.log_path == tmp_path / "run" / "verifier.vllm.log"
    assert spec.state_path == tmp_path / "run" / "verifier.server.json"


def test_relative_run_dirs_resolve_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ServerSpec(model="/m", name="judge", run_dir="out").state_path == tmp_path / "out" / "judge.server.json"


def test_run_dir_default_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("VERLKIT_RUN_DIR", str(tmp_path / "runs"))
    assert ServerSpec(model="/m", name="t").log_path == tmp_path / "runs" / "t.vllm.log"


def test_external_url_env_var_names():
    assert external_url_env_var("judge") == "VERLKIT_JUDGE_URL"
    assert external_url_env_var("tiny-verifier") == "VERLKIT_TINY_VERIFIER_URL"
    assert external_url_env_var("a.b c") == "VERLKIT_A_B_C_URL"


def test_external_url_precedence(monkeypatch):
    for key in ("VERLKIT_JUDGE_URL", "VERLKIT_EXTERNAL_URL"):
        monkeypatch.delenv(key, raising=False)
    spec = ServerSpec(model="/m", name="judge")
    assert external_url_for(spec) is None
    monkeypatch.setenv("VERLKIT_EXTERNAL_URL", "http://any:1")
    assert external_url_for(spec) == "http://any:1"
    monkeypatch.setenv("VERLKIT_JUDGE_URL", "http://judge:2")
    assert external_url_for(spec) == "http://judge:2"
    assert external_url_for(ServerSpec(model="/m", name="judge", external_url="http://given:3")) == "http://given:3"
    monkeypatch.setenv("VERLKIT_JUDGE_URL", "")
    assert external_url_for(spec) == "http://any:1"  # an empty variable counts as unset
